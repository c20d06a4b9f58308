//! One typed configuration, parsed (not merely validated) before anything starts.
//!
//! Every field has a default written next to it, units are last in field names, and risky
//! knobs carry `danger_` in their name.
//! Errors name the file, the key and what is wrong, because the person reading them is
//! standing next to an aircraft.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::link::endpoint::Endpoint;
pub use crate::safety::envelope_config::{BreachAction, EnvelopeConfig, ZoneConfig};

/// The whole daemon configuration (`flight-companion run --config FILE`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The autopilot link and the daemon's MAVLink identity.
    pub vehicle: VehicleConfig,
    /// The MQTT 5 broker connection (mutual TLS).
    pub mqtt: MqttConfig,
    /// The MCP server exposed over MQTT.
    pub mcp: McpConfig,
    /// Logging.
    pub logging: LoggingConfig,
    /// Who may do what: token keys, revocation, control lease, rate limits.
    pub auth: AuthConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// The onboard camera.
    pub camera: CameraConfig,
    /// Prometheus metrics (off unless `listen` is set).
    pub metrics: MetricsConfig,
    /// Health summary and alert thresholds.
    pub health: HealthConfig,
    /// The safety envelope every motion command is checked against.
    pub envelope: EnvelopeConfig,
    /// The safety microcontroller (firmware bridge).
    pub bridge: BridgeConfig,
    /// The emergency stop: its ladder and its local socket.
    pub estop: EstopConfig,
    /// The daemon's own failsafes (ground link, battery).
    pub failsafe: FailsafeConfig,
    /// Ground stations sharing the autopilot link (`[[gcs_endpoint]]`, issue 19): each a
    /// MAVLink endpoint the daemon routes the vehicle's telemetry to and, for role `gcs`,
    /// takes commands from through the same gate as MCP. Default none.
    pub gcs_endpoint: Vec<GcsEndpointConfig>,
    /// `[gcs]`: what every ground-station endpoint shares (the telemetry log).
    pub gcs: GcsConfig,
    /// `[parameters]`: the autopilot parameters an ADMIN may write, with their bounds
    /// (`[[parameters.allow]]`); the never-write families can never be listed.
    pub parameters: crate::safety::param_allow::ParametersConfig,
    /// Where this configuration came from (not a key: set by `parse`), for the audit log.
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

/// The file a configuration was read from, and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub sha256: String,
}

/// `[bridge]`: the safety microcontroller with the hardware e-stop and the companion
/// watchdog (`firmware-bridge/README.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Talk to a bridge at all. Default false.
    pub enabled: bool,
    /// Serial device of the bridge. Default `/dev/ttyACM0`.
    pub serial: String,
    /// Baud rate. Default 115200 (the firmware's).
    pub baud: u32,
    /// Refuse to run without a healthy bridge: the daemon exits if no compatible bridge says
    /// hello within `startup_timeout_ms`, or on a version mismatch. Default false (a missing
    /// bridge is reported in `get_status`, not fatal).
    pub required: bool,
    /// How long a required bridge has to say hello at startup. Default 5000 ms.
    pub startup_timeout_ms: u64,
    /// Period of the companion heartbeat to the bridge. Default 100 ms.
    pub heartbeat_interval_ms: u64,
    /// No message from the bridge for this long: reported lost. Default 1000 ms.
    pub timeout_ms: u64,
    /// First delay before reopening the port. Default 100 ms.
    pub reconnect_backoff_ms_min: u64,
    /// Cap of the exponential reopen delay. Default 5000 ms.
    pub reconnect_backoff_ms_max: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            serial: "/dev/ttyACM0".into(),
            baud: 115_200,
            required: false,
            startup_timeout_ms: 5000,
            heartbeat_interval_ms: 100,
            timeout_ms: 1000,
            reconnect_backoff_ms_min: 100,
            reconnect_backoff_ms_max: 5000,
        }
    }
}

/// What a ground-station endpoint may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GcsRole {
    /// Telemetry out, nothing in (the default): every frame from it is refused.
    #[default]
    Monitor,
    /// Commands in, through the same whitelist, envelope, control lease and e-stop latch as
    /// the MCP tools, attributed to the endpoint in the audit log.
    Gcs,
}

/// `[[gcs_endpoint]]`: one ground station (QGroundControl, Mission Planner, MAVProxy) beside
/// the daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsEndpointConfig {
    /// How it is named in logs, refusals and the audit log (`gcs:NAME`): 1 to 32 of
    /// `A-Za-z0-9_-`. Required.
    pub name: String,
    /// The endpoint, in the same forms as `vehicle.link`: `udpin:0.0.0.0:14550` (QGroundControl
    /// sends to it), `udpout:HOST:14550` (the daemon sends to a ground station that listens),
    /// `tcpin:ADDR:PORT` (one client at a time, the newest), `serial:/dev/ttyUSB0:57600` (a
    /// telemetry radio). `tcpout` is refused. Required.
    pub link: Endpoint,
    /// `monitor` (default) or `gcs`.
    #[serde(default)]
    pub role: GcsRole,
    /// `gcs` only: the role its commands are checked with, as an MCP caller's are:
    /// `READ_ONLY` (parameter reads), `OPERATOR` (default: flight commands), `ADMIN` (also
    /// the whitelist's parameter writes). Never `SYSTEM`.
    pub authority: Option<crate::role::Role>,
}

impl GcsEndpointConfig {
    /// The role its commands are checked with (monitor endpoints have none to use).
    pub fn authority(&self) -> crate::role::Role {
        self.authority.unwrap_or(crate::role::Role::Operator)
    }
}

/// `[gcs]`: options shared by the ground-station endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcsConfig {
    /// A telemetry log of what the endpoints carried (MAVProxy's and QGroundControl's
    /// `.tlog`: each frame after its receive time, 8 bytes big-endian microseconds since
    /// 1970). Relative to this file. Default none (no log).
    pub tlog_path: Option<PathBuf>,
}

/// `[vehicle]`: how the daemon reaches the autopilot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VehicleConfig {
    /// Autopilot endpoint. Default `tcpout:127.0.0.1:5760` (the built-in simulator's default).
    /// Forms: `serial:/dev/ttyAMA0:921600`, `udpin:0.0.0.0:14550`, `udpout:HOST:PORT`,
    /// `tcpout:HOST:PORT`, `tcpin:ADDR:PORT`.
    pub link: Endpoint,
    /// MAVLink system id the daemon sends as. Default 1 (the vehicle's own system, as companions do).
    pub system_id: u8,
    /// MAVLink component id the daemon sends as. Default 191 (`MAV_COMP_ID_ONBOARD_COMPUTER`).
    pub component_id: u8,
    /// Interval of the daemon's own HEARTBEAT. Default 1000 ms.
    pub heartbeat_interval_ms: u64,
    /// Telemetry rate requested from the autopilot with `SET_MESSAGE_INTERVAL`. Default 10 Hz.
    pub telemetry_rate_hz: f32,
    /// A value older than this is reported as stale. Default 3000 ms.
    pub stale_after_ms: u64,
    /// How long without an autopilot heartbeat before the link counts as lost. Default 3000 ms.
    pub heartbeat_timeout_ms: u64,
    /// Time to wait for a `COMMAND_ACK` before re-sending. Default 1000 ms.
    pub command_ack_timeout_ms: u64,
    /// Re-sends of a command (with `confirmation` incremented) before it times out. Default 3.
    pub command_retries_max: u8,
    /// Time a command may stay `IN_PROGRESS` without a new ACK. Default 30000 ms.
    pub command_in_progress_timeout_ms: u64,
    /// First delay before reopening a lost serial port or TCP connection. Default 100 ms.
    pub reconnect_backoff_ms_min: u64,
    /// Cap of the exponential reopen delay. Default 5000 ms.
    pub reconnect_backoff_ms_max: u64,
    /// Where the daemon keeps the autopilot's last home (JSON, rewritten when home moves),
    /// so that `check-config` can warn when the envelope's zones are far from where the
    /// vehicle last was. Relative to this file. Default none (not kept).
    pub last_home_path: Option<PathBuf>,
    /// `udpin`/`tcpin` only: the autopilot's address (`192.168.144.10:14550`, or a host
    /// alone for any port, as a TCP client's port changes); nothing else is ever the peer.
    /// Default none: the first peer whose autopilot heartbeat the link accepts is pinned, and
    /// another may take its place only after it has been silent for `heartbeat_timeout_ms`.
    pub pinned_peer: Option<crate::link::pin::PinnedAddress>,
    /// MAVLink 2 signing of the autopilot link.
    pub signing: SigningConfig,
}

/// `[vehicle.signing]`: MAVLink 2 signing of the autopilot link. The key is a file of its
/// own (`flight-companion signing keygen`), installed on the autopilot with
/// `flight-companion signing install`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// `off` (default), `sign` (sign every frame, check every signed one, still accept
    /// unsigned ones: only while installing a key), or `required` (accept only frames whose
    /// signature verifies, and the radio's own `RADIO_STATUS`/`RADIO`).
    pub mode: crate::link::signing::SigningMode,
    /// The 32-byte key: a file (mode 0600; raw bytes or 64 hex digits), or
    /// `credential:NAME` for a systemd credential. Never the key itself. Default none.
    pub key_path: Option<PathBuf>,
    /// Where the link's signing timestamp is persisted (every 30 s and at shutdown), so it
    /// never goes back across restarts. Default `mavlink-signing-timestamp` in the state
    /// directory (`$STATE_DIRECTORY` under systemd).
    pub timestamp_path: Option<PathBuf>,
}

/// The signing timestamp's file name in the state directory.
pub const SIGNING_TIMESTAMP_NAME: &str = "mavlink-signing-timestamp";

impl SigningConfig {
    /// The timestamp file in force.
    pub fn resolved_timestamp_path(&self) -> PathBuf {
        self.timestamp_path
            .clone()
            .unwrap_or_else(|| state_directory().join(SIGNING_TIMESTAMP_NAME))
    }
}

impl Default for VehicleConfig {
    fn default() -> Self {
        Self {
            link: Endpoint::default_vehicle(),
            system_id: 1,
            component_id: 191,
            heartbeat_interval_ms: 1000,
            telemetry_rate_hz: 10.0,
            stale_after_ms: 3000,
            heartbeat_timeout_ms: 3000,
            command_ack_timeout_ms: 1000,
            command_retries_max: 3,
            command_in_progress_timeout_ms: 30_000,
            reconnect_backoff_ms_min: 100,
            reconnect_backoff_ms_max: 5000,
            last_home_path: None,
            pinned_peer: None,
            signing: SigningConfig::default(),
        }
    }
}

