//! Shared test support: the daemon binary, child processes that die with the test,
//! free loopback ports, the pinned Python venv of interop peers.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub mod broker;

/// The `flight-companion` binary built by this `cargo test` run.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flight-companion"))
}

/// The ground station's `flight-companion-ground` binary built by this `cargo test` run.
pub fn ground_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flight-companion-ground"))
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
    flight_companion_testkit::free_port().unwrap()
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
/// collected line by line so a test can wait for a line and print everything on failure:
/// the test kit's blocking [`flight_companion_testkit::Proc`] (its fields and `output()`
/// through `Deref`), with the child's own runtime and state directories, and waits that
/// fail the test.
pub struct Proc {
    proc: flight_companion_testkit::Proc,
    /// The process's own `$STATE_DIRECTORY` (the audit log's default home), removed with it.
    pub state: Option<tempfile::TempDir>,
    /// The child's own `$XDG_RUNTIME_DIR` (unless the test set one): a daemon's default
    /// e-stop socket goes there, so daemons of parallel tests never meet on one path.
    _runtime_dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Proc {
    type Target = flight_companion_testkit::Proc;
    fn deref(&self) -> &Self::Target {
        &self.proc
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.proc
    }
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
        let proc = flight_companion_testkit::Proc::spawn(name, None, command)
            .unwrap_or_else(|e| panic!("{e:#}"));
        Proc {
            proc,
            state: None,
            _runtime_dir: runtime_dir,
        }
    }

    /// Waits for a line containing `needle`; panics with the last lines on timeout.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        self.proc
            .wait_for_line(needle, timeout)
            .unwrap_or_else(|e| panic!("{e:#}"))
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
        self.proc
            .wait_exit(timeout)
            .unwrap_or_else(|e| panic!("{e:#}"))
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
