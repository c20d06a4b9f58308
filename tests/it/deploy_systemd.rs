//! The daemon under systemd's notification protocol, with the test as the service manager:
//! `READY=1`, `WATCHDOG=1` from the decision loop (stops when the process is stopped,
//! resumes when it continues) and `STOPPING=1`.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Proc, binary};

/// Datagrams received within `window`, as text.
fn receive_for(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return received;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buffer) {
            Ok(n) => received.push(String::from_utf8_lossy(&buffer[..n]).into_owned()),
            Err(_) => return received,
        }
    }
}

/// Waits for a datagram containing `needle`; returns everything received up to it.
fn wait_for(socket: &UnixDatagram, needle: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let batch = receive_for(socket, Duration::from_millis(50));
        let found = batch.iter().any(|d| d.lines().any(|l| l == needle));
        seen.extend(batch);
        if found {
            return seen;
        }
    }
    panic!("no {needle} within {timeout:?}; received: {seen:?}");
}

fn pings(datagrams: &[String]) -> usize {
    datagrams
        .iter()
        .flat_map(|d| d.lines())
        .filter(|l| *l == "WATCHDOG=1")
        .count()
}

#[test]
fn daemon_notifies_ready_and_watchdog_from_its_loop_and_pings_stop_while_it_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // No autopilot: READY means the link is open (bound), not that an autopilot was heard.
    let config = dir.path().join("daemon.toml");
    std::fs::write(&config, "[vehicle]\nlink = \"udpin:127.0.0.1:0\"\n").unwrap();
    let mut command = Command::new(binary());
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &socket_path)
        // WatchdogSec=0.4: a ping every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID");
    let mut daemon = Proc::spawn("daemon", command);

    let first = wait_for(&socket, "READY=1", Duration::from_secs(10));
    let ready = first.iter().find(|d| d.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=autopilot link udpin:"), "{ready}");

    let running = receive_for(&socket, Duration::from_millis(1500));
    let n = pings(&running);
    // 1.5 s at one ping per 200 ms: about 7; the bounds only say "periodic" and "not a flood".
    assert!((4..=12).contains(&n), "{n} pings in 1.5 s: {running:?}");

    daemon.signal("STOP");
    // A datagram already in flight when the signal lands may still arrive: let it drain.
    let _ = receive_for(&socket, Duration::from_millis(100));
    let stopped = receive_for(&socket, Duration::from_millis(1200));
    assert_eq!(pings(&stopped), 0, "pings while stopped: {stopped:?}");

    daemon.signal("CONT");
    wait_for(&socket, "WATCHDOG=1", Duration::from_secs(2));
    let resumed = receive_for(&socket, Duration::from_millis(1000));
    assert!(pings(&resumed) >= 2, "pings after SIGCONT: {resumed:?}");

    daemon.signal("TERM");
    wait_for(&socket, "STOPPING=1", Duration::from_secs(2));
    assert_eq!(daemon.wait_exit(Duration::from_secs(3)), Some(0));
    let output = daemon.output();
    assert!(
        output.contains("systemd watchdog: WATCHDOG=1 every 200 ms"),
        "{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
}

#[test]
fn unit_passes_systemd_analyze_verify_and_its_exposure_stays_low() {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v systemd-analyze"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: run `bash tests/setup` (it installs Debian's systemd package)"
    );
    let output = Command::new("bash")
        .arg(crate::support::repo_root().join("systemd/verify.sh"))
        .arg(binary())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("systemd-analyze verify: ok"), "{stdout}");
    // "→ Overall exposure level for flight-companion.service: 1.5 OK 🙂"
    let score: f64 = stdout
        .split("flight-companion.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in {stdout}"));
    assert!(score <= 2.0, "exposure {score} (was 1.5): {stdout}");
}
