//! A real Mosquitto with mutual TLS, configured by `flight-companion dev-setup` on an
//! ephemeral loopback port; killed with the test, restartable on the same port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Proc, binary, free_tcp_port};

/// A `dev-setup` directory (removed on drop).
pub struct DevDir {
    pub dir: PathBuf,
    pub port: u16,
}

impl DevDir {
    /// Runs `flight-companion dev-setup` into a fresh temporary directory for `port`.
    pub fn create(tag: &str, port: u16) -> DevDir {
        let dir = std::env::temp_dir().join(format!("fc-it-{tag}-{}-{}", std::process::id(), port));
        let _ = std::fs::remove_dir_all(&dir);
        let output = Command::new(binary())
            .args(["dev-setup", dir.to_str().unwrap(), "--broker-port"])
            .arg(port.to_string())
            .output()
            .expect("run dev-setup");
        assert!(
            output.status.success(),
            "dev-setup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        DevDir { dir, port }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The certificate and key of the ground identity `name` (CN and client id `name`),
    /// issued by the dev CA on first use as `flight-companion cert issue` does: the broker
    /// takes a certificate's CN as the client id, so every test client has its own.
    pub fn identity(&self, name: &str) -> (String, String) {
        let pki = flight_companion::cert::Pki::new(self.dir.join("certs"));
        let (cert, key) = pki.paths(name, flight_companion::cert::Kind::Client);
        if !cert.exists() {
            pki.issue(&flight_companion::cert::IssueRequest {
                name,
                kind: flight_companion::cert::Kind::Client,
                sans: vec![],
                days: 1,
                now_unix_s: flight_companion::auth::shell::unix_s_now() as i64,
            })
            .unwrap_or_else(|e| panic!("certificate for {name}: {e}"));
        }
        (
            cert.to_str().unwrap().to_owned(),
            key.to_str().unwrap().to_owned(),
        )
    }

    pub fn certs(&self, name: &str) -> String {
        self.dir
            .join("certs")
            .join(name)
            .to_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `mosquitto -c DIR/mosquitto.conf`.
pub struct Broker {
    pub dev: DevDir,
    pub proc: Option<Proc>,
}

impl Broker {
    /// dev-setup on a free port, then starts Mosquitto and waits until it accepts TCP.
    pub fn start(tag: &str) -> Broker {
        let dev = DevDir::create(tag, free_tcp_port());
        let mut broker = Broker { dev, proc: None };
        broker.restart();
        broker
    }

    pub fn port(&self) -> u16 {
        self.dev.port
    }

    /// Kills the broker (SIGKILL: no clean shutdown, like a crash or a power cut).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// (Re)starts the broker on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let conf = self.dev.path("mosquitto.conf");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut command = Command::new(flight_companion_testkit::mosquitto_path());
            command.arg("-c").arg(&conf);
            let mut proc = Proc::spawn("mosquitto", command);
            if wait_accepting(self.dev.port, &mut proc, Duration::from_secs(5)) {
                self.proc = Some(proc);
                return;
            }
            // The port may still be held by the previous instance for a moment.
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {}:\n{}",
                self.dev.port,
                proc.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `mosquitto_sub`/`mosquitto_pub`-style tools with the given cert identity.
    pub fn tls_args(&self, identity: Option<(&str, &str)>) -> Vec<String> {
        let mut args = vec![
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            self.port().to_string(),
            "-V".into(),
            "mqttv5".into(),
            "--cafile".into(),
            self.dev.certs("ca.pem"),
        ];
        if let Some((cert, key)) = identity {
            args.extend(["--cert".into(), cert.into(), "--key".into(), key.into()]);
        }
        args
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_accepting(port: u16, proc: &mut Proc, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = proc.child.try_wait() {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The path of a file in a dev-setup directory, as a string.
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}
