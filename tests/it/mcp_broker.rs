//! The dev-setup broker: mutual TLS is required, and only certificates of its own CA pass.

use std::process::Command;
use std::time::Duration;

use flight_companion::config::Config;
use flight_companion::mcp::mqtt::{self, ConnectionSpec, MqttEvent};
use flight_companion::mcp::transport::ComponentType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::broker::{Broker, DevDir};
use crate::support::free_tcp_port;

fn pub_once(broker: &Broker, identity: Option<(&str, &str)>) -> (bool, String) {
    let output = Command::new("mosquitto_pub")
        .args(broker.tls_args(identity))
        .args([
            "-i",
            "probe-client",
            "-t",
            "$mcp-client/presence/probe-client",
            "-n",
        ])
        .output()
        .expect("mosquitto_pub");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn mcp_broker_refuses_clients_without_a_certificate_of_its_ca() {
    let broker = Broker::start("refuse");
    let other = DevDir::create("other-ca", free_tcp_port());
    let ground = (
        broker.dev.certs("ground.pem"),
        broker.dev.certs("ground.key"),
    );
    let (ok, err) = pub_once(&broker, Some((&ground.0, &ground.1)));
    assert!(
        ok,
        "the ground certificate of the same CA is accepted: {err}"
    );

    let (ok, _) = pub_once(&broker, None);
    assert!(!ok, "no client certificate must be refused");

    let foreign = (other.certs("ground.pem"), other.certs("ground.key"));
    let (ok, _) = pub_once(&broker, Some((&foreign.0, &foreign.1)));
    assert!(!ok, "a certificate from another CA must be refused");
}

#[tokio::test]
async fn mcp_broker_accepts_the_drone_through_the_rust_connection() {
    let broker = Broker::start("drone-conn");
    let config = Config::load(&broker.dev.path("drone.toml")).unwrap();
    let spec = ConnectionSpec {
        client_id: "drone-1".into(),
        component_type: ComponentType::Server,
        meta: serde_json::json!({"version": "test"}),
        will: None,
        packet_bytes_max: 1 << 20,
        request_capacity: 16,
    };
    let (_client, eventloop) = mqtt::connect(&config.mqtt, &spec).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let task = mqtt::spawn_driver(eventloop, &config.mqtt, tx, stop.clone());
    let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("driver alive");
    assert!(matches!(event, MqttEvent::Connected(_)), "{event:?}");
    stop.cancel();
    task.await.unwrap();
}

/// `flight-companion cert issue` makes a ground identity the broker accepts; `cert revoke`
/// re-signs the CRL, and once Mosquitto rereads it (SIGHUP) the certificate is refused,
/// while others still pass.
#[test]
fn mcp_broker_refuses_a_revoked_certificate_after_a_reload() {
    let broker = Broker::start("revoke");
    let dir = broker.dev.dir.to_str().unwrap().to_owned();
    let cert = |args: &[&str]| {
        let output = Command::new(crate::support::binary())
            .arg("cert")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cert {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let said = cert(&["issue", "--dir", &dir, "gcs-9", "--days", "7"]);
    assert!(said.contains("client id is `gcs-9`"), "{said}");
    let gcs = (
        broker.dev.certs("clients/gcs-9.pem"),
        broker.dev.certs("clients/gcs-9.key"),
    );
    let ground = (
        broker.dev.certs("ground.pem"),
        broker.dev.certs("ground.key"),
    );
    let (ok, err) = pub_once(&broker, Some((&gcs.0, &gcs.1)));
    assert!(ok, "a freshly issued identity is accepted: {err}");

    let said = cert(&["revoke", "--dir", &dir, "gcs-9"]);
    assert!(said.contains("revoked gcs-9"), "{said}");
    broker.proc.as_ref().unwrap().signal("HUP");
    // The reload is asynchronous: the refusal comes within a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, _) = pub_once(&broker, Some((&gcs.0, &gcs.1)));
        if !ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked certificate is still accepted after the reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, err) = pub_once(&broker, Some((&ground.0, &ground.1)));
    assert!(ok, "another identity still passes: {err}");
    let listed = cert(&["list", "--dir", &dir]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("gcs-9") && l.contains("revoked")),
        "{listed}"
    );
}
