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
        .env("STATE_DIRECTORY", dir.path().join("state"))
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

/// A unit directive's values (`Key=value` lines).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// Issue 15: the packaged configuration passes `check-config` as it is, and, installed as the
/// README says (the unit's StateDirectory= and LoadCredential=, the key the package's postinst
/// makes), the daemon writes an audit log into the state directory with signed checkpoints.
/// Paths the test cannot use on this machine are redirected: the Pi's UART becomes a UDP
/// socket, the metrics port an ephemeral one, and /var/lib, /run and /etc temporary
/// directories, passed the way systemd passes them.
#[test]
fn the_packaged_configuration_checks_and_writes_a_signed_audit_log_when_installed() {
    let root = crate::support::repo_root();
    let packaged = root.join("config/flight-companion.toml");
    let check = Command::new(binary())
        .args(["check-config", packaged.to_str().unwrap()])
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // What the unit and the postinst say, so the test installs it the same way.
    let unit = std::fs::read_to_string(root.join("systemd/flight-companion.service")).unwrap();
    assert_eq!(unit_values(&unit, "StateDirectory"), ["flight-companion"]);
    let credential = unit_values(&unit, "LoadCredential")
        .into_iter()
        .find(|v| v.starts_with("audit-signing-key.pem:"))
        .expect("the unit loads the audit signing key as a credential");
    let key_source = credential.split_once(':').unwrap().1.to_owned();
    let postinst = std::fs::read_to_string(root.join("systemd/debian/postinst")).unwrap();
    assert!(
        postinst.contains(&format!("audit keygen --out {key_source}")),
        "the postinst makes the key the unit loads: {postinst}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (etc, private, state, runtime, credentials) = (
        dir.path().join("etc"),
        dir.path().join("private"),
        dir.path().join("var-lib/flight-companion"),
        dir.path().join("run/flight-companion"),
        dir.path().join("credentials"),
    );
    for d in [&etc, &private, &state, &runtime, &credentials] {
        std::fs::create_dir_all(d).unwrap();
    }
    // postinst: the key, once.
    let key = private.join("audit-signing-key.pem");
    let keygen = Command::new(binary())
        .args(["audit", "keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    // systemd: the credential's private copy.
    std::fs::copy(&key, credentials.join("audit-signing-key.pem")).unwrap();
    let text = std::fs::read_to_string(&packaged).unwrap();
    assert!(text.contains("link = \"serial:/dev/ttyAMA0:921600\""));
    let installed = text
        .replace("serial:/dev/ttyAMA0:921600", "udpin:127.0.0.1:0")
        .replace("127.0.0.1:9464", "127.0.0.1:0");
    let config = etc.join("flight-companion.toml");
    std::fs::write(&config, &installed).unwrap();

    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut command = Command::new(binary());
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("STATE_DIRECTORY", &state)
        .env("RUNTIME_DIRECTORY", &runtime)
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env_remove("WATCHDOG_USEC");
    let mut daemon = Proc::spawn("daemon", command);
    wait_for(&socket, "READY=1", Duration::from_secs(10));
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)), Some(0));
    let output = daemon.output();

    let audit = state.join("audit");
    let files = flight_companion::audit::log::list_files(&audit).unwrap();
    assert_eq!(files.len(), 1, "{output}");
    // The key in use is the credential's, not one the daemon made for itself.
    assert!(!state.join("audit-signing-key.pem").exists(), "{output}");
    let vkey = Command::new(binary())
        .args([
            "audit",
            "vkey",
            "--config",
            config.to_str().unwrap(),
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(vkey.status.success(), "{vkey:?}");
    let vkey_file = dir.path().join("drone.vkey");
    std::fs::write(&vkey_file, &vkey.stdout).unwrap();
    let verify = Command::new(binary())
        .args(["audit", "verify", audit.to_str().unwrap(), "--checkpoint"])
        .arg(audit.join("checkpoint"))
        .arg("--key")
        .arg(&vkey_file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(
        verify.status.success() && said.contains("anchored"),
        "{said}\n{output}"
    );
    let records = flight_companion::audit::tail_command(&audit, usize::MAX, false).unwrap();
    let all = records.join("\n");
    let sha = {
        use sha2::Digest as _;
        flight_companion::audit::record::hex(&sha2::Sha256::digest(installed.as_bytes()))
    };
    for needle in [
        "START ".to_string(),
        format!("CONFIG {} sha256={sha}", config.display()),
        "STOP shutdown requested".to_string(),
    ] {
        assert!(all.contains(&needle), "{needle} not in:\n{all}");
    }
}
