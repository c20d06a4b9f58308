//! `ground.toml`: the bridge's configuration (`flight-companion ground --config FILE`).
//!
//! `[mqtt]` has exactly the keys of the daemon's [`MqttConfig`] so one `dev-setup` writer
//! serves both; `[ground]` holds what only the bridge needs. Parsed before anything starts;
//! errors name the file and the key like [`flight_companion_core::config::Config`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use flight_companion_core::config::{ConfigError, MqttConfig, describe};
use flight_companion_core::mcp::transport::{self, valid_client_id};

/// The whole bridge configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroundConfig {
    /// The broker connection (mutual TLS; the three certificate paths are required).
    /// `mqtt.enabled` is accepted for symmetry with the daemon's file and ignored.
    pub mqtt: MqttConfig,
    /// The bridge itself.
    pub ground: GroundSection,
    /// Fleet mode: many drones served as one MCP server (`ground::fleet`). Off unless
    /// `fleet.server_names` (or `--fleet PATTERN`) names at least one pattern.
    pub fleet: FleetSection,
    /// The web console (`ground::console`). Off unless `console.listen` (or `--console`).
    pub console: ConsoleSection,
}

/// `[console]`: the web console served by the ground process (fleet mode only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Address and port to listen on, e.g. `127.0.0.1:8080`. Default none: no console.
    pub listen: Option<std::net::SocketAddr>,
    /// Allow an address other than loopback. Default false: the console acts with the ground
    /// process's identity (its stop, and an ADMIN's reset) and has no login of its own, so
    /// anyone who can reach the port can use that identity; put it on a network only behind
    /// something that authenticates (an SSH tunnel, a reverse proxy with client
    /// certificates).
    pub allow_non_loopback: bool,
    /// A map tile URL template (`https://tiles.example/{z}/{x}/{y}.png`) drawn under the
    /// map when set. Default none: the map draws in local metres only, which needs nothing
    /// from the network.
    pub tile_url: Option<String>,
    /// How often the console asks every drone for its status (`get_status`). Default 1000 ms.
    pub poll_interval_ms: u64,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            listen: None,
            allow_non_loopback: false,
            tile_url: None,
            poll_interval_ms: 1_000,
        }
    }
}

impl ConsoleSection {
    /// The console rules: fleet mode, a loopback address unless allowed, a positive poll
    /// interval, a tile URL with its three placeholders. The key and the reason otherwise.
    pub fn check(&self, fleet: bool) -> Result<(), (&'static str, String)> {
        let Some(listen) = self.listen else {
            return Ok(());
        };
        if !fleet {
            return Err((
                "console.listen",
                "the console shows a fleet: it needs fleet mode (fleet.server_names or --fleet)"
                    .into(),
            ));
        }
        if !listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err((
                "console.listen",
                format!(
                    "{listen} is not a loopback address: the console has no login and acts with this process's identity, so it listens on loopback only unless console.allow_non_loopback = true (then put it behind something that authenticates)"
                ),
            ));
        }
        if self.poll_interval_ms == 0 {
            return Err(("console.poll_interval_ms", "must be above 0".into()));
        }
        if let Some(url) = &self.tile_url {
            if !["{z}", "{x}", "{y}"].iter().all(|p| url.contains(p))
                || url.contains(['"', '<', '>', ' '])
            {
                return Err((
                    "console.tile_url",
                    format!("`{url}` is not a tile URL template with {{z}}, {{x}} and {{y}}"),
                ));
            }
        }
        Ok(())
    }
}

/// `[fleet]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSection {
    /// Server-name patterns of the drones to serve, MQTT-filter style (`fleet/#`,
    /// `site-a/+/companion`). Default none: single-drone mode.
    pub server_names: Vec<String>,
    /// The drone a tool call goes to when it names none. Default none: `drone` is required.
    pub default_drone: Option<String>,
    /// How long `list_drones` and `emergency_stop_all` wait for each drone's answer before
    /// reporting it as not answering. Default 3000 ms.
    pub answer_timeout_ms: u64,
}

