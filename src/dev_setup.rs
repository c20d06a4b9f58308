//! `flight-companion dev-setup DIR`: everything a local trial needs to run the daemon, a
//! Mosquitto broker with mutual TLS and a ground client on one machine.
//!
//! Writes a CA and one certificate per identity (`cert`: the broker, the drone, each ground
//! user or station of `--ground-user`), a CRL, `mosquitto.conf`, `acl`, `drone.toml` (a
//! daemon `Config`) and `ground.toml` (the ground bridge's file: `[mqtt]` with the daemon's
//! `MqttConfig` keys, `[ground]` with optional `server_name` and `client_id`). Keys are 0600
//! under a 0700 `certs/` directory; `flight-companion cert issue|revoke` adds and revokes
//! ground identities later.
//!
//! Identities are what the broker authenticated: the certificate CN is the MQTT user name
//! (`use_identity_as_username`) **and** the client id (`use_username_as_clientid`: whatever id
//! a client asks for, the broker uses its CN, so no one can take another's id or put `/` in
//! it). The ACL binds every client's own topics to that identity (`%u`): its RPC topics,
//! its presence and capability, its panic topic; only `drone-1` may publish server presence,
//! capability and the server side of RPC topics for server-id `drone-1`. The drone maps each
//! ground identity to a subject and a role (`[[auth.broker_identity]]`), so a stock
//! MCP-over-MQTT client with a dev certificate gets its role without a token.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::link::endpoint::Endpoint;