/// `[mqtt]`: the broker connection. Secrets are paths, never inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Connect to the broker at all. Default false (the foundation runs without the ground).
    pub enabled: bool,
    /// Broker host name; also the name verified against the broker's certificate. Default `localhost`.
    pub host: String,
    /// Broker port. Default 8883.
    pub port: u16,
    /// CA certificate (PEM) that signed the broker's certificate. Default none.
    pub ca_cert_path: Option<PathBuf>,
    /// This machine's client certificate (PEM). Default none.
    pub client_cert_path: Option<PathBuf>,
    /// This machine's client private key (PEM). Default none.
    pub client_key_path: Option<PathBuf>,
    /// MQTT keep-alive; long enough for a lossy radio link. Default 15 s.
    pub keep_alive_s: u16,
    /// First reconnect delay. Default 250 ms.
    pub reconnect_backoff_ms_min: u64,
    /// Cap of the reconnect delay (jitter is added). Default 10000 ms.
    pub reconnect_backoff_ms_max: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "localhost".into(),
            port: 8883,
            ca_cert_path: None,
            client_cert_path: None,
            client_key_path: None,
            keep_alive_s: 15,
            reconnect_backoff_ms_min: 250,
            reconnect_backoff_ms_max: 10_000,
        }
    }
}

/// `[mcp]`: the MCP server on the broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Server name (hierarchical, `/`-separated, no `+` or `#`). Default `flight-companion/drone`.
    pub server_name: String,
    /// Server id, the MQTT client id; unique per process. Default: derived from the host name and process id.
    pub server_id: Option<String>,
    /// One-line description in the presence message. Default `flight-companion onboard MCP server`.
    pub description: String,
    /// Topic root of server control/presence/capability topics. Default `$mcp-server`.
    pub server_topic_root: String,
    /// Topic root of client presence/capability topics. Default `$mcp-client`.
    pub client_topic_root: String,
    /// Topic root of RPC topics. Default `$mcp-rpc`.
    pub rpc_topic_root: String,
    /// Largest accepted MCP message. Default 262144 bytes.
    pub message_bytes_max: usize,
    /// Concurrent tool calls per session. Default 4.
    pub session_calls_concurrent_max: usize,
    /// Concurrent tool calls over all sessions. Default 32.
    pub calls_concurrent_max: usize,
    /// Concurrent sessions. Default 64.
    pub sessions_max: usize,
    /// Rate of `notifications/resources/updated` for `vehicle://status`. Default 2 Hz.
    pub status_update_rate_hz: f32,
    /// Also send `notifications/resources/updated` on each subscribed session's RPC topic,
    /// for clients that miss it on the capability topic (the EMQX Python SDK). A deviation
    /// from the transport spec. Default false.
    pub compat_resource_updates_on_rpc: bool,
    /// Root of the e-stop panic topics `{panic_topic_root}/{server_id}/{publisher}`: the last
    /// level is the publisher's identity, which the broker's ACL binds to its certificate
    /// (`pattern write ROOT/+/%u`), so every trigger is attributed to who pressed. Outside
    /// `$mcp-server/`, which the transport reserves for servers. Default `flight-companion/estop`.
    pub panic_topic_root: String,
    /// `initialize` requests on the control topic waiting to be confirmed on the claimed
    /// client's RPC topic (the control topic does not say who published); beyond it the
    /// oldest unconfirmed one is dropped. Default 32.
    pub candidates_max: usize,
    /// `initialize` requests accepted on the control topic per second, sustained; beyond it
    /// they are dropped and counted. Default 20.
    pub initialize_per_s: f64,
    /// Burst of `initialize` requests on the control topic (every client initializing again at
    /// once after a daemon restart fits). Default 64.
    pub initialize_burst: u32,
    /// Sessions of one subject (its token's `sub` or its broker identity's subject). Default 4.
    pub identity_sessions_max: usize,
    /// The last sessions under `sessions_max` that only ADMIN identities may take. Default 2.
    pub sessions_reserved_admin: usize,
    /// Concurrent tool calls of one subject over all its sessions. Default 8.
    pub identity_calls_concurrent_max: usize,
    /// Concurrent long waits (`wait_for_mode_change`) over all sessions, apart from the tool
    /// call pool. Default 16.
    pub waits_concurrent_max: usize,
    /// Concurrent long waits of one subject. Default 2.
    pub identity_waits_concurrent_max: usize,
    /// Reserved pool for the calls that must always get through: the lease holder's `hold`,
    /// `land` and `return_home`, an ADMIN's `reset_emergency_stop` (every `emergency_stop`
    /// takes its own path). Not counted in the other limits. Default 8.
    pub priority_calls_concurrent_max: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            server_name: "flight-companion/drone".into(),
            server_id: None,
            description: "flight-companion onboard MCP server".into(),
            server_topic_root: crate::mcp::transport::SERVER_TOPIC_ROOT.into(),
            client_topic_root: crate::mcp::transport::CLIENT_TOPIC_ROOT.into(),
            rpc_topic_root: crate::mcp::transport::RPC_TOPIC_ROOT.into(),
            message_bytes_max: 256 * 1024,
            session_calls_concurrent_max: 4,
            calls_concurrent_max: 32,
            sessions_max: 64,
            status_update_rate_hz: 2.0,
            compat_resource_updates_on_rpc: false,
            panic_topic_root: "flight-companion/estop".into(),
            candidates_max: 32,
            initialize_per_s: 20.0,
            initialize_burst: 64,
            identity_sessions_max: 4,
            sessions_reserved_admin: 2,
            identity_calls_concurrent_max: 8,
            waits_concurrent_max: 16,
            identity_waits_concurrent_max: 2,
            priority_calls_concurrent_max: 8,
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `tracing` filter directive, e.g. `info` or `flight_companion=debug`. Default `info`.
    /// The `RUST_LOG` environment variable overrides it.
    pub filter: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
        }
    }
}

/// `[[auth.keys]]`: one trusted public key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthKeyConfig {
    /// The `kid` tokens name to select this key. Required.
    pub kid: String,
    /// The only algorithm accepted with this key: `EdDSA` or `ES256`. Required.
    pub alg: KeyAlg,
    /// PEM public key (SubjectPublicKeyInfo). Required.
    pub public_key_path: PathBuf,
}

/// `[[auth.broker_identity]]`: a client the broker authenticated (by its certificate: CN =
/// client id) mapped to a subject and a role, for clients that cannot send a token (the stock
/// MCP-over-MQTT SDKs). Only sound with a broker that binds client ids to identities
/// (Mosquitto `use_username_as_clientid` with `%u` ACLs, as dev-setup writes; EMQX with a
/// client id ACL).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BrokerIdentityConfig {
    /// The MQTT client id the broker authenticated (the certificate CN). Required.
    pub client_id: String,
    /// The person, station or agent it is, as the audit log and other clients name it. Required.
    pub subject: String,
    /// PUBLIC, READ_ONLY, OPERATOR or ADMIN. Required.
    pub role: crate::role::Role,
}

/// `[auth]`: ground clients present a JWT in `initialize` (see `auth`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Trusted keys; several for rotation. Default none (every token is refused).
    pub keys: Vec<AuthKeyConfig>,
    /// Fleet name also accepted as `aud`, besides `mcp.server_name`. Default none.
    pub fleet: Option<String>,
    /// Tolerated clock difference for `exp`, `nbf`, `iat`. Default 30 s.
    pub clock_skew_s: u64,
    /// Revoked token ids. Default none.
    pub revoked_jtis: Vec<String>,
    /// Revoked subjects. Default none.
    pub revoked_subjects: Vec<String>,
    /// Where ADMIN revocations are persisted (JSON). Default none: kept in memory only.
    pub revocation_path: Option<PathBuf>,
    /// The control lease ends after this long without a call from its holder. Default 10000 ms.
    pub control_lease_timeout_ms: u64,
    /// Calls per second per session, sustained. Default 10.
    pub calls_per_s: f64,
    /// Burst of calls per session. Default 20.
    pub calls_burst: u32,
    /// Motion commands per second per session, sustained. Default 1.
    pub motion_calls_per_s: f64,
    /// Burst of motion commands per session. Default 5.
    pub motion_calls_burst: u32,
    /// Sessions without a token get READ_ONLY. Default false. Never on a flying vehicle.
    pub danger_allow_anonymous: bool,
    /// Broker-attested identities of clients without a token. Default none.
    pub broker_identity: Vec<BrokerIdentityConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            fleet: None,
            clock_skew_s: 30,
            revoked_jtis: Vec::new(),
            revoked_subjects: Vec::new(),
            revocation_path: None,
            control_lease_timeout_ms: 10_000,
            calls_per_s: 10.0,
            calls_burst: 20,
            motion_calls_per_s: 1.0,
            motion_calls_burst: 5,
            danger_allow_anonymous: false,
            broker_identity: Vec::new(),
        }
    }
}

/// Where the camera's frames come from (`camera.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraSource {
    /// `synthetic`: a rendered top-down view of textured ground at the vehicle's reported
    /// position, altitude and heading (for the simulator).
    Synthetic,
    /// `tcp:HOST:PORT`: a bare multipart MJPEG stream, e.g. GStreamer
    /// `... ! jpegenc ! multipartmux ! tcpserversink`.
    Tcp { host: String, port: u16 },
    /// `http://HOST:PORT/PATH`: an MJPEG HTTP stream (ustreamer, mjpg-streamer, IP cameras).
    Http {
        host: String,
        port: u16,
        path: String,
    },
    /// `v4l2:/dev/videoN`: a V4L2 capture device delivering MJPEG (USB cameras, the Pi camera).
    V4l2 { device: PathBuf },
}

impl fmt::Display for CameraSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CameraSource::Synthetic => write!(f, "synthetic"),
            CameraSource::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            CameraSource::Http { host, port, path } => write!(f, "http://{host}:{port}{path}"),
            CameraSource::V4l2 { device } => write!(f, "v4l2:{}", device.display()),
        }
    }
}