impl Default for FleetSection {
    fn default() -> Self {
        Self {
            server_names: Vec::new(),
            default_drone: None,
            answer_timeout_ms: 3_000,
        }
    }
}

impl FleetSection {
    /// Fleet mode is on.
    pub fn enabled(&self) -> bool {
        !self.server_names.is_empty()
    }
}

/// `[ground]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroundSection {
    /// Server name of the drone to talk to. Default none: the only drone online; with several
    /// online and none named the bridge refuses and lists them.
    pub server_name: Option<String>,
    /// The bridge's MQTT client id (= mcp-client-id). Default: generated, unique per process,
    /// because two processes sharing a client id take over each other's session.
    pub client_id: Option<String>,
    /// Topic root of server control/presence/capability topics. Default `$mcp-server`.
    pub server_topic_root: String,
    /// Topic root of client presence/capability topics. Default `$mcp-client`.
    pub client_topic_root: String,
    /// Topic root of RPC topics. Default `$mcp-rpc`.
    pub rpc_topic_root: String,
    /// How long the stdio client's `initialize` may wait for a drone to appear. Default 10000 ms.
    pub discovery_timeout_ms: u64,
    /// After the presence subscription is acknowledged, how long to collect retained presence
    /// before choosing a drone (so "several online" is noticed). Default 300 ms.
    pub presence_settle_ms: u64,
    /// How long a `tools/call` may go without any sign of life from the drone (its answer, or
    /// a progress notification for it) before the bridge answers the stdio client with an
    /// error. Measured from the last sign of life, not from the start: a call that reports
    /// progress (every flight tool does, at least every few seconds) is never cut, however
    /// long it runs; its own bounds are the drone's (the flight executor sizes each wait from
    /// the distance and the speed). A timeout sends nothing to the drone: its job goes on.
    /// Default 60000 ms (the transport spec's recommended `tools/call` timeout). The old name
    /// `call_timeout_ms` is accepted.
    #[serde(alias = "call_timeout_ms")]
    pub call_idle_timeout_ms: u64,
    /// The same for every other request (`*/list`, `resources/read`, `ping`, ...). Default
    /// 30000 ms.
    pub request_timeout_ms: u64,
    /// Largest message accepted from either side; larger ones are refused with an error.
    /// Default 262144 bytes (the drone's default `mcp.message_bytes_max`).
    pub message_bytes_max: usize,
    /// File holding this client's JWT, sent in `initialize` as
    /// `params._meta["flight-companion/token"]`. Default none. `--token FILE` overrides it.
    pub token_path: Option<PathBuf>,
}

impl Default for GroundSection {
    fn default() -> Self {
        Self {
            server_name: None,
            client_id: None,
            server_topic_root: transport::SERVER_TOPIC_ROOT.into(),
            client_topic_root: transport::CLIENT_TOPIC_ROOT.into(),
            rpc_topic_root: transport::RPC_TOPIC_ROOT.into(),
            discovery_timeout_ms: 10_000,
            presence_settle_ms: 300,
            call_idle_timeout_ms: 60_000,
            request_timeout_ms: 30_000,
            message_bytes_max: 256 * 1024,
            token_path: None,
        }
    }
}

impl GroundConfig {
    /// Reads and parses a file; every error names the file, and the key when there is one.
    pub fn load(path: &Path) -> Result<GroundConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// [`GroundConfig::load`], then the command line's `--server-name` and `--client-id`,
    /// checked by the same rules (the error names the option).
    pub fn load_with_overrides(
        path: &Path,
        server_name: Option<String>,
        client_id: Option<String>,
        fleet: Vec<String>,
    ) -> Result<GroundConfig, ConfigError> {
        let mut config = Self::load(path)?;
        if !fleet.is_empty() {
            config.fleet.server_names = fleet;
        }
        if server_name.is_some() {
            config.ground.server_name = server_name;
        }
        if client_id.is_some() {
            config.ground.client_id = client_id;
        }
        config.check().map_err(|(key, message)| ConfigError {
            path: path.to_owned(),
            key: Some(format!("{key} (or its command-line option)")),
            message,
        })?;
        Ok(config)
    }

