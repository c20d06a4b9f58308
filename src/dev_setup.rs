//! `flight-companion dev-setup DIR`: everything a local trial needs to run the daemon, a
//! Mosquitto broker with mutual TLS and a ground client on one machine.
//!
//! Writes a CA, broker/drone/ground certificates (rcgen), `mosquitto.conf`, `acl`,
//! `drone.toml` (a daemon `Config`) and `ground.toml` (the ground bridge's file:
//! `[mqtt]` with the daemon's `MqttConfig` keys, `[ground]` with optional `server_name`
//! and `client_id`). Keys are 0600 under a 0700 `certs/` directory.
//!
//! Identities: the certificate CN is the MQTT user name (`use_identity_as_username`), and
//! the ACL binds topics to it: only `drone-1` may publish server presence, capability and
//! the server side of RPC topics for server-id `drone-1`; ground identities publish the
//! control topic, their own RPC topics and their own presence.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::link::endpoint::Endpoint;

/// The drone's certificate CN, MQTT user name and server-id in the generated files.
pub const DRONE_IDENTITY: &str = "drone-1";
/// The ground client's certificate CN and MQTT user name in the generated files.
pub const GROUND_IDENTITY: &str = "ground-1";

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
    /// Draw the dev envelope around this home, `LAT,LON,ALT_M` (where the vehicle or SITL
    /// takes off), instead of the built-in simulator's.
    #[arg(long, value_name = "LAT,LON,ALT_M", value_parser = crate::cli::parse_home, allow_hyphen_values = true)]
    pub home: Option<(f64, f64, f64)>,
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
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
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
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(io(&certs))?;
    set_mode(&certs, 0o700)?;

    // The CA.
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("flight-companion dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    write_file(&certs.join("ca.pem"), ca.pem().as_bytes(), 0o644)?;

    // Leaf certificates: the broker (server auth, SAN localhost and 127.0.0.1), the drone
    // and the ground (client auth, CN = identity).
    let leaves = [
        (
            "broker",
            "localhost",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "drone",
            DRONE_IDENTITY,
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
        (
            "ground",
            GROUND_IDENTITY,
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ];
    for (file, cn, sans, usage) in leaves {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = name(cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca)?;
        write_file(
            &certs.join(format!("{file}.pem")),
            cert.pem().as_bytes(),
            0o644,
        )?;
        write_file(
            &certs.join(format!("{file}.key")),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
    }

    let acl_path = dir.join("acl");
    write_file(&acl_path, acl().as_bytes(), 0o644)?;
    let running_as_root = std::fs::metadata(&dir)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    write_file(
        &dir.join("mosquitto.conf"),
        mosquitto_conf(&dir, args.broker_port, running_as_root).as_bytes(),
        0o644,
    )?;
    write_tokens(&dir)?;
    write_file(
        &dir.join("drone.toml"),
        drone_toml(args.broker_port, &args.vehicle_link, home_of(args)).as_bytes(),
        0o644,
    )?;
    write_file(
        &dir.join("ground.toml"),
        ground_toml(args.broker_port).as_bytes(),
        0o644,
    )?;
    Ok(dir)
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

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
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

fn mosquitto_conf(dir: &Path, port: u16, running_as_root: bool) -> String {
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
        "# Nagle's algorithm adds ~40 ms to every request/response round trip."
    );
    let _ = writeln!(s, "set_tcp_nodelay true");
    s
}

fn acl() -> String {
    let d = DRONE_IDENTITY;
    let g = GROUND_IDENTITY;
    format!(
        "# Written by `flight-companion dev-setup`. User names are certificate CNs.\n\
         # The drone ({d}, server-id {d}) alone publishes its presence, capability and the\n\
         # server side of its RPC topics; it reads its control topic, client topics and RPC.\n\
         user {d}\n\
         topic write $mcp-server/presence/{d}/#\n\
         topic write $mcp-server/capability/{d}/#\n\
         topic readwrite $mcp-rpc/+/{d}/#\n\
         topic read $mcp-server/{d}/#\n\
         topic read $mcp-client/presence/#\n\
         topic read $mcp-client/capability/#\n\
         \n\
         # A ground client publishes to the drone's control topic, and reads server presence\n\
         # and capability.\n\
         user {g}\n\
         topic write $mcp-server/{d}/#\n\
         topic read $mcp-server/presence/#\n\
         topic read $mcp-server/capability/#\n\
         \n\
         # Every client: its own presence and capability, and its own RPC topics (by client id).\n\
         pattern write $mcp-client/presence/%c\n\
         pattern write $mcp-client/capability/%c\n\
         pattern readwrite $mcp-rpc/%c/#\n"
    )
}

fn drone_toml(port: u16, link: &Endpoint, home: (f64, f64, f64)) -> String {
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
         [audit]\n\
         dir = \"state/audit\"\n\
         \n\
         {}",
        dev_envelope(home)
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
        let (lat, lon) = crate::flight::geo::offset_deg(home_lat, home_lon, north_m, east_m);
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
         # client_id = \"{GROUND_IDENTITY}\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
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
        for key in ["broker.key", "drone.key", "ground.key"] {
            assert_eq!(mode(&written.join("certs").join(key)), 0o600, "{key}");
        }
        let conf = std::fs::read_to_string(written.join("mosquitto.conf")).unwrap();
        for needle in [
            "listener 18883 127.0.0.1",
            "require_certificate true",
            "use_identity_as_username true",
            "set_tcp_nodelay true",
            "allow_anonymous false",
        ] {
            assert!(conf.contains(needle), "{needle}: {conf}");
        }
        let ground = std::fs::read_to_string(written.join("ground.toml")).unwrap();
        assert!(ground.contains("[ground]") && ground.contains("certs/ground.key"));

        // A second run refuses the non-empty directory, and --force overwrites.
        let error = write(&args(&dir, false)).unwrap_err().to_string();
        assert!(error.contains("--force"), "{error}");
        write(&args(&dir, true)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
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