/// `[audit]`: the tamper-evident log (see `audit`). On by default: running without it needs
/// `danger_disabled = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory of the log files. Default: `audit` in the service's state directory
    /// (`$STATE_DIRECTORY` under systemd, `/var/lib/flight-companion` for root, else
    /// `$XDG_STATE_HOME/flight-companion` or `~/.local/state/flight-companion`).
    pub dir: Option<PathBuf>,
    /// Run with no audit log at all: nothing the daemon decides can be proven afterwards.
    /// Said at start, in every status and in the health reasons. Default false.
    pub danger_disabled: bool,
    /// `always` (fdatasync per record), `interval` or `never`. Default `always`.
    pub fsync: FsyncPolicy,
    /// Sync period with `fsync = "interval"`. Default 1000 ms.
    pub fsync_interval_ms: u64,
    /// A file is closed and the next started past this size; start-up reads at most one
    /// file, so this bounds start-up time. Default 4 MiB (at most 64 MiB).
    pub file_bytes_max: u64,
    /// Records waiting for the writer; beyond it they are dropped and counted. Default 4096.
    pub queue_len: usize,
    /// The Ed25519 key (PKCS#8 PEM) that signs checkpoints; `credential:NAME` for a systemd
    /// credential. Default: the credential `audit-signing-key.pem` when systemd passes it,
    /// else `audit-signing-key.pem` beside the log directory, created on first start.
    pub signing_key_path: Option<PathBuf>,
    /// The checkpoints' origin line and key name. Default `{mcp.server_name}/audit`.
    pub origin: Option<String>,
    /// A checkpoint is signed at least this often while records arrive. Default 10 s.
    pub checkpoint_interval_s: f64,
    /// ...and after at most this many records. Default 1000.
    pub checkpoint_records_max: u64,
    /// MQTT topic of the retained checkpoints. Default
    /// `flight-companion/audit/{mcp.server_name}` (outside the MCP transport's `$mcp-*`
    /// namespaces); `flight-companion audit witness` subscribes to `flight-companion/audit/#`.
    pub checkpoint_topic: Option<String>,
    /// Retention: the oldest files are removed (with a signed record of what went) beyond
    /// this many bytes. Default 256 MiB.
    pub retention_bytes_max: u64,
    /// ...or when their newest record is older than this many days; 0 keeps them. Default 0.
    pub retention_age_days_max: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dir: None,
            danger_disabled: false,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 1000,
            file_bytes_max: 4 * 1024 * 1024,
            queue_len: 4096,
            signing_key_path: None,
            origin: None,
            checkpoint_interval_s: 10.0,
            checkpoint_records_max: 1000,
            checkpoint_topic: None,
            retention_bytes_max: 256 * 1024 * 1024,
            retention_age_days_max: 0,
        }
    }
}

/// The name of the audit signing key as a systemd credential and as a file.
pub const AUDIT_KEY_NAME: &str = "audit-signing-key.pem";

impl AuditConfig {
    /// The log directory in force; `None` only with `danger_disabled`.
    pub fn resolved_dir(&self) -> Option<PathBuf> {
        if self.danger_disabled {
            return None;
        }
        Some(
            self.dir
                .clone()
                .unwrap_or_else(|| state_directory().join("audit")),
        )
    }

    /// The signing key's path, and whether the daemon may create it when it is missing.
    pub fn resolved_signing_key(&self) -> Option<(PathBuf, bool)> {
        if let Some(path) = &self.signing_key_path {
            return Some((path.clone(), false));
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let credential = PathBuf::from(dir).join(AUDIT_KEY_NAME);
            if credential.exists() {
                return Some((credential, false));
            }
        }
        let dir = self.resolved_dir()?;
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        Some((parent.join(AUDIT_KEY_NAME), true))
    }

    /// The checkpoints' origin for a server name.
    pub fn resolved_origin(&self, server_name: &str) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| format!("{server_name}/audit"))
    }

    /// The checkpoint topic for a server name.
    pub fn resolved_topic(&self, server_name: &str) -> String {
        self.checkpoint_topic
            .clone()
            .unwrap_or_else(|| format!("{}/{server_name}", AUDIT_TOPIC_ROOT))
    }
}

/// The service's state directory: `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
/// `/var/lib/flight-companion` for root, else the user's XDG state directory.
pub fn state_directory() -> PathBuf {
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY")
        && let Some(first) = dirs.to_string_lossy().split(':').next()
        && !first.is_empty()
    {
        return PathBuf::from(first);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/flight-companion");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(xdg).join("flight-companion");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/flight-companion"),
        None => PathBuf::from("/var/lib/flight-companion"),
    }
}

impl std::str::FromStr for CameraSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let host_port = |hp: &str| -> Result<(String, u16), String> {
            let (host, port) = hp
                .rsplit_once(':')
                .ok_or_else(|| format!("`{hp}` needs HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("`{port}` is not a port number"))?;
            if host.is_empty() || port == 0 {
                return Err(format!("`{hp}` needs a host and a port above 0"));
            }
            Ok((host.trim_matches(['[', ']']).to_owned(), port))
        };
        if text == "synthetic" {
            Ok(CameraSource::Synthetic)
        } else if let Some(rest) = text.strip_prefix("tcp:") {
            let (host, port) = host_port(rest)?;
            Ok(CameraSource::Tcp { host, port })
        } else if let Some(rest) = text.strip_prefix("http://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = if authority.contains(':') {
                host_port(authority)?
            } else {
                (authority.to_owned(), 80)
            };
            Ok(CameraSource::Http {
                host,
                port,
                path: path.to_owned(),
            })
        } else if let Some(device) = text.strip_prefix("v4l2:") {
            if device.is_empty() {
                return Err("v4l2: needs a device path, e.g. v4l2:/dev/video0".into());
            }
            Ok(CameraSource::V4l2 {
                device: PathBuf::from(device),
            })
        } else {
            Err(format!(
                "unknown camera source `{text}`; use `synthetic`, `tcp:HOST:PORT`, \
                 `http://HOST:PORT/PATH` or `v4l2:/dev/videoN`"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for CameraSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[camera]`: the onboard camera and the images served to the ground.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Run the camera pipeline at all. Default false.
    pub enabled: bool,
    /// `synthetic`, `tcp:HOST:PORT`, `http://HOST:PORT/PATH` or `v4l2:/dev/videoN`. Default `synthetic`.
    pub source: CameraSource,
    /// Frame size rendered by the synthetic source and requested from a V4L2 device. Default 640.
    pub width_px: u32,
    /// Default 480.
    pub height_px: u32,
    /// Frame rate of the synthetic source and requested from a V4L2 device. Default 2 Hz.
    pub frame_rate_hz: f32,
    /// A frame older than this is never served as current. Default 2000 ms.
    pub frame_age_ms_max: u64,
    /// Frames kept (the oldest is dropped). Default 4.
    pub frames_buffered_max: usize,
    /// No frame for this long and the source is reopened. Default 3000 ms.
    pub stall_timeout_ms: u64,
    /// First delay before reopening a lost source. Default 200 ms.
    pub reconnect_backoff_ms_min: u64,
    /// Cap of the exponential reopen delay. Default 5000 ms.
    pub reconnect_backoff_ms_max: u64,
    /// Largest encoded frame accepted from a source; larger parts are skipped unread. Default 8 MiB.
    pub frame_bytes_max: usize,
    /// Largest frame (width x height) accepted; checked from the JPEG header before
    /// decoding. Default 24 000 000 (24 MP).
    pub frame_pixels_max: u64,
    /// Largest JPEG sent to the ground; images are downscaled and re-encoded to fit.
    /// Must leave room for base64 and JSON within `mcp.message_bytes_max`. Default 163840.
    pub image_bytes_max: usize,
    /// Width of images sent when the caller gives no `max_width_px`. Default 640.
    pub image_width_px_default: u32,
    /// JPEG quality when the caller gives no `jpeg_quality`. Default 80.
    pub jpeg_quality_default: u8,
    /// Decode/encode jobs running at once (each on a blocking thread). Default 1.
    pub encoders_concurrent_max: usize,
    /// Rate of `notifications/resources/updated` for `camera://latest`. Default 0.2 Hz.
    pub resource_update_rate_hz: f32,
    /// Where saved captures go (relative paths are relative to the configuration file).
    /// Default `/var/lib/flight-companion/captures`.
    pub captures_dir: PathBuf,
    /// Total size of saved captures; the oldest are deleted beyond it. Default 1 GiB.
    pub captures_bytes_max: u64,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            source: CameraSource::Synthetic,
            width_px: 640,
            height_px: 480,
            frame_rate_hz: 2.0,
            frame_age_ms_max: 2000,
            frames_buffered_max: 4,
            stall_timeout_ms: 3000,
            reconnect_backoff_ms_min: 200,
            reconnect_backoff_ms_max: 5000,
            frame_bytes_max: 8 << 20,
            frame_pixels_max: 24_000_000,
            image_bytes_max: 160 * 1024,
            image_width_px_default: 640,
            jpeg_quality_default: 80,
            encoders_concurrent_max: 1,
            resource_update_rate_hz: 0.2,
            captures_dir: PathBuf::from("/var/lib/flight-companion/captures"),
            captures_bytes_max: 1 << 30,
        }
    }
}

/// `[metrics]`: the Prometheus endpoint (`GET /metrics`, `GET /health`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve metrics on, e.g. `127.0.0.1:9464`. Default none: no endpoint.
    /// Plain HTTP without authentication: keep it on loopback or a trusted interface.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[health]`: thresholds of the health summary and its alerts (see `health.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Battery remaining at or below which `battery_low` is raised (degraded). Default 30 %.
    pub battery_low_percent: f64,
    /// Battery remaining at or below which health is failed. Default 15 %.
    pub battery_critical_percent: f64,
    /// How far above the threshold the battery must recover to clear the alert. Default 5 %.
    pub battery_hysteresis_percent: f64,
    /// MAVLink loss at or above which `link_degraded` is raised. Default 10 %.
    pub link_loss_percent_max: f64,
    /// How far below the maximum the loss must fall to clear it. Default 5 %.
    pub link_loss_hysteresis_percent: f64,
    /// Autopilot heartbeat age above which the autopilot counts as lost (failed). Default 3000 ms.
    pub autopilot_heartbeat_age_ms_max: u64,
    /// CPU temperature at or above which `cpu_hot` is raised (a Pi 4 throttles at 80-85 °C). Default 75 °C.
    pub cpu_temperature_c_hot: f64,
    /// How far below it the CPU must cool to clear the alert. Default 5 °C.
    pub cpu_temperature_hysteresis_c: f64,
    /// The CPU temperature sensor (millidegrees). Default `/sys/class/thermal/thermal_zone0/temp`.
    pub cpu_temperature_path: std::path::PathBuf,
    /// How often it is read. Default 2000 ms.
    pub cpu_temperature_interval_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            battery_low_percent: 30.0,
            battery_critical_percent: 15.0,
            battery_hysteresis_percent: 5.0,
            link_loss_percent_max: 10.0,
            link_loss_hysteresis_percent: 5.0,
            autopilot_heartbeat_age_ms_max: 3000,
            cpu_temperature_c_hot: 75.0,
            cpu_temperature_hysteresis_c: 5.0,
            cpu_temperature_path: "/sys/class/thermal/thermal_zone0/temp".into(),
            cpu_temperature_interval_ms: 2000,
        }
    }
}

