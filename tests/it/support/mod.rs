//! Shared test support: the daemon binary, child processes that die with the test,
//! free loopback ports, the pinned Python venv of interop peers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod broker;

/// The `flight-companion` binary built by this `cargo test` run.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flight-companion"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the interop venv (`tests/setup` makes it). `FC_PYTHON` overrides it.
/// A missing venv is a failed test, never a skipped one: the peers are part of the suite.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FC_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the interop venv is missing at {}: run `bash tests/setup` first (it installs the pinned peers)",
        venv.display()
    );
    venv
}

/// A peer script under `tests/peers/`.
pub fn peer(name: &str) -> PathBuf {
    repo_root().join("tests/peers").join(name)
}

/// A free TCP port on loopback (bound, read, released; good enough for tests on one machine).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed when dropped, with its stderr (and stdout, unless taken)
/// collected line by line so a test can wait for a line and print everything on failure.
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Output streams collected, and how many of them reached their end (every line of a
    /// stream is in `lines` before it counts as ended).
    streams: usize,
    streams_ended: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    seen: Vec<String>,
    /// The process's own `$STATE_DIRECTORY` (the audit log's default home), removed with it.
    pub state: Option<tempfile::TempDir>,
    /// The child's own `$XDG_RUNTIME_DIR` (unless the test set one): a daemon's default
    /// e-stop socket goes there, so daemons of parallel tests never meet on one path.
    _runtime_dir: Option<tempfile::TempDir>,
}

impl Proc {
    /// Starts `command` with stdout and stderr piped into the line collector.
    pub fn spawn(name: &str, mut command: Command) -> Proc {
        command.stdin(Stdio::null());
        Proc::spawn_keeping_stdin(name, command)
    }

    /// Like [`Proc::spawn`], with stdin piped: write to `proc.child.stdin`.
    pub fn spawn_with_stdin(name: &str, mut command: Command) -> Proc {
        command.stdin(Stdio::piped());
        Proc::spawn_keeping_stdin(name, command)
    }

    fn spawn_keeping_stdin(name: &str, mut command: Command) -> Proc {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let runtime_dir = if command.get_envs().any(|(key, _)| key == "XDG_RUNTIME_DIR") {
            None
        } else {
            let dir = tempfile::Builder::new()
                .prefix("fc-run-")
                .tempdir()
                .expect("a runtime directory for the child");
            command.env("XDG_RUNTIME_DIR", dir.path());
            Some(dir)
        };
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        let streams_ended = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut streams = 0;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let ended = streams_ended.clone();
            streams += 1;
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        Proc {
            name: name.into(),
            child,
            lines: rx,
            streams,
            streams_ended,
            seen: Vec::new(),
            state: None,
            _runtime_dir: runtime_dir,
        }
    }

    /// Waits for a line containing `needle`; panics with everything seen on timeout.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {timeout:?}; output so far:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Everything printed so far (drains what is pending).
    pub fn output(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Sends a signal (e.g. `libc`-free: uses the `kill` command).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Waits for the process to exit within `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // A process that exits at once can be gone before its output was read: wait
                // (bounded: a grandchild may hold the pipes) until both streams ended, so
                // `output()` has everything it printed.
                let read_by = Instant::now() + Duration::from_secs(2);
                while self.streams_ended.load(std::sync::atomic::Ordering::SeqCst) < self.streams
                    && Instant::now() < read_by
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = self.output();
        panic!(
            "{} did not exit within {timeout:?}; output:\n{output}",
            self.name
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the daemon binary with arguments, collecting its output.
/// Each has its own `$STATE_DIRECTORY`, as systemd gives the service: a daemon whose
/// configuration names no `[audit] dir` keeps its audit log there, never beside another's.
pub fn flight_companion(name: &str, args: &[&str]) -> Proc {
    flight_companion_env(name, args, &[])
}

/// [`flight_companion`] with more environment variables (e.g. libfaketime's).
pub fn flight_companion_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("RUST_LOG", "info")
        .env("STATE_DIRECTORY", state.path())
        .envs(env.iter().copied());
    let mut proc = Proc::spawn(name, command);
    proc.state = Some(state);
    proc
}
