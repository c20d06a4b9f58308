//! HIL scenario files (TOML): what to set up, what to do, what must hold (sans-IO).
//!
//! A scenario is read and validated completely before anything starts, so a typo in step 7
//! is reported with the file and step number instead of after five minutes of flying.
//! The format is documented with examples in `hil/README.md`; every key is checked
//! (`deny_unknown_fields`), so a misspelt key is an error, not a silently skipped check.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// One scenario, as written in `hil/scenarios/NAME.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short title, shown in the summary and as the JUnit test case name.
    pub name: String,
    /// What it proves, for a person reading the report.
    #[serde(default)]
    pub description: String,
    /// What the target must offer; a target without it reports the scenario skipped.
    #[serde(default)]
    pub needs: BTreeSet<Need>,
    /// Wall-clock budget for the whole scenario before the target's allowance. Default 120 s.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    #[serde(default)]
    pub setup: Setup,
    /// Run in order; a step that fails ends the scenario.
    pub steps: Vec<Step>,
    /// Judged after the steps, from the wire log, the call results and the daemon's files.
    #[serde(default)]
    pub checks: Vec<Check>,
}

fn default_timeout_s() -> f64 {
    120.0
}

/// Something a target may lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// Simulator parameters for faults (`SIM_GPS_DISABLE`, `SIM_BATT_VOLTAGE`, `SIM_WIND_*`):
    /// the built-in simulator and ArduPilot SITL, never a real autopilot.
    SimFaults,
    /// The simulated safety microcontroller (`bridge-sim`), whose switch the rig presses.
    Bridge,
    /// A vehicle that may take off: never a bench autopilot unless `--allow-flight` was given
    /// (propellers off, motors may still spin).
    Flight,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Need::SimFaults => "sim_faults",
            Need::Bridge => "bridge",
            Need::Flight => "flight",
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// Merged over the generated `drone.toml` (tables merge key by key), e.g.
    /// `[setup.daemon.failsafe] ground_link_timeout_s = 1.0`.
    #[serde(default)]
    pub daemon: toml::Table,
    /// Per-target multiplier for every `within_s`, replacing the target's default.
    #[serde(default)]
    pub timing: Timing,
}

/// Timing allowance: how much slower than the simulator each kind of target may be.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    pub sim: Option<f64>,
    pub sitl: Option<f64>,
    pub serial: Option<f64>,
}

/// A value or a list of values (`mode = "BRAKE"` or `mode = ["BRAKE", "AUTO.LOITER"]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl fmt::Display for OneOrMany {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.items().join(" or "))
    }
}

/// What a call must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    #[default]
    Ok,
    /// A tool error (`isError`) or a JSON-RPC error.
    Refused,
    /// Either; the answer is only recorded.
    Any,
}