impl CameraConfig {
    /// Bytes an image of `image_bytes` takes in an MCP tool result: base64 (4/3) plus the
    /// JSON envelope and metadata (structured content and its text copy).
    pub fn message_bytes_for_image(image_bytes: usize) -> usize {
        image_bytes.div_ceil(3) * 4 + CAMERA_MESSAGE_OVERHEAD_BYTES
    }
}

/// Room left in an MCP message for everything but the base64 image.
pub const CAMERA_MESSAGE_OVERHEAD_BYTES: usize = 8 * 1024;

impl HealthConfig {
    /// Cross-field rules; returns the key and the reason.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let finite = [
            ("health.battery_low_percent", self.battery_low_percent),
            (
                "health.battery_critical_percent",
                self.battery_critical_percent,
            ),
            (
                "health.battery_hysteresis_percent",
                self.battery_hysteresis_percent,
            ),
            ("health.link_loss_percent_max", self.link_loss_percent_max),
            (
                "health.link_loss_hysteresis_percent",
                self.link_loss_hysteresis_percent,
            ),
            ("health.cpu_temperature_c_hot", self.cpu_temperature_c_hot),
            (
                "health.cpu_temperature_hysteresis_c",
                self.cpu_temperature_hysteresis_c,
            ),
        ];
        for (key, value) in finite {
            if !value.is_finite() || value < 0.0 {
                return Err((key, format!("must be a number of at least 0, got {value}")));
            }
        }
        if self.battery_critical_percent > self.battery_low_percent {
            return Err((
                "health.battery_critical_percent",
                format!(
                    "must be at most health.battery_low_percent ({}), got {}",
                    self.battery_low_percent, self.battery_critical_percent
                ),
            ));
        }
        if self.cpu_temperature_interval_ms < 100 {
            return Err((
                "health.cpu_temperature_interval_ms",
                format!(
                    "must be at least 100 ms, got {}",
                    self.cpu_temperature_interval_ms
                ),
            ));
        }
        Ok(())
    }
}

/// `[estop]`: the emergency stop (see `estop::core` for the ladder).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstopConfig {
    /// Unix socket of `flight-companion estop` (mode 0660). Default: a runtime directory
    /// the daemon's user owns: `$RUNTIME_DIRECTORY/estop.sock` under systemd
    /// (`RuntimeDirectory=`), else `$XDG_RUNTIME_DIR/flight-companion/estop.sock` (a user's
    /// login session), else `/run/flight-companion/estop.sock` for root, else
    /// `/tmp/flight-companion-UID/estop.sock` (see [`default_estop_socket_path`]).
    /// An empty string disables the local socket.
    pub socket_path: Option<PathBuf>,
    /// ArduCopter hold mode of the first rung: `brake` (stop hard) or `loiter`. PX4 always
    /// holds in `AUTO.LOITER`. Default `brake`.
    pub hold_mode: crate::estop::HoldMode,
    /// A hold not shown by the vehicle's heartbeat within this time escalates to land. Default 1500 ms.
    pub hold_confirm_timeout_ms: u64,
    /// Stop commands are re-sent this often until the heartbeat confirms them. Default 250 ms.
    pub resend_interval_ms: u64,
    /// What a confirmed two-step kill does in the air: `none`, `force_disarm` (motors stop,
    /// the vehicle falls) or `terminate` (flight termination, irreversible until power
    /// cycle). Default `none`: the kill is refused.
    pub danger_kill_action: crate::estop::KillAction,
    /// The second step of a kill must come within this time of the first. Default 10000 ms.
    pub danger_kill_confirm_window_ms: u64,
}

impl Default for EstopConfig {
    fn default() -> Self {
        Self {
            socket_path: None,
            hold_mode: crate::estop::HoldMode::Brake,
            hold_confirm_timeout_ms: 1500,
            resend_interval_ms: 250,
            danger_kill_action: crate::estop::KillAction::None,
            danger_kill_confirm_window_ms: 10_000,
        }
    }
}

impl EstopConfig {
    /// The socket path in force; `None` when disabled.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.socket_path {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => Some(default_estop_socket_path(&RuntimeEnv::of_process())),
        }
    }

    /// Where `flight-companion estop` looks when no path is configured: this user's default,
    /// then the system service's (`/run/flight-companion/estop.sock`), so an operator's shell
    /// finds the daemon systemd runs.
    pub fn socket_candidates(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.socket_path().into_iter().collect();
        if self.socket_path.is_none() {
            let service = PathBuf::from(SERVICE_ESTOP_SOCKET);
            if !paths.contains(&service) {
                paths.push(service);
            }
        }
        paths
    }
}

/// The packaged service's socket (`RuntimeDirectory=flight-companion`).
pub const SERVICE_ESTOP_SOCKET: &str = "/run/flight-companion/estop.sock";

/// What the default socket path depends on, read from the process (or given, in tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeEnv {
    /// `$RUNTIME_DIRECTORY`, set by systemd's `RuntimeDirectory=`.
    pub runtime_directory: Option<std::ffi::OsString>,
    /// `$XDG_RUNTIME_DIR`, set by the login session (systemd-logind: `/run/user/UID`).
    pub xdg_runtime_dir: Option<std::ffi::OsString>,
    /// The effective user id.
    pub uid: u32,
}

impl RuntimeEnv {
    pub fn of_process() -> RuntimeEnv {
        RuntimeEnv {
            runtime_directory: std::env::var_os("RUNTIME_DIRECTORY"),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR"),
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            uid: unsafe { libc::geteuid() },
        }
    }
}

/// The default e-stop socket: always in a directory the daemon's user owns or may create,
/// so that `dev-setup`'s configuration works for a normal user out of the box.
/// - `$RUNTIME_DIRECTORY/estop.sock` under systemd (it may list several directories
///   separated by `:`; the first is ours);
/// - `$XDG_RUNTIME_DIR/flight-companion/estop.sock` in a user's session (absolute paths
///   only, as the XDG base directory specification requires);
/// - `/run/flight-companion/estop.sock` for root;
/// - `/tmp/flight-companion-UID/estop.sock` otherwise (the directory is created 0700, and
///   refused if someone else made it writable to others).
pub fn default_estop_socket_path(env: &RuntimeEnv) -> PathBuf {
    let absolute =
        |v: &Option<std::ffi::OsString>| v.as_ref().map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dirs) = &env.runtime_directory {
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if Path::new(&first).is_absolute() {
            return Path::new(&first).join("estop.sock");
        }
    }
    if let Some(dir) = absolute(&env.xdg_runtime_dir) {
        return dir.join("flight-companion").join("estop.sock");
    }
    if env.uid == 0 {
        return PathBuf::from(SERVICE_ESTOP_SOCKET);
    }
    std::env::temp_dir()
        .join(format!("flight-companion-{}", env.uid))
        .join("estop.sock")
}

/// `[failsafe]`: what the daemon does by itself when the ground or the battery fails.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailsafeConfig {
    /// No broker connection for this long while in the air → hold, then
    /// `ground_loss_action`. 0 disables it. Default 5 s (ArduPilot `FS_GCS_TIMEOUT`).
    pub ground_link_timeout_s: f64,
    /// Connected, but no authenticated ground message (any MCP request, notification or
    /// ping) for this long while in the air → the same. 0 disables it. Default 0: MCP
    /// clients do not heartbeat, and an agent may think for a minute between calls; set it
    /// (e.g. 10 s, PX4's `COM_DL_LOSS_T`) when the ground client pings.
    pub ground_activity_timeout_s: f64,
    /// How long the ground-loss failsafe holds before its action. Default 5 s (PX4 `COM_FAIL_ACT_T`).
    pub ground_loss_hold_s: f64,
    /// After the hold: `return_home` or `land`. Default `return_home` (ArduPilot `FS_GCS_ENABLE = 1`).
    pub ground_loss_action: crate::estop::GroundLossAction,
    /// At or below this battery percentage in the air: land. 0 disables it. Default 10 %
    /// (below the autopilot's own critical level, so its failsafe normally acts first).
    pub battery_critical_percent: f64,
}

impl Default for FailsafeConfig {
    fn default() -> Self {
        Self {
            ground_link_timeout_s: 5.0,
            ground_activity_timeout_s: 0.0,
            ground_loss_hold_s: 5.0,
            ground_loss_action: crate::estop::GroundLossAction::ReturnHome,
            battery_critical_percent: 10.0,
        }
    }
}

impl Config {
    /// The stop machine's options from `[estop]` and `[failsafe]`.
    pub fn stop_options(&self) -> crate::estop::StopOptions {
        use std::time::Duration;
        let e = &self.estop;
        let f = &self.failsafe;
        let seconds = |s: f64| (s > 0.0).then(|| Duration::from_secs_f64(s));
        crate::estop::StopOptions {
            hold_mode: e.hold_mode,
            hold_confirm_timeout: Duration::from_millis(e.hold_confirm_timeout_ms),
            resend_interval: Duration::from_millis(e.resend_interval_ms),
            kill_action: e.danger_kill_action,
            kill_confirm_window: Duration::from_millis(e.danger_kill_confirm_window_ms),
            ground_link_timeout: seconds(f.ground_link_timeout_s),
            ground_activity_timeout: seconds(f.ground_activity_timeout_s),
            ground_loss_hold: Duration::from_secs_f64(f.ground_loss_hold_s),
            ground_loss_action: f.ground_loss_action,
            battery_critical_percent: (f.battery_critical_percent > 0.0)
                .then_some(f.battery_critical_percent),
            // Two periods of the position telemetry the daemon asks for.
            position_loss_grace: Duration::from_secs_f64(
                (2.0 / f64::from(self.vehicle.telemetry_rate_hz)).max(0.5),
            ),
        }
    }

