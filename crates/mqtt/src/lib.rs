//! The MQTT 5 connection over mutual TLS, shared by the drone's MCP server and the ground
//! bridge.
//!
//! Two parts:
//! - [`tls_config`] and [`mqtt_options`] build a rustls client configuration (CA, client
//!   certificate and key from PEM files; the broker's name verified against `mqtt.host`;
//!   TLS 1.2 and 1.3) and the rumqttc `MqttOptions` (MQTT 5 CONNECT with Clean Start,
//!   Session Expiry 0, user properties, a Will, `TCP_NODELAY`, keep-alive from config).
//! - [`spawn_driver`] polls the rumqttc event loop in its own task, turns what matters into
//!   [`MqttEvent`]s and reconnects with capped exponential backoff and jitter
//!   ([`flight_companion_core::backoff::Backoff`]).
//! - [`common_name`] reads the identity a client certificate gives (its CN).
//!
//! Crypto provider: rustls with `ring`, passed explicitly (no process-wide default is
//! installed), because `ring` cross-compiles to aarch64/armv7 with only a C cross compiler.
//!
//! A crate of its own (the daemon's package re-exports it as `mcp::mqtt`) so that the ground
//! bridge (`flight-companion-ground`) shares it without depending on the daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectProperties, DisconnectReasonCode, LastWill, LastWillProperties, Packet,
    Publish, PublishProperties, SubAck,
};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use flight_companion_core::backoff::Backoff;
use flight_companion_core::config::MqttConfig;
use flight_companion_core::mcp::transport::{self, ComponentType, valid_client_id};

/// The Last Will the broker publishes when the connection ends without a DISCONNECT.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// What differs between the server's and the ground client's connection.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    /// MQTT client id (the server-id or the mcp-client-id): no `/`, `+` or `#`.
    pub client_id: String,
    pub component_type: ComponentType,
    /// `MCP-META` JSON object (version, implementation, ...).
    pub meta: serde_json::Value,
    pub will: Option<Will>,
    /// Largest MQTT packet this side accepts (CONNECT Maximum Packet Size); the broker drops
    /// larger packets for us instead of sending them. Keep it above the MCP message limit so
    /// an oversized message arrives and can be refused with an error rather than vanish.
    pub packet_bytes_max: u32,
    /// Capacity of rumqttc's request channel (publishes waiting for the event loop).
    pub request_capacity: usize,
}

