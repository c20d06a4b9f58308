//! systemd's notification protocol (`sd_notify`) and the service watchdog.
//!
//! Under `Type=notify` systemd passes `NOTIFY_SOCKET` (a Unix datagram socket) and, with
//! `WatchdogSec=`, `WATCHDOG_USEC`. The daemon writes `READY=1` once the configuration is
//! loaded and the autopilot link is *open* (bound or opened, not "autopilot heard": a
//! vehicle that is powered later must not hold the service in `activating` until
//! `TimeoutStartSec=` kills it), `WATCHDOG=1` from the decision loop, and `STOPPING=1` on
//! shutdown. The protocol is one datagram per message, so this is a few lines of std
//! rather than a dependency.
//!
//! [`Watchdog`] is the sans-IO part: when the next ping is due. The daemon's loop asks it
//! for `poll_timeout` (to wake up) and `poll_ping` (to send), so the pings stop as soon as
//! the loop stalls, exactly like the companion heartbeat to the autopilot.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The environment variables of the protocol, read once at start (systemd's protocol, not a
/// setting: the configuration file stays the only source of settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyEnv {
    /// `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
    pub socket: Option<String>,
    /// `WATCHDOG_USEC`: the service's `WatchdogSec=` in microseconds.
    pub watchdog_usec: Option<String>,
    /// `WATCHDOG_PID`: the process the watchdog is meant for (absent means us).
    pub watchdog_pid: Option<String>,
}

impl NotifyEnv {
    /// Reads the three variables of this process.
    pub fn from_process() -> NotifyEnv {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        NotifyEnv {
            socket: var("NOTIFY_SOCKET"),
            watchdog_usec: var("WATCHDOG_USEC"),
            watchdog_pid: var("WATCHDOG_PID"),
        }
    }

    /// The interval between `WATCHDOG=1` pings: half of `WatchdogSec=`, as `sd_watchdog_enabled(3)`
    /// recommends, so one late loop iteration is not a restart.
    /// `Ok(None)` when no watchdog is asked for, or it is meant for another process.
    pub fn watchdog_ping_interval(&self, my_pid: u32) -> Result<Option<Duration>, String> {
        let Some(usec) = &self.watchdog_usec else {
            return Ok(None);
        };
        if let Some(pid) = &self.watchdog_pid {
            match pid.trim().parse::<u32>() {
                Ok(pid) if pid == my_pid => {}
                Ok(_) => return Ok(None),
                Err(_) => return Err(format!("WATCHDOG_PID `{pid}` is not a process id")),
            }
        }
        match usec.trim().parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(usec) => Ok(Some(
                Duration::from_micros(usec / 2).max(Duration::from_millis(1)),
            )),
            Err(_) => Err(format!(
                "WATCHDOG_USEC `{usec}` is not a number of microseconds"
            )),
        }
    }
}

/// The protocol's messages the daemon sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// `READY=1`: start-up finished.
    Ready,
    /// `WATCHDOG=1`: the decision loop is alive.
    Watchdog,
    /// `STOPPING=1`: shutdown began.
    Stopping,
    /// `STATUS=...`: one line shown by `systemctl status`.
    Status(String),
}

impl State {
    fn encode(&self) -> String {
        match self {
            State::Ready => "READY=1".into(),
            State::Watchdog => "WATCHDOG=1".into(),
            State::Stopping => "STOPPING=1".into(),
            // A newline would start another assignment: keep the status on one line.
            State::Status(text) => format!("STATUS={}", text.replace(['\n', '\r'], " ")),
        }
    }
}