    fn check_estop(&self) -> Result<(), (&'static str, String)> {
        let e = &self.estop;
        if let Some(path) = &e.socket_path {
            let bytes = path.as_os_str().len();
            if bytes > SOCKET_PATH_BYTES_MAX {
                return Err((
                    "estop.socket_path",
                    format!(
                        "`{}` is {bytes} bytes; a Unix socket path holds at most {}: choose a \
                         shorter one (e.g. under /run or $XDG_RUNTIME_DIR), or leave the key out \
                         for the default",
                        path.display(),
                        SOCKET_PATH_BYTES_MAX
                    ),
                ));
            }
        }
        if !(50..=2000).contains(&e.resend_interval_ms) {
            return Err((
                "estop.resend_interval_ms",
                format!("must be 50..=2000 ms, got {}", e.resend_interval_ms),
            ));
        }
        if !(200..=10_000).contains(&e.hold_confirm_timeout_ms) {
            return Err((
                "estop.hold_confirm_timeout_ms",
                format!("must be 200..=10000 ms, got {}", e.hold_confirm_timeout_ms),
            ));
        }
        if !(1000..=60_000).contains(&e.danger_kill_confirm_window_ms) {
            return Err((
                "estop.danger_kill_confirm_window_ms",
                format!(
                    "must be 1000..=60000 ms, got {}",
                    e.danger_kill_confirm_window_ms
                ),
            ));
        }
        let f = &self.failsafe;
        for (key, value, max) in [
            (
                "failsafe.ground_link_timeout_s",
                f.ground_link_timeout_s,
                300.0,
            ),
            (
                "failsafe.ground_activity_timeout_s",
                f.ground_activity_timeout_s,
                3600.0,
            ),
            ("failsafe.ground_loss_hold_s", f.ground_loss_hold_s, 120.0),
            (
                "failsafe.battery_critical_percent",
                f.battery_critical_percent,
                50.0,
            ),
        ] {
            if !(value.is_finite() && (0.0..=max).contains(&value)) {
                return Err((key, format!("must be 0..={max}, got {value}")));
            }
        }
        if f.ground_link_timeout_s > 0.0 && f.ground_link_timeout_s < 1.0 {
            return Err((
                "failsafe.ground_link_timeout_s",
                format!(
                    "{} s would fire on a normal reconnect; use at least 1 s, or 0 to disable",
                    f.ground_link_timeout_s
                ),
            ));
        }
        Ok(())
    }
}

/// A configuration that could not be used, with the file, the key and the reason.
#[derive(Debug)]
pub struct ConfigError {
    /// The file that was read.
    pub path: PathBuf,
    /// The dotted key that is wrong, when known (e.g. `vehicle.link`).
    pub key: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(
                f,
                "{}: key `{}`: {}",
                self.path.display(),
                key,
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and parses a file; every error names the file, and the key when there is one.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses TOML text; `path` is only used in messages. `credential:NAME` paths resolve
    /// in this process's `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Self::parse_with_credentials(path, text, credentials.as_deref())
    }