/// One step: exactly one action key (`call`, `await_call`, `wait`, `sleep_s`, `fault`,
/// `estop`, `bridge`, `pilot_mode`, `flood`), plus its options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Name other steps and checks refer to (`after = "stop"`).
    pub id: Option<String>,

    /// An MCP tool to call.
    pub call: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: toml::Table,
    /// Who calls: a role (`operator`), or a role and a person (`operator:alice`). Default
    /// `operator`. Each distinct principal is its own MCP session with its own token.
    #[serde(rename = "as")]
    pub principal: Option<String>,
    #[serde(default)]
    pub expect: Expect,
    /// With `expect = "refused"`: the refusal must contain this text.
    pub reason_contains: Option<String>,
    /// Do not wait for the answer; a later `await_call = ID` does.
    #[serde(default)]
    pub background: bool,

    /// Wait for the answer of a background call (by its `id`).
    pub await_call: Option<String>,

    /// Wait until the vehicle (as seen on the wire) or the daemon's log shows this.
    pub wait: Option<WaitFor>,

    /// Do nothing for this long.
    pub sleep_s: Option<f64>,

    /// Inject a fault (or end one).
    pub fault: Option<Fault>,
    /// `line_drop`, `line_corrupt`: chance per frame.
    pub probability: Option<f64>,
    /// `line_delay`, `mqtt_delay`.
    pub delay_ms: Option<u64>,
    /// `battery`: the pack voltage the simulator reports (`SIM_BATT_VOLTAGE`).
    pub voltage_v: Option<f64>,
    /// `battery`: the charge the autopilot counts as left, in percent
    /// (`MAV_CMD_BATTERY_RESET`; ArduPilot's percentage counts consumed mAh, not volts).
    pub remaining_percent: Option<f64>,
    /// `wind`.
    pub speed_m_s: Option<f64>,
    pub direction_deg: Option<f64>,

    /// Trigger the emergency stop from this source.
    pub estop: Option<EstopSource>,

    /// Act on the simulated bridge's switch.
    pub bridge: Option<BridgeAction>,

    /// The pilot (RC or another ground station) switches the autopilot to this mode.
    pub pilot_mode: Option<String>,

    /// A ground station beside the daemon (on a `gcs` endpoint the rig adds) sends this
    /// command: `arm`, `takeoff` (`altitude_m`), `goto` (`latitude_deg`, `longitude_deg`,
    /// `altitude_m`), `hold`, `land`, `return_home`. `expect` judges its COMMAND_ACK and
    /// `reason_contains` the STATUSTEXT it is told.
    pub gcs: Option<String>,

    /// Start `calls` calls of this tool from `clients` sessions at once, in the background.
    pub flood: Option<String>,
    pub calls: Option<u32>,
    pub clients: Option<u32>,

    /// Time limit of `wait`, `await_call` and foreground `call`, before the target's allowance.
    pub within_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    /// Flight mode as the autopilot names it; any of a list.
    pub mode: Option<OneOrMany>,
    pub armed: Option<bool>,
    /// Altitude above home, from `GLOBAL_POSITION_INT.relative_alt`.
    pub altitude_m_min: Option<f64>,
    pub altitude_m_max: Option<f64>,
    /// From `EXTENDED_SYS_STATE`: true on the ground, false in the air.
    pub landed: Option<bool>,
    /// A line of the daemon's log containing this text, logged since the scenario started or,
    /// with `since`, since the start of that step.
    pub daemon_log: Option<String>,
    /// A step id: `daemon_log` counts lines from that step's start.
    pub since: Option<String>,
}

impl WaitFor {
    fn is_empty(&self) -> bool {
        *self == WaitFor::default()
    }
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = &self.mode {
            parts.push(format!("mode {m}"));
        }
        if let Some(a) = self.armed {
            parts.push(if a { "armed" } else { "disarmed" }.to_owned());
        }
        if let Some(a) = self.altitude_m_min {
            parts.push(format!("altitude >= {a} m"));
        }
        if let Some(a) = self.altitude_m_max {
            parts.push(format!("altitude <= {a} m"));
        }
        if let Some(l) = self.landed {
            parts.push(if l { "landed" } else { "in the air" }.to_owned());
        }
        if let Some(d) = &self.daemon_log {
            parts.push(format!("daemon log \"{d}\""));
        }
        f.write_str(&parts.join(", "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Serial relay: no byte passes either way; the device stays.
    LineCut,
    /// Serial relay: the device disappears (a USB adapter pulled).
    LineUnplug,
    /// Serial relay: each frame lost with `probability`.
    LineDrop,
    /// Serial relay: one byte of each frame flipped with `probability`.
    LineCorrupt,
    /// Serial relay: every byte held `delay_ms`.
    LineDelay,
    /// Serial relay: back to a clean line.
    LineRestore,
    /// MQTT proxy: connections stay open, nothing passes either way.
    MqttPartition,
    /// MQTT proxy: every byte held `delay_ms`.
    MqttDelay,
    /// MQTT proxy: connections reset, new ones refused.
    MqttDrop,
    /// MQTT proxy: back to a clean path.
    MqttRestore,
    /// The broker process killed (SIGKILL).
    BrokerKill,
    /// The broker started again on the same port.
    BrokerRestart,
    /// The daemon frozen (SIGSTOP).
    DaemonStop,
    /// The daemon resumed (SIGCONT).
    DaemonContinue,
    /// The daemon killed (SIGKILL).
    DaemonKill,
    /// The daemon started again with the same configuration.
    DaemonRestart,
    /// Simulator: GPS gone.
    GpsLoss,
    /// Simulator: GPS back.
    GpsRestore,
    /// Simulator: battery voltage set to `voltage_v`, and/or the charge left set to
    /// `remaining_percent`.
    Battery,
    /// Simulator: wind `speed_m_s` from `direction_deg`.
    Wind,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::LineCut => "line_cut",
            Fault::LineUnplug => "line_unplug",
            Fault::LineDrop => "line_drop",
            Fault::LineCorrupt => "line_corrupt",
            Fault::LineDelay => "line_delay",
            Fault::LineRestore => "line_restore",
            Fault::MqttPartition => "mqtt_partition",
            Fault::MqttDelay => "mqtt_delay",
            Fault::MqttDrop => "mqtt_drop",
            Fault::MqttRestore => "mqtt_restore",
            Fault::BrokerKill => "broker_kill",
            Fault::BrokerRestart => "broker_restart",
            Fault::DaemonStop => "daemon_stop",
            Fault::DaemonContinue => "daemon_continue",
            Fault::DaemonKill => "daemon_kill",
            Fault::DaemonRestart => "daemon_restart",
            Fault::GpsLoss => "gps_loss",
            Fault::GpsRestore => "gps_restore",
            Fault::Battery => "battery",
            Fault::Wind => "wind",
        }
    }