/// Writes notifications to `$NOTIFY_SOCKET`; a no-op outside systemd.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Datagrams that could not be sent (systemd gone, socket full): counted, never fatal.
    pub send_errors: u64,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`, or a silent one when it is unset.
    /// An unusable socket is an error the caller logs; the daemon runs on without it.
    pub fn new(socket: Option<&str>) -> Result<Notifier, String> {
        let Some(socket) = socket else {
            return Ok(Notifier::disabled());
        };
        let address = socket_address(socket)?;
        let local = UnixDatagram::unbound()
            .map_err(|e| format!("cannot create a datagram socket for NOTIFY_SOCKET: {e}"))?;
        // A full socket must never block the decision loop: drop the message instead.
        local
            .set_nonblocking(true)
            .map_err(|e| format!("cannot make the NOTIFY_SOCKET socket non-blocking: {e}"))?;
        Ok(Notifier {
            target: Some((local, address)),
            send_errors: 0,
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            send_errors: 0,
        }
    }

    /// True when running under a notify-aware service manager.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends the states in one datagram (newline-separated, as the protocol allows).
    /// Returns false when it could not be sent.
    pub fn notify(&mut self, states: &[State]) -> bool {
        let Some((socket, address)) = &self.target else {
            return true;
        };
        let text: Vec<String> = states.iter().map(State::encode).collect();
        match socket.send_to_addr(text.join("\n").as_bytes(), address) {
            Ok(_) => true,
            Err(_) => {
                self.send_errors += 1;
                false
            }
        }
    }
}

fn socket_address(socket: &str) -> Result<SocketAddr, String> {
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| format!("NOTIFY_SOCKET `{socket}` is not a usable abstract name: {e}"))
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket)
            .map_err(|e| format!("NOTIFY_SOCKET `{socket}` is not a usable path: {e}"))
    } else {
        Err(format!(
            "NOTIFY_SOCKET `{socket}` is neither an absolute path nor an @abstract name (vsock is not supported)"
        ))
    }
}

/// The daemon's notifier and watchdog from this process's environment. Problems with the
/// variables are logged and the daemon runs on without them: a service manager that cannot
/// be told is no reason to stay on the ground.
pub fn from_process(now: Instant) -> (Notifier, Watchdog) {
    let env = NotifyEnv::from_process();
    let notifier = Notifier::new(env.socket.as_deref()).unwrap_or_else(|error| {
        tracing::warn!("systemd notifications disabled: {error}");
        Notifier::disabled()
    });
    let interval = env
        .watchdog_ping_interval(std::process::id())
        .unwrap_or_else(|error| {
            tracing::warn!("systemd watchdog disabled: {error}");
            None
        });
    if let Some(interval) = interval {
        tracing::info!(
            "systemd watchdog: WATCHDOG=1 every {} ms from the decision loop",
            interval.as_millis()
        );
    }
    (notifier, Watchdog::new(interval, now))
}

pub use crate::watchdog::Watchdog;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(usec: Option<&str>, pid: Option<&str>) -> NotifyEnv {
        NotifyEnv {
            socket: None,
            watchdog_usec: usec.map(str::to_owned),
            watchdog_pid: pid.map(str::to_owned),
        }
    }

    #[test]
    fn ping_interval_is_half_the_watchdog_and_only_for_this_process() {
        assert_eq!(env(None, None).watchdog_ping_interval(7), Ok(None));
        assert_eq!(
            env(Some("2000000"), None).watchdog_ping_interval(7),
            Ok(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            env(Some("2000000"), Some("7")).watchdog_ping_interval(7),
            Ok(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            env(Some("2000000"), Some("8")).watchdog_ping_interval(7),
            Ok(None)
        );
        assert_eq!(env(Some("0"), None).watchdog_ping_interval(7), Ok(None));
        let error = env(Some("2s"), None).watchdog_ping_interval(7).unwrap_err();
        assert!(error.contains("WATCHDOG_USEC `2s`"), "{error}");
        assert!(env(Some("1"), Some("x")).watchdog_ping_interval(7).is_err());
    }

    #[test]
    fn watchdog_pings_at_once_then_every_interval_and_never_bursts_after_a_stall() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut w = Watchdog::new(Some(second), t0);
        assert_eq!(w.poll_timeout(), Some(t0));
        assert!(w.poll_ping(t0));
        assert!(!w.poll_ping(t0 + second / 2));
        assert_eq!(w.poll_timeout(), Some(t0 + second));
        assert!(w.poll_ping(t0 + second));
        // A 10 s stall: one ping when the loop comes back, the next a full interval later.
        let back = t0 + 11 * second;
        assert!(w.poll_ping(back));
        assert!(!w.poll_ping(back + second / 10));
        assert_eq!(w.poll_timeout(), Some(back + second));

        let mut off = Watchdog::new(None, t0);
        assert_eq!(off.poll_timeout(), None);
        assert!(!off.poll_ping(t0 + second));
    }

    #[test]
    fn notifier_writes_datagrams_to_the_socket_and_counts_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut notifier = Notifier::new(Some(path.to_str().unwrap())).unwrap();
        assert!(notifier.enabled());
        assert!(notifier.notify(&[State::Ready, State::Status("link\nopen".into())]));
        let mut buffer = [0u8; 256];
        let n = server.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=link open");
        drop(server);
        std::fs::remove_file(&path).unwrap();
        assert!(!notifier.notify(&[State::Watchdog]));
        assert_eq!(notifier.send_errors, 1);
    }

    #[test]
    fn notify_socket_forms() {
        assert!(Notifier::new(None).unwrap().notify(&[State::Ready]));
        assert!(Notifier::new(Some("@fc-test")).is_ok());
        let error = Notifier::new(Some("vsock:2:1234")).unwrap_err();
        assert!(error.contains("vsock"), "{error}");
    }
}