/// `flight-companion cert`: certificates of ground users and stations.
#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Issue a certificate for a ground user or station: `DIR/certs/clients/NAME.pem|key`
    /// (CN and MQTT client id `NAME`). With `--role`, also map it in `DIR/drone.toml`
    /// (`[[auth.broker_identity]]`; restart the daemon to apply).
    Issue {
        /// The dev-setup directory (with `certs/ca.key`).
        #[arg(long)]
        dir: PathBuf,
        /// The identity: letters, digits, `.`, `_`, `-` (1 to 64).
        name: String,
        /// Lifetime in days (1 to 825).
        #[arg(long, default_value_t = crate::cert::CLIENT_DAYS_DEFAULT)]
        days: u32,
        /// PUBLIC, READ_ONLY, OPERATOR or ADMIN: what the drone gives this identity when it
        /// sends no token.
        #[arg(long)]
        role: Option<String>,
        /// The subject the drone names it by (default: NAME).
        #[arg(long)]
        subject: Option<String>,
    },
    /// Revoke every certificate of NAME and re-sign `DIR/certs/crl.pem`. Mosquitto rereads
    /// the CRL on SIGHUP (new connections refused); a restart also ends an open connection.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        name: String,
    },
    /// List the certificates issued, with their serial, expiry and revocation.
    List {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Re-sign the CRL with a fresh next-update date (a broker refuses everyone once its CRL
    /// has expired); reload the broker after.
    Crl {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// The drone's certificate CN, MQTT user name and server-id in the generated files.
pub const DRONE_IDENTITY: &str = "drone-1";
/// The default ground identity (certificate CN, MQTT user name and client id) when no
/// `--ground-user` is given; `certs/ground.pem|key` point to the first ground identity.
pub const GROUND_IDENTITY: &str = "ground-1";
/// The role the drone gives a `--ground-user` without one.
pub const GROUND_ROLE_DEFAULT: crate::role::Role = crate::role::Role::Operator;
/// Room above `mcp.message_bytes_max` in the broker's `max_packet_size` for the MQTT header,
/// the topic and the user properties of a message of the largest accepted payload.
pub const PACKET_HEADROOM_BYTES: usize = 16 * 1024;

/// The simulator's default home (`flight-companion sim --home`), around which the dev
/// envelope is drawn.
pub const SIM_HOME_LAT_DEG: f64 = 47.397742;
pub const SIM_HOME_LON_DEG: f64 = 8.545594;
/// The simulator's default home altitude above mean sea level.
pub const SIM_HOME_ALT_M: f64 = 488.0;
/// Half the side of the dev keep-in square around home.
pub const FIELD_HALF_SIDE_M: f64 = 150.0;
/// The dev keep-out circle ("tower"): its centre east of home and its radius.
pub const TOWER_EAST_M: f64 = 60.0;
pub const TOWER_RADIUS_M: f64 = 15.0;
/// The dev ceiling above home.
pub const CEILING_M: f64 = 60.0;

#[derive(Debug, Clone, clap::Args)]
pub struct DevSetupArgs {
    /// Directory to write (created if missing; refused if non-empty unless --force).
    pub dir: PathBuf,
    /// Port of the broker's mTLS listener (bound to 127.0.0.1 only).
    #[arg(long, default_value_t = 8883)]
    pub broker_port: u16,
    /// Autopilot endpoint written to drone.toml (default: the built-in simulator's).
    #[arg(long, default_value = "tcpout:127.0.0.1:5760")]
    pub vehicle_link: Endpoint,
    /// Overwrite the files of an existing non-empty directory.
    #[arg(long)]
    pub force: bool,
    /// A ground user or station: `NAME` or `NAME:ROLE` (PUBLIC, READ_ONLY, OPERATOR, ADMIN;
    /// default OPERATOR). Repeatable; default `ground-1:OPERATOR`. Each gets a certificate
    /// `certs/clients/NAME.pem|key` (CN and client id `NAME`) and an
    /// `[[auth.broker_identity]]` entry in drone.toml.
    #[arg(long = "ground-user", value_parser = parse_ground_user)]
    pub ground_users: Vec<GroundUser>,
    /// Draw the dev envelope around this home, `LAT,LON,ALT_M` (where the vehicle or SITL
    /// takes off), instead of the built-in simulator's.
    #[arg(long, value_name = "LAT,LON,ALT_M", value_parser = crate::sim::args::parse_home, allow_hyphen_values = true)]
    pub home: Option<(f64, f64, f64)>,
}

/// One `--ground-user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroundUser {
    pub name: String,
    pub role: crate::role::Role,
}

/// `NAME` or `NAME:ROLE`.
pub fn parse_ground_user(text: &str) -> Result<GroundUser, String> {
    let (name, role) = match text.split_once(':') {
        Some((name, role)) => (
            name,
            crate::role::Role::from_name(role).ok_or_else(|| {
                format!("`{role}` is not a role: PUBLIC, READ_ONLY, OPERATOR or ADMIN")
            })?,
        ),
        None => (text, GROUND_ROLE_DEFAULT),
    };
    crate::cert::valid_identity_name(name)?;
    if name == DRONE_IDENTITY {
        return Err(format!("`{name}` is the drone's identity"));
    }
    if role == crate::role::Role::System {
        return Err("SYSTEM is never given to a ground identity".into());
    }
    Ok(GroundUser {
        name: name.to_owned(),
        role,
    })
}

impl DevSetupArgs {
    /// The ground users, with the default when none was given.
    pub fn ground_users(&self) -> Vec<GroundUser> {
        if self.ground_users.is_empty() {
            vec![GroundUser {
                name: GROUND_IDENTITY.into(),
                role: GROUND_ROLE_DEFAULT,
            }]
        } else {
            self.ground_users.clone()
        }
    }
}

/// The home `args` draws the envelope around: `--home`, or the simulator's.
fn home_of(args: &DevSetupArgs) -> (f64, f64, f64) {
    args.home
        .unwrap_or((SIM_HOME_LAT_DEG, SIM_HOME_LON_DEG, SIM_HOME_ALT_M))
}

#[derive(Debug, thiserror::Error)]
pub enum DevSetupError {
    #[error(
        "{0} exists and is not empty; pass --force to overwrite its files, or choose another directory"
    )]
    NotEmpty(PathBuf),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("certificates: {0}")]
    Certificate(#[from] crate::cert::CertError),
    #[error("{0}")]
    Other(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevSetupError + '_ {
    move |e| DevSetupError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Runs the subcommand and prints what was written and how to use it.
pub fn run(args: &DevSetupArgs) -> Result<(), DevSetupError> {
    let dir = write(args)?;
    let (lat, lon, alt) = home_of(args);
    println!("dev-setup: wrote {}", dir.display());
    println!(
        "dev-setup: envelope: a {:.0} m square `field` around {lat}, {lon} (check it: flight-companion check-config {})",
        2.0 * FIELD_HALF_SIDE_M,
        dir.join("drone.toml").display()
    );
    if args.home.is_some() {
        println!(
            "dev-setup: simulator at that home: flight-companion sim --home {lat},{lon},{alt}"
        );
    }
    println!(
        "dev-setup: broker: mosquitto -c {}",
        dir.join("mosquitto.conf").display()
    );
    println!(
        "dev-setup: drone:  flight-companion run --config {}",
        dir.join("drone.toml").display()
    );
    println!(
        "dev-setup: ground: flight-companion ground --config {}",
        dir.join("ground.toml").display()
    );
    Ok(())
}

/// Writes every file; returns the absolute directory.
pub fn write(args: &DevSetupArgs) -> Result<PathBuf, DevSetupError> {
    let dir = &args.dir;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() && !args.force {
            return Err(DevSetupError::NotEmpty(dir.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
    let users = args.ground_users();
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = users.iter().find(|u| !names.insert(u.name.clone())) {
        return Err(DevSetupError::Other(format!(
            "--ground-user {} is given twice",
            dup.name
        )));
    }
    let certs = dir.join("certs");
    if certs.exists() {
        // --force: a new CA; the old certificates would not verify against it.
        std::fs::remove_dir_all(&certs).map_err(io(&certs))?;
    }
    let pki = crate::cert::Pki::new(&certs);
    let now_unix_s = i64::try_from(crate::auth::shell::unix_s_now()).unwrap_or(i64::MAX);
    pki.create(now_unix_s)?;
    // The broker (server auth, SAN localhost and 127.0.0.1), the drone and each ground
    // identity (client auth, CN = identity).
    let service = |name, kind, sans: Vec<String>| crate::cert::IssueRequest {
        name,
        kind,
        sans,
        days: crate::cert::SERVICE_DAYS,
        now_unix_s,
    };
    pki.issue(&service(
        "localhost",
        crate::cert::Kind::Broker,
        vec!["localhost".into(), "127.0.0.1".into()],
    ))?;
    pki.issue(&service(DRONE_IDENTITY, crate::cert::Kind::Drone, vec![]))?;
    for user in &users {
        pki.issue(&crate::cert::IssueRequest {
            name: &user.name,
            kind: crate::cert::Kind::Client,
            sans: vec![],
            days: crate::cert::CLIENT_DAYS_DEFAULT,
            now_unix_s,
        })?;
    }
    // `certs/ground.pem|key`: the first ground identity, the one ground.toml uses.
    let (first_cert, first_key) = pki.paths(&users[0].name, crate::cert::Kind::Client);
    for (link, target) in [("ground.pem", first_cert), ("ground.key", first_key)] {
        let link = certs.join(link);
        let target = target.strip_prefix(&certs).unwrap_or(&target).to_owned();
        std::os::unix::fs::symlink(&target, &link).map_err(io(&link))?;
    }

    let acl_path = dir.join("acl");
    write_file(&acl_path, acl().as_bytes(), 0o644)?;
    let running_as_root = std::fs::metadata(&dir)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let message_bytes_max = crate::config::McpConfig::default().message_bytes_max;
    write_file(
        &dir.join("mosquitto.conf"),
        mosquitto_conf(&dir, args.broker_port, running_as_root, message_bytes_max).as_bytes(),
        0o644,
    )?;
    write_tokens(&dir)?;
    write_audit_key(&dir)?;
    write_file(
        &dir.join("drone.toml"),
        drone_toml(args.broker_port, &args.vehicle_link, &users, home_of(args)).as_bytes(),
        0o644,
    )?;
    write_file(
        &dir.join("ground.toml"),
        ground_toml(args.broker_port).as_bytes(),
        0o644,
    )?;
    Ok(dir)
}

/// `flight-companion cert ...` on a dev-setup directory; returns the lines to print.
pub fn cert_command(command: CertCommand) -> Result<Vec<String>, DevSetupError> {
    use crate::cert::{IssueRequest, Kind, Pki};
    let now_unix_s = i64::try_from(crate::auth::shell::unix_s_now()).unwrap_or(i64::MAX);
    let pki = |dir: &Path| Pki::new(dir.join("certs"));
    match command {
        CertCommand::Issue {
            dir,
            name,
            days,
            role,
            subject,
        } => {
            let role = role
                .map(|r| parse_ground_user(&format!("{name}:{r}")).map(|u| u.role))
                .transpose()
                .map_err(DevSetupError::Other)?;
            if name == DRONE_IDENTITY {
                return Err(DevSetupError::Other(format!(
                    "`{name}` is the drone's identity"
                )));
            }
            let entry = pki(&dir).issue(&IssueRequest {
                name: &name,
                kind: Kind::Client,
                sans: vec![],
                days,
                now_unix_s,
            })?;
            let mut lines = vec![
                format!("certificate: {}", entry.cert_path.display()),
                format!("key:         {}", entry.key_path.display()),
                format!(
                    "serial {}, valid {days} days; the MQTT client id is `{name}` (the broker uses the CN)",
                    entry.serial
                ),
            ];
            if let Some(role) = role {
                let drone = dir.join("drone.toml");
                let subject = subject.unwrap_or_else(|| name.clone());
                let mut text = std::fs::read_to_string(&drone).map_err(io(&drone))?;
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push('\n');
                text.push_str(&broker_identity_toml(&name, &subject, role));
                // Checked before it is written: a file the daemon would refuse is never left.
                crate::config::Config::parse(&drone, &text)
                    .map_err(|e| DevSetupError::Other(e.to_string()))?;
                crate::cert::write_atomic(&drone, text.as_bytes(), 0o644)?;
                lines.push(format!(
                    "{}: `{name}` is {subject} with role {role} when it sends no token; restart the daemon to apply",
                    drone.display()
                ));
            }
            Ok(lines)
        }
        CertCommand::Revoke { dir, name } => {
            let revoked = pki(&dir).revoke(&name, now_unix_s)?;
            let mut lines: Vec<String> = revoked
                .iter()
                .map(|e| format!("revoked {} (serial {})", e.name, e.serial))
                .collect();
            lines.push(format!(
                "wrote {}; reload the broker to refuse its new connections (Mosquitto rereads its \
                 crlfile on SIGHUP: `kill -HUP PID` or `systemctl reload mosquitto`), restart it to \
                 also end an open one, and remove its [[auth.broker_identity]] entry from drone.toml",
                pki(&dir).crl_path().display()
            ));
            Ok(lines)
        }
        CertCommand::List { dir } => Ok(pki(&dir)
            .list()?
            .into_iter()
            .map(|e| {
                let state = match e.revoked_unix_s {
                    Some(t) => format!("revoked at {t}"),
                    None if e.not_after_unix_s <= now_unix_s => "expired".into(),
                    None => "valid".into(),
                };
                format!(
                    "{:<24} {:<7} serial {} until {} ({state}) {}",
                    e.name,
                    format!("{:?}", e.kind).to_lowercase(),
                    e.serial,
                    e.not_after_unix_s,
                    e.cert_path.display()
                )
            })
            .collect()),
        CertCommand::Crl { dir } => {
            pki(&dir).write_crl(now_unix_s)?;
            Ok(vec![format!(
                "wrote {}, valid {} days; reload the broker (SIGHUP) to apply",
                pki(&dir).crl_path().display(),
                crate::cert::CRL_DAYS
            )])
        }
    }
}

/// The roles a ground client may hold, each with a dev token `tokens/<role>.jwt`.
pub const TOKEN_ROLES: [crate::role::Role; 4] = [
    crate::role::Role::Public,
    crate::role::Role::ReadOnly,
    crate::role::Role::Operator,
    crate::role::Role::Admin,
];
/// Key id of the dev signing key (`keys/ground-key.key`, `keys/ground-key.pub`).
pub const DEV_KID: &str = "ground-key";
/// Lifetime of the dev tokens.
pub const DEV_TOKEN_TTL_S: u64 = 30 * 86_400;

/// An Ed25519 signing key and one 30-day token per ground role, for the default server name.
fn write_tokens(dir: &Path) -> Result<(), DevSetupError> {
    use crate::auth::shell;
    let keys = dir.join("keys");
    let tokens = dir.join("tokens");
    for d in [&keys, &tokens, &dir.join("state")] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let (key, _) = shell::keygen_to(&keys, crate::auth::token::KeyAlg::EdDsa, DEV_KID)
        .map_err(|e| DevSetupError::Other(format!("dev key: {e}")))?;
    let audience = crate::config::McpConfig::default().server_name;
    for role in TOKEN_ROLES {
        let name = role.name().to_lowercase();
        let token = shell::issue_from_file(&shell::IssueRequest {
            key_path: &key,
            kid: Some(DEV_KID),
            role,
            subject: &format!("dev-{name}"),
            audience: &audience,
            ttl: std::time::Duration::from_secs(DEV_TOKEN_TTL_S),
            jti: Some(format!("dev-{name}")),
            now_unix_s: shell::unix_s_now(),
        })
        .map_err(|e| DevSetupError::Other(format!("dev token: {e}")))?;
        write_file(&tokens.join(format!("{name}.jwt")), token.as_bytes(), 0o600)?;
    }
    Ok(())
}

/// The drone's audit signing key (`keys/audit-signing-key.pem`, 0600: in production a
/// systemd credential) and its verifier key for the ground's witness (`keys/audit.vkey`).
pub const AUDIT_KEY: &str = "keys/audit-signing-key.pem";
pub const AUDIT_VKEY: &str = "keys/audit.vkey";

fn write_audit_key(dir: &Path) -> Result<(), DevSetupError> {
    let path = dir.join(AUDIT_KEY);
    if path.exists() {
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    let key =
        crate::audit::checkpoint::generate_signing_key(&path).map_err(DevSetupError::Other)?;
    let config = crate::config::Config::default();
    let origin = config.audit.resolved_origin(&config.mcp.server_name);
    let vkey = crate::audit::checkpoint::AuditKey::new(key, &origin)
        .map_err(DevSetupError::Other)?
        .verifier_key();
    write_file(&dir.join(AUDIT_VKEY), format!("{vkey}\n").as_bytes(), 0o644)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DevSetupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevSetupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Create with the final mode so a key is never readable by others, even briefly.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents).map_err(io(path))?;
    // An existing file (--force) keeps its old mode through open(): set it explicitly.
    set_mode(path, mode)
}

fn mosquitto_conf(
    dir: &Path,
    port: u16,
    running_as_root: bool,
    message_bytes_max: usize,
) -> String {
    let certs = dir.join("certs");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `flight-companion dev-setup` for a local trial: mTLS only, loopback only."
    );
    let _ = writeln!(
        s,
        "# Run: mosquitto -c {}",
        dir.join("mosquitto.conf").display()
    );
    if running_as_root {
        let _ = writeln!(
            s,
            "# dev-setup ran as root: keep root so the broker can read the 0600 keys\n\
             # (never run a production broker as root).\nuser root"
        );
    }
    let _ = writeln!(s, "per_listener_settings false");
    let _ = writeln!(s, "allow_anonymous false");
    let _ = writeln!(s, "persistence false");
    let _ = writeln!(s, "log_dest stderr");
    let _ = writeln!(s, "log_type error");
    let _ = writeln!(s, "log_type warning");
    let _ = writeln!(s, "log_type notice");
    let _ = writeln!(s, "log_type information");
    let _ = writeln!(s, "acl_file {}", dir.join("acl").display());
    let _ = writeln!(
        s,
        "# The drone's mcp.message_bytes_max ({message_bytes_max}) plus {PACKET_HEADROOM_BYTES} bytes for the\n\
         # MQTT header, topic and properties: larger packets are refused by the broker."
    );
    let _ = writeln!(
        s,
        "max_packet_size {}",
        message_bytes_max + PACKET_HEADROOM_BYTES
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "listener {port} 127.0.0.1");
    let _ = writeln!(s, "protocol mqtt");
    let _ = writeln!(s, "cafile {}", certs.join("ca.pem").display());
    let _ = writeln!(s, "certfile {}", certs.join("broker.pem").display());
    let _ = writeln!(s, "keyfile {}", certs.join("broker.key").display());
    let _ = writeln!(s, "tls_version tlsv1.2");
    let _ = writeln!(s, "require_certificate true");
    let _ = writeln!(s, "use_identity_as_username true");
    let _ = writeln!(
        s,
        "# The certificate CN is the client id, whatever id a client asks for: nobody can take\n\
         # another client's id (and its topics), and an id never contains `/`, `+` or `#`."
    );
    let _ = writeln!(s, "use_username_as_clientid true");
    let _ = writeln!(
        s,
        "# Revoked certificates (`flight-companion cert revoke`); reread on SIGHUP."
    );
    let _ = writeln!(s, "crlfile {}", certs.join("crl.pem").display());
    let _ = writeln!(
        s,
        "# Nagle's algorithm adds ~40 ms to every request/response round trip."
    );
    let _ = writeln!(s, "set_tcp_nodelay true");
    s
}

/// The panic topic root of the generated configuration (`mcp.panic_topic_root`'s default).
fn panic_root() -> String {
    crate::config::McpConfig::default().panic_topic_root
}

fn acl() -> String {
    let d = DRONE_IDENTITY;
    let name = crate::config::McpConfig::default().server_name;
    let panic = panic_root();
    format!(
        "# Written by `flight-companion dev-setup`. User names are certificate CNs, and with\n\
         # use_username_as_clientid they are the client ids too: `%u` below is the identity the\n\
         # broker authenticated, never a name the client chose.\n\
         #\n\
         # The drone ({d}, server-id {d}) alone publishes its presence, capability and the\n\
         # server side of its RPC topics; it reads its control topic, every client's presence,\n\
         # capability and RPC topics towards it, and its panic topics (the last level is the\n\
         # publisher's identity).\n\
         user {d}\n\
         topic write $mcp-server/presence/{d}/#\n\
         topic write $mcp-server/capability/{d}/#\n\
         topic readwrite $mcp-rpc/+/{d}/#\n\
         topic read $mcp-server/{d}/#\n\
         topic read $mcp-client/presence/#\n\
         topic read $mcp-client/capability/#\n\
         topic read {panic}/{d}/+\n\
         # Its audit checkpoints (outside the MCP transport's namespaces), retained.\n\
         topic write {audit_topic}\n\
         \n\
         # Every identity: the drone's control topic (initialize), server presence and capability.\n\
         # (Mosquitto warns that these patterns have no %u: they are the same for everyone.)\n\
         pattern write $mcp-server/{d}/{name}\n\
         pattern read $mcp-server/presence/#\n\
         pattern read $mcp-server/capability/#\n\
         # Every identity: only its own presence, capability and RPC topics, and its own panic\n\
         # topic, bound to the identity the broker authenticated.\n\
         pattern write $mcp-client/presence/%u\n\
         pattern write $mcp-client/capability/%u\n\
         pattern readwrite $mcp-rpc/%u/#\n\
         pattern write {panic}/+/%u\n\
         # Every identity may read the drones' signed audit checkpoints (`audit witness`).\n\
         pattern read {audit_root}/#\n\
         \n\
         # The benchmarks' bare-MQTT echo (benches/, `hil::bench::ECHO_IDENTITY`; it has a\n\
         # certificate only once a benchmark issues one): two leaf topics the drone never uses.\n\
         user bench-echo\n\
         topic read $mcp-rpc/+/{d}/bench-ping\n\
         topic write $mcp-rpc/+/{d}/bench-pong\n",
        audit_topic = crate::config::AuditConfig::default()
            .resolved_topic(&crate::config::McpConfig::default().server_name),
        audit_root = crate::audit::witness::TOPIC_ROOT,
    )
}

fn drone_toml(port: u16, link: &Endpoint, users: &[GroundUser], home: (f64, f64, f64)) -> String {
    let mut identities = String::new();
    for user in users {
        identities.push_str(&broker_identity_toml(&user.name, &user.name, user.role));
        identities.push('\n');
    }
    format!(
        "# Written by `flight-companion dev-setup`. Paths are relative to this file.\n\
         [vehicle]\n\
         link = \"{link}\"\n\
         # The autopilot's last home, for check-config's warnings about the envelope.\n\
         last_home_path = \"state/last-home.json\"\n\
         \n\
         [mqtt]\n\
         enabled = true\n\
         host = \"localhost\"\n\
         port = {port}\n\
         ca_cert_path = \"certs/ca.pem\"\n\
         client_cert_path = \"certs/drone.pem\"\n\
         client_key_path = \"certs/drone.key\"\n\
         \n\
         [mcp]\n\
         # The broker ACL binds this server-id to the drone's certificate.\n\
         server_id = \"{DRONE_IDENTITY}\"\n\
         \n\
         [auth]\n\
         # Tokens are in tokens/<role>.jwt; `flight-companion token issue --key keys/{DEV_KID}.key` makes more.\n\
         revocation_path = \"state/revoked.json\"\n\
         \n\
         [[auth.keys]]\n\
         kid = \"{DEV_KID}\"\n\
         alg = \"EdDSA\"\n\
         public_key_path = \"keys/{DEV_KID}.pub\"\n\
         \n\
         {identities}\
         [audit]\n\
         dir = \"state/audit\"\n\
         # Signs the log's checkpoints; the ground's witness trusts keys/audit.vkey.\n\
         signing_key_path = \"{AUDIT_KEY}\"\n\
         \n\
         {}",
        dev_envelope(home)
    )
}

/// One `[[auth.broker_identity]]` entry: a client the broker authenticated as `client_id`
/// gets `subject` and `role` when its `initialize` carries no token.
pub fn broker_identity_toml(client_id: &str, subject: &str, role: crate::role::Role) -> String {
    format!(
        "# The broker authenticated this client by its certificate (CN = client id): a stock\n\
         # MCP-over-MQTT client gets this role without a token (a token, when sent, wins).\n\
         [[auth.broker_identity]]\n\
         client_id = \"{client_id}\"\n\
         subject = \"{subject}\"\n\
         role = \"{}\"\n",
        role.name()
    )
}

/// A small field around `home` (the simulator's unless `--home`): a 300 m square keep-in, a
/// keep-out circle 60 m east of home, a 60 m ceiling. Around any other home the envelope is
/// refused when the daemon builds it (home outside the keep-in), so only hold, land and
/// return are accepted until a real envelope is written: the dev default never lets a
/// vehicle fly anywhere but where it was drawn.
fn dev_envelope(home: (f64, f64, f64)) -> String {
    let (home_lat, home_lon, home_alt) = home;
    let at = |north_m: f64, east_m: f64| {
        let (lat, lon) = crate::geodesy::offset_deg(home_lat, home_lon, north_m, east_m);
        format!("[{lat:.7}, {lon:.7}]")
    };
    let h = FIELD_HALF_SIDE_M;
    format!(
        "[envelope]\n\
         # Drawn around the home {home_lat}, {home_lon} ({home_alt} m above sea level); check-config\n\
         # warns when the zones do not fit it or the vehicle's last home.\n\
         # Replace the zones with your own field before flying anything real.\n\
         expected_home_lat_lon_deg = [{home_lat}, {home_lon}]\n\
         altitude_m_max = {CEILING_M:.1}\n\
         distance_from_home_m_max = 250.0\n\
         breach_action = \"land\"\n\
         \n\
         [[envelope.keep_in]]\n\
         name = \"field\"\n\
         polygon_lat_lon_deg = [{}, {}, {}, {}]\n\
         \n\
         [[envelope.keep_out]]\n\
         name = \"tower\"\n\
         center_lat_lon_deg = {}\n\
         radius_m = {TOWER_RADIUS_M:.1}\n",
        at(-h, -h),
        at(-h, h),
        at(h, h),
        at(h, -h),
        at(0.0, TOWER_EAST_M),
    )
}

fn ground_toml(port: u16) -> String {
    format!(
        "# Written by `flight-companion dev-setup`. Paths are relative to this file.\n\
         [mqtt]\n\
         host = \"localhost\"\n\
         port = {port}\n\
         ca_cert_path = \"certs/ca.pem\"\n\
         client_cert_path = \"certs/ground.pem\"\n\
         client_key_path = \"certs/ground.key\"\n\
         \n\
         [ground]\n\
         token_path = \"tokens/operator.jwt\"\n\
         # server_name = \"flight-companion/drone\"\n\
         # The client id is the certificate's CN by default: the broker uses it whatever id\n\
         # is asked for (use_username_as_clientid), and the ACL binds topics to it.\n\
         # client_id = \"{GROUND_IDENTITY}\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::role::Role;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fc-devsetup-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn args(dir: &Path, force: bool) -> DevSetupArgs {
        DevSetupArgs {
            dir: dir.to_owned(),
            broker_port: 18883,
            vehicle_link: Endpoint::default_vehicle(),
            force,
            ground_users: Vec::new(),
            home: None,
        }
    }

    #[test]
    fn writes_a_loadable_drone_config_and_private_keys() {
        let dir = temp_dir("ok");
        let written = write(&args(&dir, false)).unwrap();
        let config = Config::load(&written.join("drone.toml")).unwrap();
        assert!(config.mqtt.enabled);
        assert_eq!(config.mqtt.port, 18883);
        assert_eq!(config.mcp.server_id.as_deref(), Some(DRONE_IDENTITY));
        // A real envelope around the simulator's home, valid as the daemon builds it.
        assert_eq!(config.envelope.keep_in.len(), 1);
        assert_eq!(config.envelope.keep_out.len(), 1);
        let home = crate::safety::GeoPosition {
            latitude_deg: SIM_HOME_LAT_DEG,
            longitude_deg: SIM_HOME_LON_DEG,
            altitude_m: 0.0,
        };
        let envelope = crate::safety::Envelope::new(&config.envelope, home, Some(home)).unwrap();
        assert!((envelope.target_altitude_m_max() - (CEILING_M - 5.0)).abs() < 1e-9);
        // Elsewhere it is refused: the dev field never lets a real vehicle fly.
        let elsewhere = crate::safety::GeoPosition {
            latitude_deg: 52.0,
            ..home
        };
        assert!(
            crate::safety::Envelope::new(&config.envelope, elsewhere, Some(elsewhere)).is_err()
        );
        let key = config.mqtt.client_key_path.clone().unwrap();
        assert!(key.is_absolute() && key.exists(), "{}", key.display());
        // The generated files are usable by the MQTT layer.
        crate::mcp::mqtt::tls_config(&config.mqtt).unwrap();

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&written.join("certs")), 0o700);
        for key in ["broker.key", "drone.key", "ground.key", "ca.key"] {
            assert_eq!(mode(&written.join("certs").join(key)), 0o600, "{key}");
        }
        let conf = std::fs::read_to_string(written.join("mosquitto.conf")).unwrap();
        let packet = config.mcp.message_bytes_max + PACKET_HEADROOM_BYTES;
        for needle in [
            "listener 18883 127.0.0.1",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "set_tcp_nodelay true",
            "allow_anonymous false",
            &format!("max_packet_size {packet}"),
            &format!("crlfile {}", written.join("certs/crl.pem").display()),
        ] {
            assert!(conf.contains(needle), "{needle}: {conf}");
        }
        // The client-id substitution is after the listener (Mosquitto ignores it globally).
        assert!(
            conf.find("use_username_as_clientid").unwrap() > conf.find("listener ").unwrap(),
            "{conf}"
        );
        // Topics are bound to the authenticated identity, never to a chosen client id.
        let acl = std::fs::read_to_string(written.join("acl")).unwrap();
        assert!(!acl.contains("%c"), "{acl}");
        for needle in [
            "pattern readwrite $mcp-rpc/%u/#",
            "pattern write $mcp-client/presence/%u",
            "pattern write flight-companion/estop/+/%u",
            "topic read flight-companion/estop/drone-1/+",
        ] {
            assert!(acl.contains(needle), "{needle}: {acl}");
        }
        // The default ground identity: a certificate with CN ground-1, mapped in drone.toml.
        assert_eq!(
            crate::cert::common_name(&written.join("certs/ground.pem")).unwrap(),
            GROUND_IDENTITY
        );
        assert_eq!(
            config.auth.broker_identity,
            vec![crate::config::BrokerIdentityConfig {
                client_id: GROUND_IDENTITY.into(),
                subject: GROUND_IDENTITY.into(),
                role: GROUND_ROLE_DEFAULT,
            }]
        );
        let ground = std::fs::read_to_string(written.join("ground.toml")).unwrap();
        assert!(ground.contains("[ground]") && ground.contains("certs/ground.key"));
        // The audit signing key (private) and the verifier key the ground's witness trusts,
        // matching the key drone.toml names; the ACL lets each side use the checkpoint topic.
        assert_eq!(mode(&written.join(AUDIT_KEY)), 0o600);
        let signing = config.audit.signing_key_path.clone().unwrap();
        assert_eq!(signing, written.join(AUDIT_KEY));
        let key = crate::audit::checkpoint::load_signing_key(&signing).unwrap();
        let origin = config.audit.resolved_origin(&config.mcp.server_name);
        let vkey = std::fs::read_to_string(written.join(AUDIT_VKEY)).unwrap();
        assert_eq!(
            crate::audit::checkpoint::parse_verifier_keys(&vkey).unwrap(),
            [crate::audit::checkpoint::AuditKey::new(key, &origin)
                .unwrap()
                .verifier_key()]
        );
        let acl = std::fs::read_to_string(written.join("acl")).unwrap();
        let topic = config.audit.resolved_topic(&config.mcp.server_name);
        assert!(acl.contains(&format!("topic write {topic}\n")), "{acl}");
        assert!(
            acl.contains("pattern read flight-companion/audit/#\n"),
            "{acl}"
        );

        // A second run refuses the non-empty directory, and --force overwrites.
        let error = write(&args(&dir, false)).unwrap_err().to_string();
        assert!(error.contains("--force"), "{error}");
        write(&args(&dir, true)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ground_users_get_a_certificate_and_a_role_each_and_more_can_be_issued() {
        use super::CertCommand;
        let dir = temp_dir("users");
        let mut a = args(&dir, false);
        a.ground_users = vec![
            parse_ground_user("alice:admin").unwrap(),
            parse_ground_user("gcs-2").unwrap(),
        ];
        let written = write(&a).unwrap();
        for (name, role) in [("alice", Role::Admin), ("gcs-2", Role::Operator)] {
            let pem = written.join(format!("certs/clients/{name}.pem"));
            assert_eq!(crate::cert::common_name(&pem).unwrap(), name);
            let config = Config::load(&written.join("drone.toml")).unwrap();
            assert!(
                config
                    .auth
                    .broker_identity
                    .iter()
                    .any(|b| b.client_id == name && b.role == role),
                "{name}"
            );
        }
        assert_eq!(
            crate::cert::common_name(&written.join("certs/ground.pem")).unwrap(),
            "alice"
        );
        for bad in ["a/b:OPERATOR", "x:SYSTEM", "x:pilot", "drone-1", "a+"] {
            assert!(parse_ground_user(bad).is_err(), "{bad}");
        }
        // Issue one more later, with a role: drone.toml maps it and still loads.
        let lines = cert_command(CertCommand::Issue {
            dir: written.clone(),
            name: "bob".into(),
            days: 30,
            role: Some("READ_ONLY".into()),
            subject: Some("Bob Smith".into()),
        })
        .unwrap();
        assert!(
            lines.iter().any(|l| l.contains("restart the daemon")),
            "{lines:?}"
        );
        let config = Config::load(&written.join("drone.toml")).unwrap();
        assert!(
            config
                .auth
                .broker_identity
                .iter()
                .any(|b| b.client_id == "bob"
                    && b.subject == "Bob Smith"
                    && b.role == Role::ReadOnly)
        );
        // A bad role leaves drone.toml alone; a revoked name is listed as such.
        assert!(
            cert_command(CertCommand::Issue {
                dir: written.clone(),
                name: "carol".into(),
                days: 30,
                role: Some("SYSTEM".into()),
                subject: None,
            })
            .is_err()
        );
        cert_command(CertCommand::Revoke {
            dir: written.clone(),
            name: "bob".into(),
        })
        .unwrap();
        let listed = cert_command(CertCommand::List {
            dir: written.clone(),
        })
        .unwrap();
        assert!(
            listed
                .iter()
                .any(|l| l.starts_with("bob") && l.contains("revoked")),
            "{listed:?}"
        );
    }

    #[test]
    fn the_dev_envelope_is_drawn_around_the_home_given() {
        let dir = temp_dir("home");
        let canberra = (-35.363261, 149.165230, 584.0);
        let written = write(&DevSetupArgs {
            home: Some(canberra),
            ..args(&dir, false)
        })
        .unwrap();
        let config = Config::load(&written.join("drone.toml")).unwrap();
        assert_eq!(
            config.envelope.expected_home_lat_lon_deg,
            Some([canberra.0, canberra.1])
        );
        assert_eq!(
            config.vehicle.last_home_path,
            Some(written.join("state/last-home.json"))
        );
        let home = crate::safety::GeoPosition {
            latitude_deg: canberra.0,
            longitude_deg: canberra.1,
            altitude_m: 0.0,
        };
        crate::safety::Envelope::new(&config.envelope, home, Some(home)).unwrap();
        let sim_home = crate::safety::GeoPosition {
            latitude_deg: SIM_HOME_LAT_DEG,
            longitude_deg: SIM_HOME_LON_DEG,
            altitude_m: 0.0,
        };
        assert!(crate::safety::Envelope::new(&config.envelope, sim_home, None).is_err());
        assert!(crate::last_home::site_warnings(&config).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