    /// The simulator faults, which need [`Need::SimFaults`].
    pub fn is_sim(self) -> bool {
        matches!(
            self,
            Fault::GpsLoss | Fault::GpsRestore | Fault::Battery | Fault::Wind
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstopSource {
    /// The `emergency_stop` MCP tool, as the step's principal.
    Mcp,
    /// A publish on the MQTT panic topic.
    PanicTopic,
    /// `flight-companion estop` on the companion (local socket).
    LocalSocket,
    /// The switch of the simulated bridge.
    Bridge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeAction {
    Press,
    Release,
    /// The bridge stops talking (a cut wire to the microcontroller).
    Silence,
    Resume,
}

/// One check: exactly one of `mode_reached`, `command_on_wire`, `no_command_on_wire`,
/// `stayed_inside`, `audit_contains`, `whitelist_conformance`, `daemon_log`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The vehicle reported one of these modes (on the wire) after step `after`, within
    /// `within_s`. The time taken is reported as a figure.
    pub mode_reached: Option<OneOrMany>,
    /// The companion sent this (`MAV_CMD_…` in a COMMAND_LONG/INT, or a message name such as
    /// `SET_MODE`) toward the autopilot after step `after`, within `within_s`. The latency
    /// is reported as a figure (trigger → frame on the wire).
    pub command_on_wire: Option<String>,
    /// The companion did not send this after step `after` (until the end of the run).
    pub no_command_on_wire: Option<String>,
    /// The vehicle stayed inside this region the whole run (after step `after` if given).
    pub stayed_inside: Option<Region>,
    /// The daemon's audit log has a record containing this text.
    pub audit_contains: Option<String>,
    /// Every frame the companion sent toward the autopilot is allowed by the command
    /// whitelist in the state the autopilot had last reported.
    pub whitelist_conformance: Option<bool>,
    /// The daemon's log has a line containing this text (after step `after` if given).
    pub daemon_log: Option<String>,

    /// The step (by `id`) the check counts from.
    pub after: Option<String>,
    pub within_s: Option<f64>,
}

/// A cylinder around home.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub radius_m: f64,
    pub altitude_m_max: f64,
}

/// What a step does, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Call,
    AwaitCall,
    Wait,
    Sleep,
    Fault,
    Estop,
    Bridge,
    PilotMode,
    Flood,
    Gcs,
}

/// The commands a `gcs` step can send.
pub const GCS_COMMANDS: &[&str] = &["arm", "takeoff", "goto", "hold", "land", "return_home"];

impl Step {
    /// The one action of this step; `Err` names what is wrong.
    pub fn kind(&self) -> Result<StepKind, String> {
        let present = [
            (self.call.is_some(), StepKind::Call, "call"),
            (self.await_call.is_some(), StepKind::AwaitCall, "await_call"),
            (self.wait.is_some(), StepKind::Wait, "wait"),
            (self.sleep_s.is_some(), StepKind::Sleep, "sleep_s"),
            (self.fault.is_some(), StepKind::Fault, "fault"),
            (self.estop.is_some(), StepKind::Estop, "estop"),
            (self.bridge.is_some(), StepKind::Bridge, "bridge"),
            (self.pilot_mode.is_some(), StepKind::PilotMode, "pilot_mode"),
            (self.flood.is_some(), StepKind::Flood, "flood"),
            (self.gcs.is_some(), StepKind::Gcs, "gcs"),
        ];
        let found: Vec<_> = present.iter().filter(|(p, _, _)| *p).collect();
        match found.as_slice() {
            [(_, kind, _)] => Ok(*kind),
            [] => Err(
                "has no action: give one of call, await_call, wait, sleep_s, fault, \
                 estop, bridge, pilot_mode, flood, gcs"
                    .into(),
            ),
            many => Err(format!(
                "has {} actions ({}); a step does one thing",
                many.len(),
                many.iter()
                    .map(|(_, _, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// A line for the report: `call takeoff as operator`.
    pub fn describe(&self) -> String {
        let who = self.principal.as_deref().unwrap_or("operator");
        match self.kind() {
            Ok(StepKind::Call) => format!(
                "call {}{} as {who}",
                self.call.as_deref().unwrap_or_default(),
                if self.background { " (background)" } else { "" }
            ),
            Ok(StepKind::AwaitCall) => {
                format!("await {}", self.await_call.as_deref().unwrap_or_default())
            }
            Ok(StepKind::Wait) => format!(
                "wait for {}",
                self.wait
                    .as_ref()
                    .map(|w| w.to_string())
                    .unwrap_or_default()
            ),
            Ok(StepKind::Sleep) => format!("sleep {} s", self.sleep_s.unwrap_or_default()),
            Ok(StepKind::Fault) => {
                format!("fault {}", self.fault.map(Fault::name).unwrap_or_default())
            }
            Ok(StepKind::Estop) => format!("emergency stop from {:?}", self.estop.unwrap()),
            Ok(StepKind::Bridge) => format!("bridge {:?}", self.bridge.unwrap()),
            Ok(StepKind::PilotMode) => format!(
                "pilot switches to {}",
                self.pilot_mode.as_deref().unwrap_or_default()
            ),
            Ok(StepKind::Gcs) => format!(
                "a ground station sends {}",
                self.gcs.as_deref().unwrap_or_default()
            ),
            Ok(StepKind::Flood) => format!(
                "flood of {} x {} from {} clients",
                self.calls.unwrap_or(100),
                self.flood.as_deref().unwrap_or_default(),
                self.clients.unwrap_or(4)
            ),
            Err(e) => e,
        }
    }
}

/// What a check judges, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    ModeReached,
    CommandOnWire,
    NoCommandOnWire,
    StayedInside,
    AuditContains,
    WhitelistConformance,
    DaemonLog,
}

impl Check {
    pub fn kind(&self) -> Result<CheckKind, String> {
        let present = [
            (self.mode_reached.is_some(), CheckKind::ModeReached),
            (self.command_on_wire.is_some(), CheckKind::CommandOnWire),
            (
                self.no_command_on_wire.is_some(),
                CheckKind::NoCommandOnWire,
            ),
            (self.stayed_inside.is_some(), CheckKind::StayedInside),
            (self.audit_contains.is_some(), CheckKind::AuditContains),
            (
                self.whitelist_conformance.is_some(),
                CheckKind::WhitelistConformance,
            ),
            (self.daemon_log.is_some(), CheckKind::DaemonLog),
        ];
        let found: Vec<_> = present.iter().filter(|(p, _)| *p).collect();
        match found.as_slice() {
            [(_, kind)] => Ok(*kind),
            [] => Err(
                "judges nothing: give one of mode_reached, command_on_wire, \
                 no_command_on_wire, stayed_inside, audit_contains, whitelist_conformance, \
                 daemon_log"
                    .into(),
            ),
            _ => Err("judges several things; a check judges one".into()),
        }
    }

    pub fn describe(&self) -> String {
        let after = self
            .after
            .as_deref()
            .map(|a| format!(" after {a}"))
            .unwrap_or_default();
        let within = self
            .within_s
            .map(|w| format!(" within {w} s"))
            .unwrap_or_default();
        match self.kind() {
            Ok(CheckKind::ModeReached) => format!(
                "mode {} reached{after}{within}",
                self.mode_reached.as_ref().unwrap()
            ),
            Ok(CheckKind::CommandOnWire) => format!(
                "{} on the wire{after}{within}",
                self.command_on_wire.as_deref().unwrap()
            ),
            Ok(CheckKind::NoCommandOnWire) => format!(
                "no {} on the wire{after}",
                self.no_command_on_wire.as_deref().unwrap()
            ),
            Ok(CheckKind::StayedInside) => {
                let r = self.stayed_inside.unwrap();
                format!(
                    "stayed within {} m of home and below {} m{after}",
                    r.radius_m, r.altitude_m_max
                )
            }
            Ok(CheckKind::AuditContains) => format!(
                "audit record containing \"{}\"",
                self.audit_contains.as_deref().unwrap()
            ),
            Ok(CheckKind::WhitelistConformance) => {
                "every companion frame on the wire allowed by the whitelist".into()
            }
            Ok(CheckKind::DaemonLog) => format!(
                "daemon log line containing \"{}\"{after}",
                self.daemon_log.as_deref().unwrap()
            ),
            Err(e) => e,
        }
    }
}

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub message: String,
}

/// Parses and validates one scenario.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let error = |message: String| ScenarioError {
        file: path.display().to_string(),
        message,
    };
    let scenario: Scenario = toml::from_str(text).map_err(|e| error(e.to_string()))?;
    validate(&scenario).map_err(error)?;
    Ok(scenario)
}

/// Reads and validates one scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

fn positive(value: Option<f64>, what: &str) -> Result<(), String> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(format!(
            "{what} must be a positive number of seconds, not {v}"
        )),
        _ => Ok(()),
    }
}

/// Everything that can be known wrong before running: actions, references, parameters.
pub fn validate(s: &Scenario) -> Result<(), String> {
    if s.name.trim().is_empty() {
        return Err("`name` is empty".into());
    }
    if s.steps.is_empty() {
        return Err("no [[steps]]".into());
    }
    positive(Some(s.timeout_s), "timeout_s")?;
    for (name, factor) in [
        ("sim", s.setup.timing.sim),
        ("sitl", s.setup.timing.sitl),
        ("serial", s.setup.timing.serial),
    ] {
        if let Some(f) = factor
            && !(f.is_finite() && f >= 1.0)
        {
            return Err(format!("setup.timing.{name} must be at least 1.0, not {f}"));
        }
    }
    let mut ids: Vec<&str> = Vec::new();
    let mut background: Vec<&str> = Vec::new();
    for (i, step) in s.steps.iter().enumerate() {
        let at = |m: String| format!("step {} ({}): {m}", i + 1, step.describe());
        let kind = step.kind().map_err(|e| format!("step {}: {e}", i + 1))?;
        positive(step.within_s, "within_s").map_err(at)?;
        if let Some(id) = &step.id {
            if ids.contains(&id.as_str()) {
                return Err(at(format!("id \"{id}\" is used twice")));
            }
            ids.push(id);
        }
        if let Some(p) = &step.principal {
            parse_principal(p).map_err(at)?;
        }
        if step.reason_contains.is_some() && step.expect != Expect::Refused {
            return Err(at("reason_contains needs expect = \"refused\"".into()));
        }
        match kind {
            StepKind::Call => {
                if step.background {
                    let Some(id) = &step.id else {
                        return Err(at("a background call needs an id to await it by".into()));
                    };
                    background.push(id);
                }
            }
            StepKind::AwaitCall => {
                let target = step.await_call.as_deref().unwrap_or_default();
                if !background.contains(&target) {
                    return Err(at(format!(
                        "await_call \"{target}\" names no earlier background call"
                    )));
                }
            }
            StepKind::Wait => {
                let wait = step.wait.as_ref();
                if wait.is_some_and(WaitFor::is_empty) {
                    return Err(at("wait = {} waits for nothing".into()));
                }
                if let Some(since) = wait.and_then(|w| w.since.as_deref()) {
                    if wait.is_some_and(|w| w.daemon_log.is_none()) {
                        return Err(at("`since` applies to `daemon_log` only".into()));
                    }
                    if !ids.contains(&since) {
                        return Err(at(format!("since = \"{since}\" names no earlier step id")));
                    }
                }
            }
            StepKind::Sleep => positive(step.sleep_s, "sleep_s").map_err(at)?,
            StepKind::Fault => validate_fault(s, step).map_err(at)?,
            StepKind::Estop | StepKind::Bridge => {
                let bridge = step.estop == Some(EstopSource::Bridge) || kind == StepKind::Bridge;
                if bridge && !s.needs.contains(&Need::Bridge) {
                    return Err(at(
                        "the bridge switch needs `needs = [\"bridge\"]` so that targets \
                         without the simulated bridge skip the scenario"
                            .into(),
                    ));
                }
            }
            StepKind::PilotMode => {}
            StepKind::Gcs => {
                let name = step.gcs.as_deref().unwrap_or_default();
                if !GCS_COMMANDS.contains(&name) {
                    return Err(at(format!(
                        "gcs `{name}` is not one of {}",
                        GCS_COMMANDS.join(", ")
                    )));
                }
                if step.background {
                    return Err(at(
                        "a gcs step waits for its ACK; it cannot be background".into()
                    ));
                }
            }
            StepKind::Flood => {
                if step.calls == Some(0) || step.clients == Some(0) {
                    return Err(at("a flood needs at least one call and one client".into()));
                }
            }
        }
    }
    validate_checks(s, &ids)
}

/// A fault step: the parameters its fault needs, and `needs` for a simulator's fault.
fn validate_fault(s: &Scenario, step: &Step) -> Result<(), String> {
    let fault = step.fault.unwrap();
    let need = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("fault {} needs {what}", fault.name()))
        }
    };
    match fault {
        Fault::LineDrop | Fault::LineCorrupt => need(
            step.probability.is_some_and(|p| (0.0..=1.0).contains(&p)),
            "probability between 0 and 1",
        )?,
        Fault::LineDelay | Fault::MqttDelay => need(step.delay_ms.is_some(), "delay_ms")?,
        Fault::Battery => {
            need(
                step.voltage_v.is_some() || step.remaining_percent.is_some(),
                "voltage_v or remaining_percent",
            )?;
            need(
                step.voltage_v.is_none_or(|v| v.is_finite() && v >= 0.0),
                "a voltage_v of at least 0",
            )?;
            need(
                step.remaining_percent
                    .is_none_or(|p| p.is_finite() && (0.0..=100.0).contains(&p)),
                "a remaining_percent between 0 and 100",
            )?;
        }
        Fault::Wind => need(
            step.speed_m_s.is_some_and(|v| v.is_finite() && v >= 0.0)
                && step.direction_deg.is_some_and(f64::is_finite),
            "speed_m_s and direction_deg",
        )?,
        _ => {}
    }
    if fault.is_sim() && !s.needs.contains(&Need::SimFaults) {
        return Err(format!(
            "fault {} needs `needs = [\"sim_faults\"]` so that targets without a \
             simulator skip the scenario",
            fault.name()
        ));
    }
    Ok(())
}