/// A connection that cannot even be attempted, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("mqtt.{key} is not set (mutual TLS needs the CA, the client certificate and its key)")]
    Missing { key: &'static str },
    #[error("mqtt.{key}: cannot read {path}: {message}")]
    Read {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("mqtt.{key}: {path} is not PEM ({what}): {message}")]
    NotPem {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("mqtt.{key}: {path}: {message}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("mqtt client id `{0}` must be non-empty and contain no `/`, `+` or `#`")]
    ClientId(String),
}

fn required<'a>(key: &'static str, value: &'a Option<PathBuf>) -> Result<&'a Path, MqttSetupError> {
    value.as_deref().ok_or(MqttSetupError::Missing { key })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, MqttSetupError> {
    std::fs::read(path).map_err(|e| MqttSetupError::Read {
        key,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, MqttSetupError> {
    let bytes = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MqttSetupError::NotPem {
            key,
            path: path.to_owned(),
            what: "expected CERTIFICATE blocks",
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(MqttSetupError::NotPem {
            key,
            path: path.to_owned(),
            what: "expected CERTIFICATE blocks",
            message: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// The rustls client configuration of `config`: trusts only `mqtt.ca_cert_path`, presents
/// `mqtt.client_cert_path` with `mqtt.client_key_path`, TLS 1.2 and 1.3, `ring` provider.
pub fn tls_config(config: &MqttConfig) -> Result<Arc<rustls::ClientConfig>, MqttSetupError> {
    let ca_path = required("ca_cert_path", &config.ca_cert_path)?;
    let cert_path = required("client_cert_path", &config.client_cert_path)?;
    let key_path = required("client_key_path", &config.client_key_path)?;

    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates("ca_cert_path", ca_path)? {
        roots.add(cert).map_err(|e| MqttSetupError::Invalid {
            key: "ca_cert_path",
            path: ca_path.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let chain = certificates("client_cert_path", cert_path)?;
    let key_bytes = read("client_key_path", key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| MqttSetupError::NotPem {
        key: "client_key_path",
        path: key_path.to_owned(),
        what: "expected a PRIVATE KEY block",
        message: e.to_string(),
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| MqttSetupError::Invalid {
            key: "ca_cert_path",
            path: ca_path.to_owned(),
            message: format!("TLS setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| MqttSetupError::Invalid {
            key: "client_key_path",
            path: key_path.to_owned(),
            message: format!("the key does not match the certificate or is unusable: {e}"),
        })?;
    Ok(Arc::new(tls))
}

/// Most QoS 1 publishes of ours awaiting their PUBACK at once (the broker's CONNACK Receive
/// Maximum lowers it further: Mosquitto's default is 20).
/// rumqttc sizes its in-flight table by this bound when the connection is made, one ~200-byte
/// slot per packet id: left unset it takes 65,536 slots, 13.5 MiB of resident memory for
/// each connection (issue 17); 128 is 27 KB and more than ten sessions' answers in flight.
pub const OUTGOING_INFLIGHT_MAX: u16 = 128;

/// The rumqttc options of one MCP connection: TLS from [`tls_config`], MQTT 5 CONNECT with
/// Clean Start, Session Expiry 0, `MCP-COMPONENT-TYPE` and `MCP-META` user properties, the
/// Will of `spec` (with the user properties of every PUBLISH, since the broker publishes it
/// for us), keep-alive from config and `TCP_NODELAY` (Nagle adds ~40 ms per round trip on a
/// request/response protocol).
pub fn mqtt_options(
    config: &MqttConfig,
    spec: &ConnectionSpec,
) -> Result<MqttOptions, MqttSetupError> {
    if !valid_client_id(&spec.client_id) {
        return Err(MqttSetupError::ClientId(spec.client_id.clone()));
    }
    let tls = tls_config(config)?;
    let mut options = MqttOptions::new(spec.client_id.clone(), config.host.clone(), config.port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    // rumqttc panics on keep-alives under 5 s, so smaller values are raised to 5 s.
    options.set_keep_alive(Duration::from_secs(u64::from(config.keep_alive_s.max(5))));
    options.set_clean_start(true);
    options.set_request_channel_capacity(spec.request_capacity.max(1));
    options.set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT_MAX);
    let mut properties = ConnectProperties::new();
    properties.session_expiry_interval = Some(0);
    properties.max_packet_size = Some(spec.packet_bytes_max);
    properties.user_properties =
        transport::connect_user_properties(spec.component_type, &spec.meta);
    options.set_connect_properties(properties);
    if let Some(will) = &spec.will {
        // The transport: every PUBLISH carries MCP-COMPONENT-TYPE and MCP-MQTT-CLIENT-ID; the
        // Will is a PUBLISH the broker makes on our behalf, so it carries them too.
        let properties = LastWillProperties {
            delay_interval: None,
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: publish_properties(spec.component_type, &spec.client_id)
                .user_properties,
        };
        options.set_last_will(LastWill::new(
            will.topic.clone(),
            will.payload.clone(),
            QoS::AtLeastOnce,
            will.retain,
            Some(properties),
        ));
    }
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(10);
    options.set_network_options(network);
    Ok(options)
}

/// `PUBLISH` properties every MCP message carries: the component type and the sender's id.
pub fn publish_properties(component: ComponentType, client_id: &str) -> PublishProperties {
    PublishProperties {
        user_properties: transport::publish_user_properties(component, client_id),
        ..Default::default()
    }
}

/// What the driver reports from the connection.
#[derive(Debug)]
pub enum MqttEvent {
    /// CONNACK received: (re)connected. Everything subscribed before is gone (Clean Start).
    Connected(ConnAck),
    /// An incoming PUBLISH.
    Publish(Publish),
    /// A SUBACK (match it by `pkid` with [`MqttEvent::SubscribeSent`]).
    SubAck(SubAck),
    /// A SUBSCRIBE left with this packet id (in the order subscribe requests were made).
    SubscribeSent(u16),
    /// The connection was lost or refused; the driver retries after `retry_in`.
    Disconnected { error: String, retry_in: Duration },
    /// The broker closed the connection because another client connected with the same
    /// client id (MQTT 5 DISCONNECT reason 0x8E, "session taken over"). The driver retries
    /// after `retry_in` like [`MqttEvent::Disconnected`] unless the consumer stops it; a
    /// retry takes the session back from the other client, and the two take turns forever.
    TakenOver { retry_in: Duration },
}

/// True when `error` is the broker's DISCONNECT for a session taken over by another
/// connection with the same client id.
fn taken_over(error: &rumqttc::v5::ConnectionError) -> bool {
    matches!(
        error,
        rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
            ..
        })
    )
}

/// Spawns the task that polls `eventloop`, forwarding events to `events` until `stop` is
/// cancelled or a DISCONNECT was sent.
///
/// Channel policy: `events` is bounded; the driver awaits room (back-pressure: it stops
/// reading the socket, the broker queues or drops per its own limits). Consumers must
/// therefore never await rumqttc's request channel while the driver may be waiting on
/// them: publish with `try_publish*` and count failures.
pub fn spawn_driver(
    mut eventloop: EventLoop,
    config: &MqttConfig,
    events: mpsc::Sender<MqttEvent>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut backoff = reconnect_backoff(config, fastrand::u64(..));
    tokio::spawn(async move {
        loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => return,
                polled = eventloop.poll() => polled,
            };
            let event = match polled {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    backoff.reset();
                    MqttEvent::Connected(connack)
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => MqttEvent::Publish(publish),
                Ok(Event::Incoming(Packet::SubAck(suback))) => MqttEvent::SubAck(suback),
                Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => MqttEvent::SubscribeSent(pkid),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => continue,
                Err(error) => {
                    let retry_in = backoff.next_delay();
                    let event = if taken_over(&error) {
                        MqttEvent::TakenOver { retry_in }
                    } else {
                        MqttEvent::Disconnected {
                            error: error.to_string(),
                            retry_in,
                        }
                    };
                    let _ = events.send(event).await;
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(retry_in) => {}
                    }
                    continue;
                }
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    })
}

/// The reconnect delay of an MQTT connection: `reconnect_backoff_ms_min` (at least 1 ms)
/// doubling up to `reconnect_backoff_ms_max`, each scaled by a jitter factor in [0.5, 1.0]
/// from `seed` (a fleet that lost the same broker does not reconnect in lockstep); reset at
/// every CONNACK.
fn reconnect_backoff(config: &MqttConfig, seed: u64) -> Backoff {
    Backoff::new(
        Duration::from_millis(config.reconnect_backoff_ms_min.max(1)),
        Duration::from_millis(config.reconnect_backoff_ms_max),
    )
    .with_jitter(fastrand::Rng::with_seed(seed))
}

/// Builds the client and its event loop for `spec` from `config`.
pub fn connect(
    config: &MqttConfig,
    spec: &ConnectionSpec,
) -> Result<(AsyncClient, EventLoop), MqttSetupError> {
    let options = mqtt_options(config, spec)?;
    Ok(AsyncClient::new(options, spec.request_capacity.max(1)))
}

/// Why a certificate's common name could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CommonNameError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The common name (CN) of the first certificate in a PEM file: the identity the broker
/// authenticates (its user name, and its client id with `use_username_as_clientid`).
pub fn common_name(pem_path: &Path) -> Result<String, CommonNameError> {
    let bytes = std::fs::read(pem_path).map_err(|e| CommonNameError::Io {
        path: pem_path.to_owned(),
        message: e.to_string(),
    })?;
    let invalid = |message: String| CommonNameError::Invalid(message);
    let der = CertificateDer::pem_slice_iter(&bytes)
        .next()
        .ok_or_else(|| invalid(format!("{}: no certificate", pem_path.display())))?
        .map_err(|e| invalid(format!("{}: not PEM: {e}", pem_path.display())))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| invalid(format!("{}: {e}", pem_path.display())))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| invalid(format!("{}: the certificate has no CN", pem_path.display())))?;
    Ok(cn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_with_jitter_within_the_configured_limits() {
        let config = MqttConfig {
            reconnect_backoff_ms_min: 100,
            reconnect_backoff_ms_max: 1000,
            ..MqttConfig::default()
        };
        let mut b = reconnect_backoff(&config, 42);
        for base in [100u64, 200, 400, 800, 1000, 1000] {
            let delay = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(delay >= base / 2 && delay <= base, "{delay:?} for {base:?}");
        }
        b.reset();
        assert!(
            b.next_delay() <= Duration::from_millis(100),
            "reset at CONNACK"
        );
        // A zero minimum is raised to 1 ms: a broken broker is never hammered in a busy loop.
        let zero = MqttConfig {
            reconnect_backoff_ms_min: 0,
            reconnect_backoff_ms_max: 0,
            ..MqttConfig::default()
        };
        assert!(reconnect_backoff(&zero, 1).next_delay() >= Duration::from_micros(500));
    }

    #[test]
    fn only_the_session_taken_over_disconnect_is_a_takeover() {
        use rumqttc::v5::{ConnectionError, StateError};
        let disconnect = |reason_code| {
            ConnectionError::MqttState(StateError::ServerDisconnect {
                reason_code,
                reason_string: None,
            })
        };
        assert!(taken_over(&disconnect(
            DisconnectReasonCode::SessionTakenOver
        )));
        assert!(!taken_over(&disconnect(
            DisconnectReasonCode::ServerShuttingDown
        )));
        assert!(!taken_over(&ConnectionError::MqttState(
            StateError::ConnectionAborted
        )));
    }

    fn config_with(dir: &Path, ca: &str, cert: &str, key: &str) -> MqttConfig {
        MqttConfig {
            ca_cert_path: Some(dir.join(ca)),
            client_cert_path: Some(dir.join(cert)),
            client_key_path: Some(dir.join(key)),
            ..MqttConfig::default()
        }
    }

    #[test]
    fn missing_and_non_pem_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("fc-mqtt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("garbage.pem"), b"hello, not pem").unwrap();

        let error = tls_config(&MqttConfig::default()).unwrap_err().to_string();
        assert!(error.contains("mqtt.ca_cert_path is not set"), "{error}");

        let error = tls_config(&config_with(&dir, "nope.pem", "x", "y"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("mqtt.ca_cert_path: cannot read"), "{error}");
        assert!(error.contains("nope.pem"), "{error}");

        let error = tls_config(&config_with(&dir, "garbage.pem", "x", "y"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not PEM"), "{error}");
        assert!(error.contains("garbage.pem"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