    /// [`Config::parse`] with the credentials directory given (`None`: not under systemd).
    pub fn parse_with_credentials(
        path: &Path,
        text: &str,
        credentials_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: None,
            message: describe(text, &e),
        })?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            ConfigError {
                path: path.to_owned(),
                key: (key != ".").then_some(key),
                message: describe(text, e.inner()),
            }
        })?;
        let mut config = config;
        config.source = Some(ConfigSource {
            path: path.to_owned(),
            sha256: crate::escape::hex(&sha2::Sha256::digest(text.as_bytes())),
        });
        config
            .resolve_paths(path, credentials_dir)
            .map_err(|(key, message)| ConfigError {
                path: path.to_owned(),
                key: Some(key.to_owned()),
                message,
            })?;
        config.check().map_err(|(key, message)| ConfigError {
            path: path.to_owned(),
            key: Some(key.to_owned()),
            message,
        })?;
        Ok(config)
    }

    /// The ground-station endpoints: names, endpoints, roles.
    fn check_gcs_endpoints(&self) -> Result<(), (&'static str, String)> {
        use crate::role::Role;
        let mut names = std::collections::HashSet::new();
        let mut addresses = std::collections::HashSet::new();
        if let Endpoint::UdpIn { addr } | Endpoint::TcpIn { addr } = &self.vehicle.link {
            addresses.insert(addr.clone());
        }
        if self.gcs_endpoint.len() > crate::gcs::ENDPOINTS_MAX {
            return Err((
                "gcs_endpoint",
                format!(
                    "at most {} ground-station endpoints, got {}",
                    crate::gcs::ENDPOINTS_MAX,
                    self.gcs_endpoint.len()
                ),
            ));
        }
        for (index, e) in self.gcs_endpoint.iter().enumerate() {
            let which = format!("gcs_endpoint[{index}] (`{}`)", e.name);
            if e.name.is_empty()
                || e.name.len() > 32
                || !e
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    "gcs_endpoint.name",
                    format!("{which}: the name must be 1 to 32 of A-Za-z0-9_-"),
                ));
            }
            if !names.insert(e.name.clone()) {
                return Err((
                    "gcs_endpoint.name",
                    format!("{which}: another endpoint has this name; names must be unique"),
                ));
            }
            match &e.link {
                Endpoint::TcpOut { .. } => {
                    return Err((
                        "gcs_endpoint.link",
                        format!(
                            "{which}: {} connects out, which ground stations do not listen for; \
                             use tcpin:ADDR:PORT (the ground station connects) or udpout:HOST:PORT",
                            e.link
                        ),
                    ));
                }
                Endpoint::UdpIn { addr } | Endpoint::TcpIn { addr }
                    if !addresses.insert(addr.clone()) =>
                {
                    return Err((
                        "gcs_endpoint.link",
                        format!(
                            "{which}: {} listens where vehicle.link or another endpoint already \
                             does",
                            e.link
                        ),
                    ));
                }
                _ => {}
            }
            match (e.role, e.authority) {
                (GcsRole::Monitor, Some(_)) => {
                    return Err((
                        "gcs_endpoint.authority",
                        format!(
                            "{which}: a monitor takes no commands, so it has no authority; set \
                             role = \"gcs\" or remove authority"
                        ),
                    ));
                }
                (_, Some(r)) if !matches!(r, Role::ReadOnly | Role::Operator | Role::Admin) => {
                    return Err((
                        "gcs_endpoint.authority",
                        format!(
                            "{which}: {r} is not a ground station's authority; use READ_ONLY, \
                             OPERATOR or ADMIN"
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Pinning and signing of the autopilot link.
    fn check_link_trust(&self) -> Result<(), (&'static str, String)> {
        use crate::link::endpoint::Endpoint;
        use crate::link::signing::SigningMode;
        let v = &self.vehicle;
        if let Some(peer) = v.pinned_peer
            && !matches!(v.link, Endpoint::UdpIn { .. } | Endpoint::TcpIn { .. })
        {
            return Err((
                "vehicle.pinned_peer",
                format!(
                    "{peer} can only pin the peer of a listening link (udpin, tcpin); {} \
                     already names its one peer",
                    v.link
                ),
            ));
        }
        match (v.signing.mode, &v.signing.key_path) {
            (SigningMode::Off, Some(_)) => Err((
                "vehicle.signing.mode",
                "vehicle.signing.key_path is set but the mode is `off`: set mode = \"required\" \
                 (or \"sign\" while installing the key), or remove key_path"
                    .into(),
            )),
            (SigningMode::Sign | SigningMode::Required, None) => Err((
                "vehicle.signing.key_path",
                format!(
                    "mode `{}` needs a key: generate one with `flight-companion signing keygen \
                     --out FILE`, install it with `flight-companion signing install`, and name \
                     the file (or `credential:NAME`) here",
                    v.signing.mode
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_audit(&self) -> Result<(), (&'static str, String)> {
        let a = &self.audit;
        if a.queue_len == 0 {
            return Err(("audit.queue_len", "must be at least 1".into()));
        }
        if !(4096..=64 * 1024 * 1024).contains(&a.file_bytes_max) {
            return Err((
                "audit.file_bytes_max",
                format!(
                    "must be between 4096 and 67108864 (64 MiB: start-up reads one file), got {}",
                    a.file_bytes_max
                ),
            ));
        }
        if !(a.checkpoint_interval_s.is_finite()
            && (0.1..=3600.0).contains(&a.checkpoint_interval_s))
        {
            return Err((
                "audit.checkpoint_interval_s",
                format!(
                    "must be between 0.1 and 3600 s, got {}",
                    a.checkpoint_interval_s
                ),
            ));
        }
        if a.checkpoint_records_max == 0 || a.checkpoint_records_max > 1_000_000 {
            return Err((
                "audit.checkpoint_records_max",
                "must be between 1 and 1000000".into(),
            ));
        }
        if a.retention_bytes_max < 4 * a.file_bytes_max {
            return Err((
                "audit.retention_bytes_max",
                format!(
                    "must be at least four files (4 × audit.file_bytes_max = {} bytes), got {}",
                    4 * a.file_bytes_max,
                    a.retention_bytes_max
                ),
            ));
        }
        let origin = a.resolved_origin(&self.mcp.server_name);
        if !origin_is_valid(&origin) {
            return Err((
                "audit.origin",
                format!(
                    "`{}` cannot be a checkpoint origin (no spaces, `+` or control characters); \
                     set audit.origin",
                    crate::escape::escape(&origin)
                ),
            ));
        }
        let topic = a.resolved_topic(&self.mcp.server_name);
        if topic.is_empty() || topic.contains(['+', '#']) || topic.starts_with("$mcp") {
            return Err((
                "audit.checkpoint_topic",
                format!(
                    "`{}` must be a topic without wildcards, outside the MCP transport's `$mcp-*` \
                     namespaces",
                    crate::escape::escape(&topic)
                ),
            ));
        }
        Ok(())
    }

    /// Relative paths in a file are relative to that file's directory, so a configuration
    /// directory (e.g. the one `dev-setup` writes) can be moved as a whole.
    /// `credential:NAME` names a systemd credential (see [`resolve_secret_path`]).
    fn resolve_paths(
        &mut self,
        file: &Path,
        credentials_dir: Option<&Path>,
    ) -> Result<(), (&'static str, String)> {
        let base = file.parent().unwrap_or(Path::new("."));
        // The MQTT files are only needed when MQTT is on: the packaged configuration names
        // its key by credential and must still start before the credential is set up.
        let mqtt_enabled = self.mqtt.enabled;
        for (key, path) in [
            ("mqtt.ca_cert_path", &mut self.mqtt.ca_cert_path),
            ("mqtt.client_cert_path", &mut self.mqtt.client_cert_path),
            ("mqtt.client_key_path", &mut self.mqtt.client_key_path),
        ] {
            if let Some(path) = path {
                match resolve_secret_path(path, base, credentials_dir) {
                    Ok(resolved) => *path = resolved,
                    Err(message) if mqtt_enabled => return Err((key, message)),
                    Err(_) => {}
                }
            }
        }
        if let Some(key) = &mut self.audit.signing_key_path {
            *key = resolve_secret_path(key, base, credentials_dir)
                .map_err(|m| ("audit.signing_key_path", m))?;
        }
        if let Some(key) = &mut self.vehicle.signing.key_path {
            *key = resolve_secret_path(key, base, credentials_dir)
                .map_err(|m| ("vehicle.signing.key_path", m))?;
        }
        for path in [
            &mut self.auth.revocation_path,
            &mut self.audit.dir,
            &mut self.vehicle.last_home_path,
            &mut self.vehicle.signing.timestamp_path,
            &mut self.gcs.tlog_path,
        ]
        .into_iter()
        .flatten()
        .chain(self.auth.keys.iter_mut().map(|k| &mut k.public_key_path))
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if self.camera.captures_dir.is_relative() {
            self.camera.captures_dir = base.join(&self.camera.captures_dir);
        }
        Ok(())
    }

    /// `[bridge]`: the heartbeat inside the timeout, a sane backoff.
    fn check_bridge(&self) -> Result<(), (&'static str, String)> {
        let b = &self.bridge;
        if b.heartbeat_interval_ms == 0 || b.heartbeat_interval_ms >= b.timeout_ms {
            return Err((
                "bridge.heartbeat_interval_ms",
                format!(
                    "must be above 0 and below bridge.timeout_ms ({} ms), got {}",
                    b.timeout_ms, b.heartbeat_interval_ms
                ),
            ));
        }
        if b.reconnect_backoff_ms_min == 0
            || b.reconnect_backoff_ms_min > b.reconnect_backoff_ms_max
        {
            return Err((
                "bridge.reconnect_backoff_ms_min",
                format!(
                    "must be above 0 and at most bridge.reconnect_backoff_ms_max ({} ms), got {}",
                    b.reconnect_backoff_ms_max, b.reconnect_backoff_ms_min
                ),
            ));
        }
        Ok(())
    }

    /// `[vehicle]`: the link's rates, timeouts and ids.
    fn check_vehicle(&self) -> Result<(), (&'static str, String)> {
        let v = &self.vehicle;
        if v.heartbeat_interval_ms == 0 || v.heartbeat_interval_ms > 5000 {
            return Err((
                "vehicle.heartbeat_interval_ms",
                format!("must be 1..=5000 ms, got {}", v.heartbeat_interval_ms),
            ));
        }
        if !(v.telemetry_rate_hz.is_finite() && (0.1..=100.0).contains(&v.telemetry_rate_hz)) {
            return Err((
                "vehicle.telemetry_rate_hz",
                format!("must be 0.1..=100 Hz, got {}", v.telemetry_rate_hz),
            ));
        }
        if v.command_ack_timeout_ms == 0 {
            return Err(("vehicle.command_ack_timeout_ms", "must be above 0".into()));
        }
        // At 0 every value is stale the moment it arrives (every motion refused, every
        // failsafe raised); above a minute a dead link still looks alive. Found by the fuzzer.
        for (key, value) in [
            ("vehicle.stale_after_ms", v.stale_after_ms),
            ("vehicle.heartbeat_timeout_ms", v.heartbeat_timeout_ms),
        ] {
            if !(100..=60_000).contains(&value) {
                return Err((key, format!("must be 100..=60000 ms, got {value}")));
            }
        }
        if v.reconnect_backoff_ms_min == 0
            || v.reconnect_backoff_ms_min > v.reconnect_backoff_ms_max
        {
            return Err((
                "vehicle.reconnect_backoff_ms_min",
                format!(
                    "must be above 0 and at most vehicle.reconnect_backoff_ms_max ({} ms), got {}",
                    v.reconnect_backoff_ms_max, v.reconnect_backoff_ms_min
                ),
            ));
        }
        if v.component_id == 0 {
            return Err((
                "vehicle.component_id",
                "0 is the broadcast id; use 191".into(),
            ));
        }
        if v.system_id == 0 {
            return Err((
                "vehicle.system_id",
                "0 is the broadcast id; use 1..=255".into(),
            ));
        }
        Ok(())
    }

    /// `[auth]`: rate limits, the lease, unique key ids, the broker identities.
    fn check_auth(&self) -> Result<(), (&'static str, String)> {
        let a = &self.auth;
        for (key, rate, burst) in [
            ("auth.calls_per_s", a.calls_per_s, a.calls_burst),
            (
                "auth.motion_calls_per_s",
                a.motion_calls_per_s,
                a.motion_calls_burst,
            ),
        ] {
            if !(rate.is_finite() && rate > 0.0 && burst >= 1) {
                return Err((
                    key,
                    format!(
                        "must be above 0 with a burst of at least 1, got {rate}/s burst {burst}"
                    ),
                ));
            }
        }
        if a.control_lease_timeout_ms < 500 {
            return Err((
                "auth.control_lease_timeout_ms",
                format!(
                    "must be at least 500 ms, got {}",
                    a.control_lease_timeout_ms
                ),
            ));
        }
        let mut kids = std::collections::HashSet::new();
        for k in &a.keys {
            if k.kid.is_empty() || !kids.insert(k.kid.as_str()) {
                return Err((
                    "auth.keys",
                    format!("every key needs a unique non-empty kid; `{}` is not", k.kid),
                ));
            }
        }
        let mut client_ids = std::collections::HashSet::new();
        for b in &a.broker_identity {
            if let Err(why) = valid_identity_name(&b.client_id) {
                return Err(("auth.broker_identity", format!("client_id: {why}")));
            }
            if !client_ids.insert(b.client_id.as_str()) {
                return Err((
                    "auth.broker_identity",
                    format!("client_id `{}` is mapped twice", b.client_id),
                ));
            }
            if b.subject.is_empty() || b.subject.chars().count() > 128 {
                return Err((
                    "auth.broker_identity",
                    format!("subject of `{}` must be 1 to 128 characters", b.client_id),
                ));
            }
            if b.role == crate::role::Role::System {
                return Err((
                    "auth.broker_identity",
                    format!(
                        "`{}`: SYSTEM is never given to a ground client; use PUBLIC, READ_ONLY, OPERATOR or ADMIN",
                        b.client_id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Cross-field rules that serde cannot express. Returns the key and the reason.
    fn check(&self) -> Result<(), (&'static str, String)> {
        self.check_bridge()?;
        self.check_vehicle()?;
        self.check_link_trust()?;
        self.check_gcs_endpoints()?;
        let m = &self.mcp;
        if m.server_name.is_empty()
            || m.server_name.starts_with('/')
            || m.server_name.contains(['+', '#'])
        {
            return Err((
                "mcp.server_name",
                format!(
                    "must be non-empty, not start with `/` and contain no `+` or `#`, got `{}`",
                    m.server_name
                ),
            ));
        }
        if let Some(id) = &m.server_id {
            if id.is_empty() || id.contains(['/', '+', '#']) {
                return Err((
                    "mcp.server_id",
                    format!("must be non-empty and contain no `/`, `+` or `#`, got `{id}`"),
                ));
            }
        }
        if !(m.status_update_rate_hz.is_finite()
            && m.status_update_rate_hz > 0.0
            && m.status_update_rate_hz <= 50.0)
        {
            return Err((
                "mcp.status_update_rate_hz",
                format!("must be in (0, 50] Hz, got {}", m.status_update_rate_hz),
            ));
        }
        self.check_mcp_capacity()?;
        self.check_auth()?;
        self.check_audit()?;
        self.check_camera()?;
        self.health.check()?;
        self.parameters.check()?;
        crate::safety::envelope::check_config(&self.envelope)?;
        if let Some([lat, lon]) = self.envelope.expected_home_lat_lon_deg
            && !(lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0)
        {
            return Err((
                "envelope.expected_home_lat_lon_deg",
                format!(
                    "must be [latitude_deg, longitude_deg] within ±90 and ±180, got [{lat}, {lon}]"
                ),
            ));
        }
        self.check_estop()?;
        if self.mqtt.enabled {
            for (key, value) in [
                ("mqtt.ca_cert_path", &self.mqtt.ca_cert_path),
                ("mqtt.client_cert_path", &self.mqtt.client_cert_path),
                ("mqtt.client_key_path", &self.mqtt.client_key_path),
            ] {
                if value.is_none() {
                    return Err((
                        key,
                        "required when mqtt.enabled = true (mutual TLS is not optional)".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// `[mcp]` capacity and the panic topic.
    fn check_mcp_capacity(&self) -> Result<(), (&'static str, String)> {
        let m = &self.mcp;
        let root = &m.panic_topic_root;
        if root.is_empty()
            || root.starts_with('/')
            || root.ends_with('/')
            || root.contains(['+', '#'])
            || root.starts_with(&format!("{}/", m.server_topic_root))
            || root == &m.server_topic_root
        {
            return Err((
                "mcp.panic_topic_root",
                format!(
                    "must be non-empty, contain no `+` or `#`, not start or end with `/`, and lie \
                     outside `{}` (reserved for server control topics), got `{root}`",
                    m.server_topic_root
                ),
            ));
        }
        for (key, value) in [
            ("mcp.sessions_max", m.sessions_max),
            (
                "mcp.session_calls_concurrent_max",
                m.session_calls_concurrent_max,
            ),
            ("mcp.calls_concurrent_max", m.calls_concurrent_max),
            ("mcp.candidates_max", m.candidates_max),
            ("mcp.identity_sessions_max", m.identity_sessions_max),
            (
                "mcp.identity_calls_concurrent_max",
                m.identity_calls_concurrent_max,
            ),
            ("mcp.waits_concurrent_max", m.waits_concurrent_max),
            (
                "mcp.identity_waits_concurrent_max",
                m.identity_waits_concurrent_max,
            ),
            (
                "mcp.priority_calls_concurrent_max",
                m.priority_calls_concurrent_max,
            ),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if m.sessions_reserved_admin >= m.sessions_max {
            return Err((
                "mcp.sessions_reserved_admin",
                format!(
                    "must be below mcp.sessions_max ({}), got {}",
                    m.sessions_max, m.sessions_reserved_admin
                ),
            ));
        }
        if !(m.initialize_per_s.is_finite() && m.initialize_per_s > 0.0 && m.initialize_burst >= 1)
        {
            return Err((
                "mcp.initialize_per_s",
                format!(
                    "must be above 0 with a burst of at least 1, got {}/s burst {}",
                    m.initialize_per_s, m.initialize_burst
                ),
            ));
        }
        Ok(())
    }

    fn check_camera(&self) -> Result<(), (&'static str, String)> {
        let c = &self.camera;
        if !c.enabled {
            return Ok(());
        }
        let needed = CameraConfig::message_bytes_for_image(c.image_bytes_max);
        if c.image_bytes_max < 1024 || needed > self.mcp.message_bytes_max {
            let most = (self
                .mcp
                .message_bytes_max
                .saturating_sub(CAMERA_MESSAGE_OVERHEAD_BYTES))
                / 4
                * 3;
            return Err((
                "camera.image_bytes_max",
                format!(
                    "must be 1024..={most} so that the image, base64-encoded ({needed} bytes with \
                     the JSON around it), fits in mcp.message_bytes_max ({})",
                    self.mcp.message_bytes_max
                ),
            ));
        }
        if c.width_px == 0 || c.height_px == 0 || c.width_px > 8192 || c.height_px > 8192 {
            return Err((
                "camera.width_px",
                format!(
                    "width and height must be 1..=8192, got {}x{}",
                    c.width_px, c.height_px
                ),
            ));
        }
        if !(c.frame_rate_hz.is_finite() && c.frame_rate_hz > 0.0 && c.frame_rate_hz <= 60.0) {
            return Err((
                "camera.frame_rate_hz",
                format!("must be in (0, 60] Hz, got {}", c.frame_rate_hz),
            ));
        }
        if !(c.resource_update_rate_hz.is_finite()
            && c.resource_update_rate_hz > 0.0
            && c.resource_update_rate_hz <= 5.0)
        {
            return Err((
                "camera.resource_update_rate_hz",
                format!("must be in (0, 5] Hz, got {}", c.resource_update_rate_hz),
            ));
        }
        if c.frame_age_ms_max == 0 || c.stall_timeout_ms == 0 {
            return Err((
                "camera.frame_age_ms_max",
                "frame_age_ms_max and stall_timeout_ms must be above 0".into(),
            ));
        }
        if c.frames_buffered_max == 0 || c.frames_buffered_max > 64 {
            return Err((
                "camera.frames_buffered_max",
                format!("must be 1..=64, got {}", c.frames_buffered_max),
            ));
        }
        if c.encoders_concurrent_max == 0 || c.encoders_concurrent_max > 8 {
            return Err((
                "camera.encoders_concurrent_max",
                format!("must be 1..=8, got {}", c.encoders_concurrent_max),
            ));
        }
        if !(1..=100).contains(&c.jpeg_quality_default) {
            return Err((
                "camera.jpeg_quality_default",
                format!("must be 1..=100, got {}", c.jpeg_quality_default),
            ));
        }
        if c.image_width_px_default < 16 {
            return Err((
                "camera.image_width_px_default",
                format!("must be at least 16, got {}", c.image_width_px_default),
            ));
        }
        if c.reconnect_backoff_ms_min == 0
            || c.reconnect_backoff_ms_min > c.reconnect_backoff_ms_max
        {
            return Err((
                "camera.reconnect_backoff_ms_min",
                format!(
                    "must be above 0 and at most camera.reconnect_backoff_ms_max ({} ms), got {}",
                    c.reconnect_backoff_ms_max, c.reconnect_backoff_ms_min
                ),
            ));
        }
        if c.frame_bytes_max < 1024 || c.frame_pixels_max == 0 {
            return Err((
                "camera.frame_bytes_max",
                "frame_bytes_max must be at least 1024 and frame_pixels_max above 0".into(),
            ));
        }
        Ok(())
    }
}

/// The prefix of a path that names a systemd credential instead of a file.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// Resolves a path from a configuration file:
/// - `credential:NAME` → `$CREDENTIALS_DIRECTORY/NAME`, the private copy systemd makes for
///   `LoadCredential=NAME:/root-only/file` (or `LoadCredentialEncrypted=`), readable by this
///   service alone and never on a disk the service user can write;
/// - a relative path → relative to the configuration file's directory `base`;
/// - an absolute path → itself.
pub fn resolve_secret_path(
    path: &Path,
    base: &Path,
    credentials_dir: Option<&Path>,
) -> Result<PathBuf, String> {
    let Some(name) = path
        .to_str()
        .and_then(|p| p.strip_prefix(CREDENTIAL_PREFIX))
    else {
        return Ok(if path.is_relative() {
            base.join(path)
        } else {
            path.to_owned()
        });
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "`{}` must name one credential, e.g. `credential:mqtt-client-key.pem`",
            path.display()
        ));
    }
    match credentials_dir {
        Some(dir) => Ok(dir.join(name)),
        None => Err(format!(
            "`{}` needs $CREDENTIALS_DIRECTORY, which systemd sets for a service with \
             `LoadCredential={name}:/path/to/file`; outside systemd give the file's path instead",
            path.display()
        )),
    }
}

/// `line L, column C: message`, without the multi-line source excerpt toml prints.
pub fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.vehicle.link, Endpoint::default_vehicle());
        assert_eq!(config.vehicle.component_id, 191);
        assert!(!config.mqtt.enabled);
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let cases = [
            (
                "[vehicle]\nheartbeat_interval_ms = \"fast\"\n",
                "vehicle.heartbeat_interval_ms",
                "expected u64",
            ),
            (
                "[vehicle]\nlink = \"serial:/dev/x:123\"\n",
                "vehicle.link",
                "baud rate 123",
            ),
            (
                "[vehicle]\nlnk = \"x\"\n",
                "vehicle.lnk",
                "unknown field `lnk`",
            ),
            // Found by the fuzzer (issue 21): 0 made every value stale on arrival.
            (
                "[vehicle]\nstale_after_ms = 0\n",
                "vehicle.stale_after_ms",
                "must be 100..=60000 ms, got 0",
            ),
            (
                "[vehicle]\nheartbeat_timeout_ms = 0\n",
                "vehicle.heartbeat_timeout_ms",
                "must be 100..=60000 ms, got 0",
            ),
            (
                "[vehicle]\ntelemetry_rate_hz = 1000.0\n",
                "vehicle.telemetry_rate_hz",
                "0.1..=100",
            ),
            (
                "[vehicle]\nsystem_id = 300\n",
                "vehicle.system_id",
                "invalid value",
            ),
            ("[mqtt]\nenabled = true\n", "mqtt.ca_cert_path", "required"),
            ("[mcp]\nserver_name = \"a/+/b\"\n", "mcp.server_name", "`+`"),
            ("[mcp]\nserver_id = \"a/b\"\n", "mcp.server_id", "`/`"),
            (
                "[mcp]\npanic_topic_root = \"$mcp-server/panic\"\n",
                "mcp.panic_topic_root",
                "reserved for server control topics",
            ),
            (
                "[mcp]\npanic_topic_root = \"estop/#\"\n",
                "mcp.panic_topic_root",
                "`+` or `#`",
            ),
            (
                "[mcp]\nsessions_reserved_admin = 64\n",
                "mcp.sessions_reserved_admin",
                "below mcp.sessions_max",
            ),
            (
                "[mcp]\nwaits_concurrent_max = 0\n",
                "mcp.waits_concurrent_max",
                "at least 1",
            ),
            (
                "[[auth.broker_identity]]\nclient_id = \"a/b\"\nsubject = \"s\"\nrole = \"OPERATOR\"\n",
                "auth.broker_identity",
                "contains '/'",
            ),
            (
                "[[auth.broker_identity]]\nclient_id = \"gcs\"\nsubject = \"s\"\nrole = \"SYSTEM\"\n",
                "auth.broker_identity",
                "SYSTEM is never given",
            ),
            (
                "[[auth.broker_identity]]\nclient_id = \"gcs\"\nsubject = \"s\"\nrole = \"pilot\"\n",
                "auth.broker_identity[0].role",
                "unknown variant",
            ),
            (
                "[estop]\ndanger_kill_action = \"explode\"\n",
                "estop.danger_kill_action",
                "unknown variant",
            ),
            (
                "[estop]\nresend_interval_ms = 10\n",
                "estop.resend_interval_ms",
                "50..=2000",
            ),
            (
                "[failsafe]\nground_link_timeout_s = 0.2\n",
                "failsafe.ground_link_timeout_s",
                "at least 1 s",
            ),
            (
                "[failsafe]\nground_loss_action = \"hover\"\n",
                "failsafe.ground_loss_action",
                "unknown variant",
            ),
            (
                "[camera]\nsource = \"rtsp://x\"\n",
                "camera.source",
                "unknown camera source",
            ),
            (
                "[camera]\nenabled = true\nimage_bytes_max = 250000\n",
                "camera.image_bytes_max",
                "fits in mcp.message_bytes_max (262144)",
            ),
            (
                "[mcp]\nmessage_bytes_max = 65536\n[camera]\nenabled = true\n",
                "camera.image_bytes_max",
                "must be 1024..=43008",
            ),
        ];
        for (text, key, needle) in cases {
            let error = parse(text).unwrap_err();
            let shown = error.to_string();
            assert!(shown.starts_with("test.toml: "), "{shown}");
            assert_eq!(error.key.as_deref(), Some(key), "{shown}");
            assert!(shown.contains(needle), "{text:?}: {shown}");
            assert!(!shown.contains('\n'), "one line: {shown}");
        }
    }

    #[test]
    fn link_trust_keys_parse_and_say_what_is_wrong() {
        use crate::link::signing::SigningMode;
        let config = Config::parse_with_credentials(
            Path::new("/etc/fc/drone.toml"),
            "[vehicle]\nlink = \"udpin:0.0.0.0:14550\"\npinned_peer = \"192.168.144.10:14550\"\n\
             [vehicle.signing]\nmode = \"required\"\nkey_path = \"credential:mavlink.key\"\n\
             timestamp_path = \"state/ts\"\n",
            Some(Path::new("/run/credentials/fc.service")),
        )
        .unwrap();
        let v = &config.vehicle;
        assert_eq!(v.signing.mode, SigningMode::Required);
        assert_eq!(
            v.signing.key_path.as_deref(),
            Some(Path::new("/run/credentials/fc.service/mavlink.key"))
        );
        assert_eq!(
            v.signing.resolved_timestamp_path(),
            Path::new("/etc/fc/state/ts")
        );
        assert_eq!(v.pinned_peer.unwrap().to_string(), "192.168.144.10:14550");
        // Off by default, with the timestamp in the state directory.
        let default = parse("").unwrap().vehicle;
        assert_eq!(default.signing.mode, SigningMode::Off);
        assert!(default.pinned_peer.is_none());
        assert!(
            default
                .signing
                .resolved_timestamp_path()
                .ends_with(SIGNING_TIMESTAMP_NAME)
        );

        let cases = [
            (
                "[vehicle]\nlink = \"serial:/dev/ttyAMA0:921600\"\npinned_peer = \"10.0.0.2\"\n",
                "vehicle.pinned_peer",
                "only pin the peer of a listening link",
            ),
            (
                "[vehicle]\nlink = \"udpin:0.0.0.0:14550\"\npinned_peer = \"drone.local\"\n",
                "vehicle.pinned_peer",
                "not an IP address",
            ),
            (
                "[vehicle.signing]\nmode = \"required\"\n",
                "vehicle.signing.key_path",
                "signing keygen",
            ),
            (
                "[vehicle.signing]\nkey_path = \"k\"\n",
                "vehicle.signing.mode",
                "mode is `off`",
            ),
            (
                "[vehicle.signing]\nmode = \"always\"\n",
                "vehicle.signing.mode",
                "unknown variant",
            ),
            (
                "[vehicle.signing]\nmode = \"sign\"\nkey = \"00ff\"\n",
                "vehicle.signing",
                "unknown field `key`",
            ),
            (
                "[vehicle.signing]\nmode = \"sign\"\nkey_path = \"credential:k\"\n",
                "vehicle.signing.key_path",
                "CREDENTIALS_DIRECTORY",
            ),
        ];
        for (text, key, needle) in cases {
            let error =
                Config::parse_with_credentials(Path::new("test.toml"), text, None).unwrap_err();
            let shown = error.to_string();
            assert!(
                error.key.as_deref().is_some_and(|k| k.starts_with(key)),
                "{text:?}: {shown}"
            );
            assert!(shown.contains(needle), "{text:?}: {shown}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let text = "[mqtt]\nca_cert_path = \"certs/ca.pem\"\nclient_key_path = \"/abs/key.pem\"\n";
        let config = Config::parse(Path::new("/etc/fc/drone.toml"), text).unwrap();
        assert_eq!(
            config.mqtt.ca_cert_path.unwrap(),
            Path::new("/etc/fc/certs/ca.pem")
        );
        assert_eq!(
            config.mqtt.client_key_path.unwrap(),
            Path::new("/abs/key.pem")
        );
    }

    #[test]
    fn camera_sources_parse_and_print_back() {
        for text in [
            "synthetic",
            "tcp:127.0.0.1:5000",
            "http://cam.local:8080/stream",
            "v4l2:/dev/video0",
        ] {
            let source: CameraSource = text.parse().unwrap();
            assert_eq!(source.to_string(), text);
        }
        assert_eq!(
            "http://cam".parse::<CameraSource>().unwrap(),
            CameraSource::Http {
                host: "cam".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert!("tcp:host".parse::<CameraSource>().is_err());
        let config = Config::parse(
            Path::new("/etc/fc/drone.toml"),
            "[camera]\ncaptures_dir = \"c\"\n",
        )
        .unwrap();
        assert_eq!(config.camera.captures_dir, Path::new("/etc/fc/c"));
    }

    #[test]
    fn credential_paths_resolve_in_the_credentials_directory_or_say_what_is_missing() {
        let text = "[mqtt]\nclient_key_path = \"credential:mqtt-client-key.pem\"\n";
        // MQTT off: the credential is not needed, so its absence is no error.
        assert!(Config::parse_with_credentials(Path::new("a.toml"), text, None).is_ok());
        let text = "[mqtt]\nenabled = true\nca_cert_path = \"ca.pem\"\nclient_cert_path = \"c.pem\"\n\
                    client_key_path = \"credential:mqtt-client-key.pem\"\n";
        let file = Path::new("/etc/flight-companion/flight-companion.toml");
        let config = Config::parse_with_credentials(
            file,
            text,
            Some(Path::new("/run/credentials/flight-companion.service")),
        )
        .unwrap();
        assert_eq!(
            config.mqtt.client_key_path.unwrap(),
            Path::new("/run/credentials/flight-companion.service/mqtt-client-key.pem")
        );
        let error = Config::parse_with_credentials(file, text, None).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("mqtt.client_key_path"));
        let shown = error.to_string();
        assert!(shown.contains("CREDENTIALS_DIRECTORY"), "{shown}");
        assert!(
            shown.contains("LoadCredential=mqtt-client-key.pem:"),
            "{shown}"
        );
        let escape = text.replace("mqtt-client-key.pem", "../../etc/shadow");
        let error =
            Config::parse_with_credentials(file, &escape, Some(Path::new("/run/c"))).unwrap_err();
        assert!(error.to_string().contains("one credential"), "{error}");
    }

    #[test]
    fn the_default_estop_socket_is_in_a_directory_the_user_owns() {
        let env = |runtime: Option<&str>, xdg: Option<&str>, uid| RuntimeEnv {
            runtime_directory: runtime.map(Into::into),
            xdg_runtime_dir: xdg.map(Into::into),
            uid,
        };
        let cases = [
            // systemd's RuntimeDirectory= wins, first of several.
            (
                env(
                    Some("/run/flight-companion:/run/other"),
                    Some("/run/user/1000"),
                    998,
                ),
                "/run/flight-companion/estop.sock",
            ),
            // A normal user in a login session.
            (
                env(None, Some("/run/user/1000"), 1000),
                "/run/user/1000/flight-companion/estop.sock",
            ),
            // A relative XDG_RUNTIME_DIR is ignored (XDG: must be absolute).
            (
                env(None, Some("run/user"), 1000),
                &format!(
                    "{}/flight-companion-1000/estop.sock",
                    std::env::temp_dir().display()
                ),
            ),
            (env(None, None, 0), "/run/flight-companion/estop.sock"),
            (
                env(None, None, 1001),
                &format!(
                    "{}/flight-companion-1001/estop.sock",
                    std::env::temp_dir().display()
                ),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(default_estop_socket_path(&e), PathBuf::from(want), "{e:?}");
        }
        // `flight-companion estop` also looks where the system service listens.
        let c = EstopConfig::default().socket_candidates();
        assert_eq!(
            c.last(),
            Some(&PathBuf::from(SERVICE_ESTOP_SOCKET)),
            "{c:?}"
        );
        let explicit = EstopConfig {
            socket_path: Some("/x/e.sock".into()),
            ..EstopConfig::default()
        };
        assert_eq!(
            explicit.socket_candidates(),
            vec![PathBuf::from("/x/e.sock")]
        );
        let disabled = EstopConfig {
            socket_path: Some("".into()),
            ..EstopConfig::default()
        };
        assert!(disabled.socket_candidates().is_empty());
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let error = parse("[vehicle\nlink = 1\n").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    #[test]
    fn ground_station_endpoints_parse_and_bad_ones_say_why() {
        let ok = parse(
            "[[gcs_endpoint]]\nname = \"qgc\"\nlink = \"udpin:0.0.0.0:14550\"\nrole = \"gcs\"\n\
             authority = \"ADMIN\"\n\n[[gcs_endpoint]]\nname = \"watch\"\n\
             link = \"udpout:10.0.0.2:14550\"\n\n[gcs]\ntlog_path = \"flight.tlog\"\n",
        )
        .unwrap();
        assert_eq!(ok.gcs_endpoint.len(), 2);
        assert_eq!(ok.gcs_endpoint[0].role, GcsRole::Gcs);
        assert_eq!(ok.gcs_endpoint[0].authority(), crate::role::Role::Admin);
        assert_eq!(
            ok.gcs_endpoint[1].role,
            GcsRole::Monitor,
            "monitor is the default"
        );
        assert_eq!(ok.gcs.tlog_path, Some(PathBuf::from("flight.tlog")));
        let cases = [
            ("name = \"a b\"\nlink = \"udpin:0.0.0.0:1\"", "A-Za-z0-9_-"),
            ("name = \"x\"\nlink = \"tcpout:10.0.0.2:5760\"", "use tcpin"),
            (
                "name = \"x\"\nlink = \"udpin:0.0.0.0:1\"\nauthority = \"ADMIN\"",
                "a monitor takes no commands",
            ),
            (
                "name = \"x\"\nlink = \"udpin:0.0.0.0:1\"\nrole = \"gcs\"\nauthority = \"SYSTEM\"",
                "READ_ONLY, OPERATOR or ADMIN",
            ),
            (
                "name = \"x\"\nlink = \"udpin:0.0.0.0:1\"\nrole = \"pilot\"",
                "monitor",
            ),
            ("name = \"x\"\nlink = \"udp:0.0.0.0:1\"", "udpin"),
            ("name = \"x\"", "link"),
        ];
        for (body, want) in cases {
            let error = parse(&format!("[[gcs_endpoint]]\n{body}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(want), "{body}: {error}");
        }
        let twice = "[[gcs_endpoint]]\nname = \"x\"\nlink = \"udpin:0.0.0.0:1\"\n\
                     [[gcs_endpoint]]\nname = \"x\"\nlink = \"udpin:0.0.0.0:2\"\n";
        assert!(parse(twice).unwrap_err().to_string().contains("unique"));
        let clash = "[vehicle]\nlink = \"udpin:0.0.0.0:14550\"\n[[gcs_endpoint]]\nname = \"x\"\n\
                     link = \"udpin:0.0.0.0:14550\"\n";
        assert!(parse(clash).unwrap_err().to_string().contains("already"));
    }
}

// What the configuration names of other parts (the audit log, tokens, the e-stop socket,
// certificates): owned here, re-exported at their old paths, so that `config` imports none
// of the shells that use it.

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// `fdatasync` after every record: survives power loss, costs a flash write per call.
    Always,
    /// At most every `fsync_interval_ms`: a power cut can lose that much; kill -9 loses nothing.
    Interval,
    /// Leave it to the kernel: a power cut can lose ~30 s; kill -9 loses nothing.
    Never,
}

/// The signature algorithms a trusted key may be pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlg {
    /// Ed25519 (`EdDSA` in JOSE terms).
    #[serde(rename = "EdDSA", alias = "eddsa", alias = "ed25519")]
    EdDsa,
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "ES256", alias = "es256")]
    Es256,
}

impl KeyAlg {
    /// The JOSE name (`EdDSA`, `ES256`).
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::EdDsa => "EdDSA",
            KeyAlg::Es256 => "ES256",
        }
    }
}

/// The topic root of audit checkpoints (outside the MCP transport's `$mcp-*` namespaces).
pub const AUDIT_TOPIC_ROOT: &str = "flight-companion/audit";

/// Whether `name` can be a checkpoint origin and note key name: non-empty, no spaces, no
/// `+`, no control characters.
pub fn origin_is_valid(name: &str) -> bool {
    signed_note::is_key_name_valid(name) && !name.chars().any(char::is_control)
}

/// Longest path a Unix socket can be bound at: `sun_path` is 108 bytes with the final NUL.
pub const SOCKET_PATH_BYTES_MAX: usize = 107;

/// Longest identity name (a CN, an MQTT client id, a topic level).
pub const NAME_CHARS_MAX: usize = 64;

/// A name is usable as a certificate identity: 1 to 64 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with `.` or `-`. No `/`, `+`, `#` (they would change a topic's levels or
/// turn an ACL substitution into a wildcard), no `$`, spaces or control characters.
pub fn valid_identity_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > NAME_CHARS_MAX {
        return Err(format!(
            "an identity name has 1 to {NAME_CHARS_MAX} characters; got {}",
            name.chars().count()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{}` contains {c:?}: an identity name may only use letters, digits, `.`, `_` and `-` \
             (it becomes an MQTT client id and a topic level)",
            name.escape_debug()
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err(format!("`{name}` must not start with `.` or `-`"));
    }
    Ok(())
}