/// The checks: each names known steps and has what its kind needs.
fn validate_checks(s: &Scenario, ids: &[&str]) -> Result<(), String> {
    for (i, check) in s.checks.iter().enumerate() {
        let at = |m: String| format!("check {} ({}): {m}", i + 1, check.describe());
        let kind = check.kind().map_err(|e| format!("check {}: {e}", i + 1))?;
        positive(check.within_s, "within_s").map_err(at)?;
        if let Some(after) = &check.after
            && !ids.contains(&after.as_str())
        {
            return Err(at(format!("after = \"{after}\" names no step id")));
        }
        if matches!(kind, CheckKind::ModeReached | CheckKind::CommandOnWire)
            && (check.after.is_none() || check.within_s.is_none())
        {
            return Err(at("needs `after` (a step id) and `within_s`".into()));
        }
        if let Some(r) = check.stayed_inside
            && !(r.radius_m > 0.0 && r.altitude_m_max.is_finite())
        {
            return Err(at("stayed_inside needs a positive radius_m".into()));
        }
    }
    Ok(())
}

/// `operator` or `operator:alice` → (role name upper-case, person).
pub fn parse_principal(text: &str) -> Result<(crate::role::Role, String), String> {
    let (role, person) = match text.split_once(':') {
        Some((r, p)) => (r, p.to_owned()),
        None => (text, format!("hil-{}", text.to_lowercase())),
    };
    let role = crate::role::Role::from_name(role)
        .filter(|r| *r != crate::role::Role::System)
        .ok_or_else(|| {
            format!("`as = \"{text}\"`: the role must be public, read_only, operator or admin")
        })?;
    if person.is_empty()
        || !person
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "`as = \"{text}\"`: the person after ':' must be letters, digits, '-', '_' or '.'"
        ));
    }
    Ok((role, person))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Scenario, String> {
        parse(Path::new("t.toml"), text).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "name = \"n\"\n[[steps]]\nsleep_s = 1\n";

    #[test]
    fn a_minimal_scenario_parses() {
        let s = parse_str(MINIMAL).unwrap();
        assert_eq!(s.steps[0].kind(), Ok(StepKind::Sleep));
        assert_eq!(s.timeout_s, 120.0);
    }

    #[test]
    fn mistakes_are_named_with_the_file_and_step() {
        let cases = [
            (
                "name = \"n\"\n[[steps]]\nslep_s = 1\n",
                "unknown field `slep_s`",
            ),
            ("name = \"n\"\n[[steps]]\n", "step 1: has no action"),
            (
                "name = \"n\"\n[[steps]]\nsleep_s = 1\ncall = \"hold\"\n",
                "step 1: has 2 actions (call, sleep_s)",
            ),
            (
                "name = \"n\"\n[[steps]]\nsleep_s = -1\n",
                "sleep_s must be a positive",
            ),
            (
                "name = \"n\"\n[[steps]]\ncall = \"goto\"\nbackground = true\n",
                "needs an id",
            ),
            (
                "name = \"n\"\n[[steps]]\nawait_call = \"x\"\n",
                "names no earlier background call",
            ),
            (
                "name = \"n\"\n[[steps]]\nfault = \"line_drop\"\n",
                "needs probability between 0 and 1",
            ),
            (
                "name = \"n\"\nneeds = [\"sim_faults\"]\n[[steps]]\nfault = \"battery\"\n",
                "needs voltage_v or remaining_percent",
            ),
            (
                "name = \"n\"\nneeds = [\"sim_faults\"]\n[[steps]]\nfault = \"battery\"\nremaining_percent = 120.0\n",
                "remaining_percent between 0 and 100",
            ),
            (
                "name = \"n\"\n[[steps]]\nfault = \"gps_loss\"\n",
                "needs `needs = [\"sim_faults\"]`",
            ),
            (
                "name = \"n\"\n[[steps]]\nestop = \"bridge\"\n",
                "needs `needs = [\"bridge\"]`",
            ),
            (
                "name = \"n\"\n[[steps]]\ncall = \"hold\"\nas = \"system\"\n",
                "the role must be",
            ),
            (
                "name = \"n\"\n[[steps]]\ncall = \"hold\"\nreason_contains = \"x\"\n",
                "reason_contains needs expect",
            ),
            (
                "name = \"n\"\n[[steps]]\nsleep_s = 1\n[[checks]]\nmode_reached = \"BRAKE\"\n",
                "needs `after`",
            ),
            (
                "name = \"n\"\n[[steps]]\nsleep_s = 1\n[[checks]]\ndaemon_log = \"x\"\nafter = \"nope\"\n",
                "names no step id",
            ),
            (
                "name = \"n\"\n[[steps]]\nfault = \"line_melt\"\n",
                "unknown variant `line_melt`",
            ),
            ("name = \"n\"\n[[steps]]\nwait = {}\n", "waits for nothing"),
            (
                "name = \"n\"\n[[steps]]\nwait = { daemon_log = \"x\", since = \"later\" }\n[[steps]]\nid = \"later\"\nsleep_s = 1\n",
                "names no earlier step id",
            ),
            (
                "name = \"n\"\n[[steps]]\ngcs = \"flip\"\n",
                "gcs `flip` is not one of arm, takeoff, goto",
            ),
            (
                "name = \"n\"\n[[steps]]\nid = \"g\"\ngcs = \"land\"\nbackground = true\n",
                "cannot be background",
            ),
        ];
        for (text, want) in cases {
            let got = parse_str(text).expect_err(text);
            assert!(got.starts_with("t.toml: "), "{got}");
            assert!(got.contains(want), "{text}\nwant {want}\ngot {got}");
        }
    }

    #[test]
    fn principals_default_to_a_person_per_role() {
        use crate::role::Role;
        assert_eq!(
            parse_principal("operator").unwrap(),
            (Role::Operator, "hil-operator".into())
        );
        assert_eq!(
            parse_principal("ADMIN:bob").unwrap(),
            (Role::Admin, "bob".into())
        );
        assert!(parse_principal("operator:").is_err());
        assert!(parse_principal("pilot").is_err());
    }

    #[test]
    fn every_starter_scenario_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (dir, least) in [("hil/scenarios", 13), ("hil/px4", 1), ("hil/missions", 2)] {
            let mut count = 0;
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    load(&path).unwrap_or_else(|e| panic!("{e}"));
                    count += 1;
                }
            }
            assert!(count >= least, "{dir} has {count} scenarios");
        }
    }
}