    /// Parses TOML text; `path` is used in messages and to resolve relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<GroundConfig, ConfigError> {
        let error = |key: Option<String>, message: String| ConfigError {
            path: path.to_owned(),
            key,
            message,
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| error(None, describe(text, &e)))?;
        let mut config: GroundConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let key = e.path().to_string();
                error((key != ".").then_some(key), describe(text, e.inner()))
            })?;
        // Relative to the file's directory, as in the daemon's file, so a dev-setup directory
        // can be moved as a whole.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.mqtt.ca_cert_path,
            &mut config.mqtt.client_cert_path,
            &mut config.mqtt.client_key_path,
            &mut config.ground.token_path,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config
            .check()
            .map_err(|(key, message)| error(Some(key.to_owned()), message))?;
        Ok(config)
    }

    /// Cross-field rules serde cannot express. Returns the key and the reason.
    fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, value) in [
            ("mqtt.ca_cert_path", &self.mqtt.ca_cert_path),
            ("mqtt.client_cert_path", &self.mqtt.client_cert_path),
            ("mqtt.client_key_path", &self.mqtt.client_key_path),
        ] {
            if value.is_none() {
                return Err((
                    key,
                    "required: the bridge only speaks mutual TLS to the broker".into(),
                ));
            }
        }
        let g = &self.ground;
        if let Some(name) = &g.server_name {
            if name.is_empty() || name.starts_with('/') || name.contains(['+', '#']) {
                return Err((
                    "ground.server_name",
                    format!(
                        "must be non-empty, not start with `/` and contain no `+` or `#`, got `{name}`"
                    ),
                ));
            }
        }
        if let Some(id) = &g.client_id {
            if !valid_client_id(id) {
                return Err((
                    "ground.client_id",
                    format!("must be non-empty and contain no `/`, `+` or `#`, got `{id}`"),
                ));
            }
        }
        for (key, root) in [
            ("ground.server_topic_root", &g.server_topic_root),
            ("ground.client_topic_root", &g.client_topic_root),
            ("ground.rpc_topic_root", &g.rpc_topic_root),
        ] {
            if root.is_empty() || root.ends_with('/') || root.contains(['+', '#']) {
                return Err((
                    key,
                    format!(
                        "must be non-empty, not end with `/` and contain no `+` or `#`, got `{root}`"
                    ),
                ));
            }
        }
        for (key, value) in [
            ("ground.discovery_timeout_ms", g.discovery_timeout_ms),
            ("ground.call_idle_timeout_ms", g.call_idle_timeout_ms),
            ("ground.request_timeout_ms", g.request_timeout_ms),
        ] {
            if value == 0 {
                return Err((key, "must be above 0".into()));
            }
        }
        let f = &self.fleet;
        for pattern in &f.server_names {
            if !valid_server_name_pattern(pattern) {
                return Err((
                    "fleet.server_names",
                    format!(
                        "`{pattern}` is not a server-name pattern: non-empty, no leading `/`, `+` only as a whole level, `#` only as the whole last level"
                    ),
                ));
            }
        }
        if let Some(name) = &f.default_drone {
            if name.is_empty() || name.starts_with('/') || name.contains(['+', '#']) {
                return Err((
                    "fleet.default_drone",
                    format!("must be a server name (no `+` or `#`), got `{name}`"),
                ));
            }
        }
        if f.answer_timeout_ms == 0 {
            return Err(("fleet.answer_timeout_ms", "must be above 0".into()));
        }
        if f.enabled() && g.server_name.is_some() {
            return Err((
                "ground.server_name",
                "names one drone, but fleet mode (fleet.server_names or --fleet) serves many: use fleet.default_drone for the drone a call goes to when it names none".into(),
            ));
        }
        self.console.check(f.enabled())?;
        if g.message_bytes_max < 1024 {
            return Err((
                "ground.message_bytes_max",
                format!("must be at least 1024 bytes, got {}", g.message_bytes_max),
            ));
        }
        Ok(())
    }

    /// The certificate paths, known to be present after [`GroundConfig::parse`].
    pub fn tls_paths(&self) -> Option<(&PathBuf, &PathBuf, &PathBuf)> {
        Some((
            self.mqtt.ca_cert_path.as_ref()?,
            self.mqtt.client_cert_path.as_ref()?,
            self.mqtt.client_key_path.as_ref()?,
        ))
    }
}

/// An MQTT topic filter over server names: levels split by `/`, `+` a whole level, `#` the
/// whole last level.
pub fn valid_server_name_pattern(pattern: &str) -> bool {
    if pattern.is_empty() || pattern.starts_with('/') {
        return false;
    }
    let levels: Vec<&str> = pattern.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "+" => true,
        "#" => i + 1 == levels.len(),
        l => !l.contains(['+', '#']),
    })
}

/// Whether `name` matches the filter `pattern` (MQTT rules: `+` one level, `#` the rest,
/// including none after its parent level).
pub fn server_name_matches(pattern: &str, name: &str) -> bool {
    let mut names = name.split('/');
    let mut patterns = pattern.split('/');
    loop {
        match (patterns.next(), names.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(p), Some(n)) if p == n => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERTS: &str = "[mqtt]\nca_cert_path = \"certs/ca.pem\"\nclient_cert_path = \"certs/ground.pem\"\nclient_key_path = \"/abs/ground.key\"\n";

    fn parse(text: &str) -> Result<GroundConfig, ConfigError> {
        GroundConfig::parse(Path::new("/etc/fc/ground.toml"), text)
    }

    #[test]
    fn certificates_only_gives_the_defaults_with_paths_relative_to_the_file() {
        let config = parse(CERTS).unwrap();
        assert_eq!(
            config.mqtt.ca_cert_path.as_deref(),
            Some(Path::new("/etc/fc/certs/ca.pem"))
        );
        assert_eq!(
            config.mqtt.client_key_path.as_deref(),
            Some(Path::new("/abs/ground.key"))
        );
        assert_eq!(config.ground.server_name, None);
        assert_eq!(config.ground.rpc_topic_root, "$mcp-rpc");
        assert!(config.tls_paths().is_some());
    }

    #[test]
    fn the_daemon_mqtt_keys_are_accepted() {
        let text = format!(
            "{CERTS}host = \"broker.local\"\nport = 18883\nkeep_alive_s = 5\nenabled = true\n[ground]\nserver_name = \"drone/alpha\"\nclient_id = \"gcs-1\"\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.mqtt.host, "broker.local");
        assert_eq!(config.mqtt.port, 18883);
        assert_eq!(config.ground.server_name.as_deref(), Some("drone/alpha"));
        assert_eq!(config.ground.client_id.as_deref(), Some("gcs-1"));
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let cases = [
            ("", "mqtt.ca_cert_path", "mutual TLS"),
            ("[ground]\nclient_id = \"a/b\"\n", "ground.client_id", "`/`"),
            ("[ground]\nclient_id = \"a#\"\n", "ground.client_id", "`#`"),
            (
                "[ground]\nserver_name = \"x/+\"\n",
                "ground.server_name",
                "`+`",
            ),
            (
                "[ground]\nrpc_topic_root = \"r/\"\n",
                "ground.rpc_topic_root",
                "end with `/`",
            ),
            (
                "[ground]\ncall_idle_timeout_ms = 0\n",
                "ground.call_idle_timeout_ms",
                "above 0",
            ),
            (
                "[ground]\ncall_timeout_ms = 0\n",
                "ground.call_idle_timeout_ms",
                "above 0",
            ),
            (
                "[ground]\nsever_name = \"x\"\n",
                "ground.sever_name",
                "unknown field",
            ),
            (
                "[ground]\ndiscovery_timeout_ms = \"1s\"\n",
                "ground.discovery_timeout_ms",
                "expected u64",
            ),
        ];
        for (extra, key, needle) in cases {
            let text = if key == "mqtt.ca_cert_path" {
                extra.to_owned()
            } else {
                format!("{CERTS}{extra}")
            };
            let error = parse(&text).unwrap_err();
            let shown = error.to_string();
            assert!(shown.starts_with("/etc/fc/ground.toml: "), "{shown}");
            assert_eq!(error.key.as_deref(), Some(key), "{shown}");
            assert!(shown.contains(needle), "{text:?}: {shown}");
            assert!(!shown.contains('\n'), "one line: {shown}");
        }
    }

    #[test]
    fn fleet_patterns_match_as_mqtt_filters_and_bad_ones_name_the_key() {
        for (pattern, name, matches) in [
            ("fleet/#", "fleet/alpha", true),
            ("fleet/#", "fleet", true),
            ("fleet/#", "fleet/a/b", true),
            ("fleet/+", "fleet/alpha", true),
            ("fleet/+", "fleet/a/b", false),
            ("fleet/+/cam", "fleet/a/cam", true),
            ("fleet/alpha", "fleet/alpha", true),
            ("fleet/alpha", "fleet/alphax", false),
            ("#", "anything/at/all", true),
            ("other/#", "fleet/alpha", false),
        ] {
            assert_eq!(
                server_name_matches(pattern, name),
                matches,
                "{pattern} vs {name}"
            );
        }
        let text =
            format!("{CERTS}[fleet]\nserver_names = [\"fleet/#\"]\ndefault_drone = \"fleet/a\"\n");
        let config = parse(&text).unwrap();
        assert!(config.fleet.enabled());
        assert_eq!(config.fleet.answer_timeout_ms, 3_000);
        for (extra, key) in [
            (
                "[fleet]\nserver_names = [\"fleet/a#\"]\n",
                "fleet.server_names",
            ),
            ("[fleet]\nserver_names = [\"#/a\"]\n", "fleet.server_names"),
            ("[fleet]\nserver_names = [\"\"]\n", "fleet.server_names"),
            ("[fleet]\ndefault_drone = \"a/+\"\n", "fleet.default_drone"),
            (
                "[fleet]\nanswer_timeout_ms = 0\n",
                "fleet.answer_timeout_ms",
            ),
            (
                "[ground]\nserver_name = \"a/b\"\n[fleet]\nserver_names = [\"a/#\"]\n",
                "ground.server_name",
            ),
        ] {
            let error = parse(&format!("{CERTS}{extra}")).unwrap_err();
            assert_eq!(error.key.as_deref(), Some(key), "{extra}: {error}");
        }
    }

    #[test]
    fn the_console_needs_fleet_mode_and_loopback_unless_allowed() {
        let fleet = "[fleet]\nserver_names = [\"fleet/#\"]\n";
        let ok = parse(&format!(
            "{CERTS}{fleet}[console]\nlisten = \"127.0.0.1:8080\"\ntile_url = \"https://t.example/{{z}}/{{x}}/{{y}}.png\"\n"
        ))
        .unwrap();
        assert_eq!(ok.console.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(ok.console.poll_interval_ms, 1_000);
        let allowed = format!(
            "{CERTS}{fleet}[console]\nlisten = \"0.0.0.0:8080\"\nallow_non_loopback = true\n"
        );
        assert!(parse(&allowed).is_ok());
        for (extra, key) in [
            ("[console]\nlisten = \"127.0.0.1:8080\"\n", "console.listen"),
            (
                &format!("{fleet}[console]\nlisten = \"0.0.0.0:8080\"\n") as &str,
                "console.listen",
            ),
            (
                &format!("{fleet}[console]\nlisten = \"[::1]:1\"\npoll_interval_ms = 0\n"),
                "console.poll_interval_ms",
            ),
            (
                &format!(
                    "{fleet}[console]\nlisten = \"[::1]:1\"\ntile_url = \"https://t/{{z}}\"\n"
                ),
                "console.tile_url",
            ),
        ] {
            let error = parse(&format!("{CERTS}{extra}")).unwrap_err();
            assert_eq!(error.key.as_deref(), Some(key), "{extra}: {error}");
        }
    }
}
