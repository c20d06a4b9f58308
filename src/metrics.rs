//! Prometheus metrics: counters the daemon's parts bump, and a tiny HTTP endpoint that
//! renders them with the latest status in the Prometheus text format (0.0.4).
//!
//! Off unless `[metrics] listen` is set. Names follow Prometheus conventions: the
//! `flight_companion_` prefix, base units in the name (`_seconds`, `_bytes`, `_celsius`,
//! `_ratio`), `_total` on counters, `_seconds` histograms.
//!
//! Counters live in one process-wide [`Metrics`] ([`global`]), like the `log` crate's
//! logger: they are write-only telemetry that nothing decides on, so any part (the MCP
//! server, the envelope, the e-stop) records an event with one line and no plumbing.
//! Everything a decision depends on stays in the sans-IO cores; values derived from the
//! vehicle (link health, battery, GPS) are read from the [`StatusReport`] at scrape time.
//!
//! [`render`] is pure (metrics + status + process sample → text) and tested without IO;
//! [`serve`] is the shell: a bounded number of connections, each with a read deadline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::status::StatusReport;

/// Upper bounds of the tool-call latency histogram, in seconds: from a status read (ms) to
/// a takeoff or a mission upload waiting for the vehicle (tens of seconds).
pub const TOOL_LATENCY_BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];
/// At most this many distinct label sets per labelled counter; later ones are counted
/// under `other` so a misbehaving caller cannot grow memory or the scrape without bound.
pub const LABEL_SETS_MAX: usize = 64;
/// Concurrent metrics connections; more are closed at once (a scraper is one client).
const CONNECTIONS_MAX: usize = 4;
/// A request must arrive within this time, and fit in `REQUEST_BYTES_MAX`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// "Unknown" for the CPU temperature.
const NO_TEMPERATURE: i64 = i64::MIN;

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ToolOutcome {
    /// The tool did what was asked.
    Ok,
    /// The tool ran and refused or failed with a message (`isError: true`).
    Error,
    /// The call was cancelled by the client.
    Cancelled,
}

impl ToolOutcome {
    fn label(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::Error => "error",
            ToolOutcome::Cancelled => "cancelled",
        }
    }
}

/// A fixed-bucket histogram (cumulative counts are computed when rendering).
#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations per bucket, non-cumulative; the last is `+Inf`.
    buckets: [u64; TOOL_LATENCY_BUCKETS_S.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let index = TOOL_LATENCY_BUCKETS_S
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(TOOL_LATENCY_BUCKETS_S.len());
        if let Some(bucket) = self.buckets.get_mut(index) {
            *bucket += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Counters keyed by a small label (a reason, a trigger), capped at [`LABEL_SETS_MAX`].
#[derive(Debug, Default)]
struct LabelledCounter(Mutex<BTreeMap<String, u64>>);

impl LabelledCounter {
    fn add(&self, label: &str) {
        if let Ok(mut map) = self.0.lock() {
            let key = if map.contains_key(label) || map.len() < LABEL_SETS_MAX {
                label.to_owned()
            } else {
                "other".to_owned()
            };
            *map.entry(key).or_insert(0) += 1;
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// The daemon's event counters. Lock-free where hot; the maps are touched once per event.
#[derive(Debug)]
pub struct Metrics {
    tool_calls: Mutex<BTreeMap<(String, ToolOutcome), Histogram>>,
    envelope_refusals: LabelledCounter,
    estops: LabelledCounter,
    failsafes: LabelledCounter,
    security_events: LabelledCounter,
    mqtt_reconnects: AtomicU64,
    watchdog_pings: AtomicU64,
    cpu_temperature_millicelsius: AtomicI64,
    queues: QueueGauges,
}

/// Reads one bounded queue's depth and capacity at scrape time; `None` once the queue is
/// gone (its gauge is then dropped).
pub type QueueProbe = Box<dyn Fn() -> Option<QueueDepth> + Send + Sync>;

/// Messages waiting in a bounded queue, and how many it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    pub depth: usize,
    pub capacity: usize,
}

/// The internal queues' probes by name (`link_events.autopilot`, `audit_writer`, ...).
/// A probe reads atomics only: a scrape never waits on the queue's owner.
#[derive(Default)]
struct QueueGauges(Mutex<BTreeMap<String, QueueProbe>>);

impl std::fmt::Debug for QueueGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .0
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_tuple("QueueGauges").field(&names).finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            tool_calls: Mutex::default(),
            envelope_refusals: LabelledCounter::default(),
            estops: LabelledCounter::default(),
            failsafes: LabelledCounter::default(),
            security_events: LabelledCounter::default(),
            mqtt_reconnects: AtomicU64::new(0),
            watchdog_pings: AtomicU64::new(0),
            cpu_temperature_millicelsius: AtomicI64::new(NO_TEMPERATURE),
            queues: QueueGauges::default(),
        }
    }
}

/// The process-wide metrics (see the module doc for why this one is global).
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    /// One finished MCP tool call, its outcome and how long it took.
    pub fn record_tool_call(&self, tool: &str, outcome: ToolOutcome, duration: Duration) {
        if let Ok(mut calls) = self.tool_calls.lock() {
            let known = calls.keys().any(|(t, _)| t == tool);
            let tool = if known || calls.len() < LABEL_SETS_MAX {
                tool
            } else {
                "other"
            };
            calls
                .entry((tool.to_owned(), outcome))
                .or_default()
                .observe(duration.as_secs_f64());
        }
    }

    /// A motion command the safety envelope refused, by reason (e.g. `ceiling`, `geofence`).
    pub fn record_envelope_refusal(&self, reason: &str) {
        self.envelope_refusals.add(reason);
    }

    /// An emergency stop, by trigger (`mcp_tool`, `mqtt_topic`, `local`, `hardware`, `failsafe`).
    pub fn record_estop(&self, trigger: &str) {
        self.estops.add(trigger);
    }

    /// A failsafe action, by kind (`ground_link_lost`, `autopilot_link_lost`, `battery_critical`).
    pub fn record_failsafe(&self, kind: &str) {
        self.failsafes.add(kind);
    }

    /// A security event, by kind (`tls_refused`, `token_invalid`, `role_denied`, `rate_limited`).
    pub fn record_security_event(&self, kind: &str) {
        self.security_events.add(kind);
    }

    /// The MQTT connection to the broker was re-established.
    pub fn record_mqtt_reconnect(&self) {
        self.mqtt_reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// A `WATCHDOG=1` was sent to systemd.
    pub fn record_watchdog_ping(&self) {
        self.watchdog_pings.fetch_add(1, Ordering::Relaxed);
    }

    /// Watches a bounded queue under `name`, replacing an earlier queue of that name (a
    /// reconnected link makes new channels).
    pub fn watch_queue(&self, name: impl Into<String>, probe: QueueProbe) {
        if let Ok(mut queues) = self.queues.0.lock() {
            if queues.len() < LABEL_SETS_MAX {
                queues.insert(name.into(), probe);
            }
        }
    }

    /// Watches a tokio channel through a weak sender, so watching never keeps it open.
    pub fn watch_channel<T: Send + 'static>(
        &self,
        name: impl Into<String>,
        tx: &tokio::sync::mpsc::Sender<T>,
    ) {
        let weak = tx.downgrade();
        self.watch_queue(
            name,
            Box::new(move || {
                weak.upgrade().map(|tx| QueueDepth {
                    depth: tx.max_capacity() - tx.capacity(),
                    capacity: tx.max_capacity(),
                })
            }),
        );
    }

    /// Every watched queue's depth now, by name; queues that are gone are forgotten.
    pub fn queue_depths(&self) -> Vec<(String, QueueDepth)> {
        let Ok(mut queues) = self.queues.0.lock() else {
            return Vec::new();
        };
        let mut depths = Vec::with_capacity(queues.len());
        queues.retain(|name, probe| match probe() {
            Some(depth) => {
                depths.push((name.clone(), depth));
                true
            }
            None => false,
        });
        depths
    }

    /// The latest CPU temperature reading (`None`: no sensor).
    pub fn set_cpu_temperature(&self, celsius: Option<f64>) {
        let value = celsius
            .filter(|c| c.is_finite())
            .map_or(NO_TEMPERATURE, |c| (c * 1000.0).round() as i64);
        self.cpu_temperature_millicelsius
            .store(value, Ordering::Relaxed);
    }

    /// The latest CPU temperature reading in °C, if there is a sensor.
    pub fn cpu_temperature_celsius(&self) -> Option<f64> {
        match self.cpu_temperature_millicelsius.load(Ordering::Relaxed) {
            NO_TEMPERATURE => None,
            milli => Some(milli as f64 / 1000.0),
        }
    }
}

/// Facts about this process, read from `/proc/self` by [`ProcessSample::read`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
}

impl ProcessSample {
    /// Reads `/proc/self/stat` and `/proc/self/fd`; missing files give `None`s.
    pub fn read() -> ProcessSample {
        let mut sample = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_proc_stat(&text, clock_ticks_per_second(), page_size()))
            .unwrap_or_default();
        sample.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        sample
    }
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// Parses `/proc/self/stat` (proc(5)): utime and stime (fields 14, 15, in clock ticks),
/// threads (20), vsize (23, bytes) and rss (24, pages). The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_proc_stat(
    text: &str,
    ticks_per_second: u64,
    page_bytes: u64,
) -> Option<ProcessSample> {
    let after = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `fields[0]` is field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = field(14)?.checked_add(field(15)?)?;
    Some(ProcessSample {
        cpu_seconds: Some(ticks as f64 / ticks_per_second.max(1) as f64),
        resident_memory_bytes: field(24).map(|pages| pages.saturating_mul(page_bytes)),
        virtual_memory_bytes: field(23),
        open_fds: None,
        threads: field(20),
    })
}

/// Parses a thermal zone's `temp` (millidegrees Celsius, e.g. `48312`).
pub fn parse_thermal_millicelsius(text: &str) -> Option<f64> {
    let milli: i64 = text.trim().parse().ok()?;
    // Sensors report nonsense (e.g. -273000 or 255000) when absent or broken.
    let celsius = milli as f64 / 1000.0;
    (-60.0..=200.0).contains(&celsius).then_some(celsius)
}

/// Reads the CPU temperature every `period` into [`global`] (for `/metrics`) and into
/// `readings` (the decision loop's input: no decision reads [`global`]) until `shutdown`; a
/// board without the file simply has no temperature metric. Runs in its own task because a
/// sysfs read can block on slow sensors: never in the decision loop.
pub async fn sample_cpu_temperature(
    path: std::path::PathBuf,
    period: Duration,
    readings: tokio::sync::watch::Sender<Option<f64>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let reading = tokio::fs::read_to_string(&path)
                    .await
                    .ok()
                    .and_then(|text| parse_thermal_millicelsius(&text));
                global().set_cpu_temperature(reading);
                // Only a change wakes the loop; nobody listening is no error.
                readings.send_if_modified(|old| {
                    let changed = *old != reading;
                    *old = reading;
                    changed
                });
            }
        }
    }
}

/// One metric family being written: `# HELP`, `# TYPE`, then samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn labelled(&mut self, name: &str, help: &str, label: &str, values: &BTreeMap<String, u64>) {
        self.family(name, "counter", help);
        for (key, value) in values {
            self.sample(name, &[(label, key)], *value as f64);
        }
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

/// The whole exposition: event counters, the status at scrape time and the process sample.
pub fn render(metrics: &Metrics, status: &StatusReport, process: &ProcessSample) -> String {
    let mut out = Out(String::with_capacity(8 * 1024));
    let p = "flight_companion";
    let (version, commit) = crate::VERSION
        .split_once(" (")
        .map(|(v, c)| (v, c.trim_end_matches(')')))
        .unwrap_or((crate::VERSION, "unknown"));
    out.family(
        &format!("{p}_build_info"),
        "gauge",
        "Version and git commit of the running daemon (always 1).",
    );
    out.sample(
        &format!("{p}_build_info"),
        &[("version", version), ("commit", commit)],
        1.0,
    );

    render_health(&mut out, p, status);
    render_link(&mut out, p, status);
    render_vehicle(&mut out, p, status);
    render_tool_calls(&mut out, p, metrics);
    render_events(&mut out, p, metrics);
    render_audit(&mut out, p, status);
    render_machine(&mut out, p, metrics, process);
    out.0
}

/// Health.
fn render_health(out: &mut Out, p: &str, status: &StatusReport) {
    let health = &status.health;
    out.family(
        &format!("{p}_health_state"),
        "gauge",
        "1 for the current health state (healthy, degraded, failed), 0 for the others.",
    );
    for state in ["healthy", "degraded", "failed"] {
        out.sample(
            &format!("{p}_health_state"),
            &[("state", state)],
            flag(health.state.as_str() == state),
        );
    }
    out.family(
        &format!("{p}_alert_active"),
        "gauge",
        "1 while an alert condition holds (battery_low, link_degraded, gps_lost, cpu_hot, audit_damaged, local_estop_unavailable, link_untrusted, audit_unwritable).",
    );
    for (alert, active) in &health.alerts {
        out.sample(
            &format!("{p}_alert_active"),
            &[("alert", alert)],
            flag(*active),
        );
    }
}

/// The autopilot link.
fn render_link(out: &mut Out, p: &str, status: &StatusReport) {
    let link = &status.vehicle.link;
    out.one(
        &format!("{p}_autopilot_link_up"),
        "gauge",
        "1 when the autopilot link (serial port or socket) is connected.",
        flag(link.connected),
    );
    out.one(
        &format!("{p}_autopilot_seen"),
        "gauge",
        "1 once the autopilot's heartbeat has been heard.",
        flag(status.autopilot_seen),
    );
    if let Some(age_ms) = link.heartbeat_age_ms {
        out.one(
            &format!("{p}_autopilot_heartbeat_age_seconds"),
            "gauge",
            "Time since the autopilot's last heartbeat.",
            age_ms as f64 / 1000.0,
        );
    }
    out.one(
        &format!("{p}_mavlink_frames_received_total"),
        "counter",
        "MAVLink frames received from the autopilot (rate() gives the message rate).",
        link.frames_received as f64,
    );
    out.one(
        &format!("{p}_mavlink_frames_lost_total"),
        "counter",
        "MAVLink frames lost, from sequence number gaps.",
        link.frames_lost as f64,
    );
    out.one(
        &format!("{p}_mavlink_loss_ratio"),
        "gauge",
        "Recent MAVLink frame loss (0 to 1).",
        link.loss_percent / 100.0,
    );
    out.one(
        &format!("{p}_mavlink_crc_errors_total"),
        "counter",
        "MAVLink frames dropped for a bad checksum.",
        link.crc_errors as f64,
    );
    out.one(
        &format!("{p}_mavlink_parse_errors_total"),
        "counter",
        "MAVLink frames with a good checksum that could not be decoded.",
        link.parse_errors as f64,
    );
    out.one(
        &format!("{p}_mavlink_unknown_messages_total"),
        "counter",
        "MAVLink frames of messages outside the dialect.",
        link.unknown_messages as f64,
    );
    out.one(
        &format!("{p}_mavlink_garbage_bytes_total"),
        "counter",
        "Bytes skipped between MAVLink frames.",
        link.garbage_bytes as f64,
    );
    out.one(
        &format!("{p}_autopilot_link_reconnects_total"),
        "counter",
        "Times the autopilot serial port or TCP connection was reopened.",
        link.reconnects as f64,
    );
    let trust = &link.trust;
    out.one(
        &format!("{p}_mavlink_signed_frames_total"),
        "counter",
        "MAVLink frames whose MAVLink 2 signature verified.",
        trust.signed_frames as f64,
    );
    out.family(
        &format!("{p}_mavlink_refused_total"),
        "counter",
        "MAVLink frames (and tcpin connections) the autopilot link refused, by reason: unsigned, bad_signature, replayed, old_timestamp, streams_full, foreign_peer, connection_refused.",
    );
    let r = &trust.refused;
    for (reason, count) in [
        ("unsigned", r.unsigned),
        ("bad_signature", r.bad_signature),
        ("replayed", r.replayed),
        ("old_timestamp", r.old_timestamp),
        ("streams_full", r.streams_full),
        ("foreign_peer", r.foreign_peer),
        ("connection_refused", r.connection_refused),
    ] {
        out.sample(
            &format!("{p}_mavlink_refused_total"),
            &[("reason", reason)],
            count as f64,
        );
    }
}

/// The vehicle, as far as health goes.
fn render_vehicle(out: &mut Out, p: &str, status: &StatusReport) {
    let v = &status.vehicle;
    out.one(
        &format!("{p}_vehicle_armed"),
        "gauge",
        "1 when the vehicle reports armed.",
        flag(v.mode.armed),
    );
    if !v.battery.freshness.stale {
        out.one(
            &format!("{p}_battery_voltage_volts"),
            "gauge",
            "Battery voltage.",
            v.battery.voltage_v,
        );
        if let Some(percent) = v.battery.remaining_percent {
            out.one(
                &format!("{p}_battery_remaining_ratio"),
                "gauge",
                "Battery remaining (0 to 1), as the autopilot estimates it.",
                percent / 100.0,
            );
        }
    }
    if !v.gps.freshness.stale {
        out.one(
            &format!("{p}_gps_satellites"),
            "gauge",
            "GPS satellites visible.",
            f64::from(v.gps.satellites_visible),
        );
    }
}

/// MCP tool calls.
fn render_tool_calls(out: &mut Out, p: &str, metrics: &Metrics) {
    let calls = metrics
        .tool_calls
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    out.family(
        &format!("{p}_mcp_tool_calls_total"),
        "counter",
        "MCP tool calls by tool and outcome (ok, error, cancelled).",
    );
    for ((tool, outcome), h) in &calls {
        out.sample(
            &format!("{p}_mcp_tool_calls_total"),
            &[("tool", tool), ("outcome", outcome.label())],
            h.count as f64,
        );
    }
    let name = format!("{p}_mcp_tool_call_duration_seconds");
    out.family(
        &name,
        "histogram",
        "MCP tool call latency, from the request to the result.",
    );
    for ((tool, outcome), h) in &calls {
        let mut cumulative = 0;
        for (i, count) in h.buckets.iter().enumerate() {
            cumulative += count;
            let le = TOOL_LATENCY_BUCKETS_S
                .get(i)
                .map_or("+Inf".to_owned(), |b| number(*b));
            out.sample(
                &format!("{name}_bucket"),
                &[("tool", tool), ("outcome", outcome.label()), ("le", &le)],
                cumulative as f64,
            );
        }
        out.sample(
            &format!("{name}_sum"),
            &[("tool", tool), ("outcome", outcome.label())],
            h.sum,
        );
        out.sample(
            &format!("{name}_count"),
            &[("tool", tool), ("outcome", outcome.label())],
            h.count as f64,
        );
    }
}

/// Safety and security events.
fn render_events(out: &mut Out, p: &str, metrics: &Metrics) {
    out.labelled(
        &format!("{p}_envelope_refusals_total"),
        "Commands refused before reaching the autopilot (safety envelope, vehicle state), by reason.",
        "reason",
        &metrics.envelope_refusals.snapshot(),
    );
    out.labelled(
        &format!("{p}_estops_total"),
        "Emergency stops, by trigger.",
        "trigger",
        &metrics.estops.snapshot(),
    );
    out.labelled(
        &format!("{p}_failsafes_total"),
        "Failsafe actions, by kind.",
        "kind",
        &metrics.failsafes.snapshot(),
    );
    out.labelled(
        &format!("{p}_security_events_total"),
        "Security events (refused TLS, invalid tokens, denied roles, rate limits), by kind.",
        "kind",
        &metrics.security_events.snapshot(),
    );
    out.one(
        &format!("{p}_mqtt_reconnects_total"),
        "counter",
        "Times the MQTT connection to the broker was re-established.",
        metrics.mqtt_reconnects.load(Ordering::Relaxed) as f64,
    );
    out.one(
        &format!("{p}_systemd_watchdog_pings_total"),
        "counter",
        "WATCHDOG=1 notifications sent to systemd from the decision loop.",
        metrics.watchdog_pings.load(Ordering::Relaxed) as f64,
    );
}

/// The audit log.
fn render_audit(out: &mut Out, p: &str, status: &StatusReport) {
    let audit = &status.audit;
    out.one(
        &format!("{p}_audit_enabled"),
        "gauge",
        "1 while the audit log is written (0 only with audit.danger_disabled).",
        flag(audit.enabled),
    );
    out.one(
        &format!("{p}_audit_damaged"),
        "gauge",
        "1 when damage was found in the audit log (kept as evidence; the log continues).",
        flag(!audit.damage.is_empty()),
    );
    out.one(
        &format!("{p}_audit_unwritable"),
        "gauge",
        "1 while the audit log cannot be written (a full disk): calls that must be recorded are refused.",
        flag(audit.unwritable.is_some()),
    );
    out.one(
        &format!("{p}_audit_records"),
        "gauge",
        "Records in the audit log.",
        audit.records as f64,
    );
    if let Some(size) = audit.checkpoint_size {
        out.one(
            &format!("{p}_audit_checkpoint_records"),
            "gauge",
            "Records covered by the newest signed checkpoint.",
            size as f64,
        );
    }
    out.one(
        &format!("{p}_audit_dropped_total"),
        "counter",
        "Audit records dropped because the writer's queue was full.",
        audit.dropped as f64,
    );
    out.one(
        &format!("{p}_audit_failed_total"),
        "counter",
        "Audit records the writer could not write (disk errors).",
        audit.failed as f64,
    );
}

/// The bounded internal queues: a depth that stays near its capacity is work piling up
/// (the soak samples these; a full queue drops or pushes back, as each owner documents).
fn render_queues(out: &mut Out, p: &str, metrics: &Metrics) {
    let depths = metrics.queue_depths();
    if depths.is_empty() {
        return;
    }
    let depth_name = format!("{p}_queue_depth");
    out.family(
        &depth_name,
        "gauge",
        "Messages waiting in a bounded internal queue, at scrape time.",
    );
    for (name, q) in &depths {
        out.sample(&depth_name, &[("queue", name.as_str())], q.depth as f64);
    }
    let capacity_name = format!("{p}_queue_capacity");
    out.family(
        &capacity_name,
        "gauge",
        "How many messages a bounded internal queue holds.",
    );
    for (name, q) in &depths {
        out.sample(
            &capacity_name,
            &[("queue", name.as_str())],
            q.capacity as f64,
        );
    }
}

/// The machine.
fn render_machine(out: &mut Out, p: &str, metrics: &Metrics, process: &ProcessSample) {
    render_queues(out, p, metrics);
    if let Some(celsius) = metrics.cpu_temperature_celsius() {
        out.one(
            &format!("{p}_cpu_temperature_celsius"),
            "gauge",
            "CPU temperature (thermal zone 0 on a Raspberry Pi).",
            celsius,
        );
    }
    if let Some(seconds) = process.cpu_seconds {
        out.one(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent by the daemon.",
            seconds,
        );
    }
    if let Some(bytes) = process.resident_memory_bytes {
        out.one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the daemon.",
            bytes as f64,
        );
    }
    if let Some(bytes) = process.virtual_memory_bytes {
        out.one(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory of the daemon.",
            bytes as f64,
        );
    }
    if let Some(fds) = process.open_fds {
        out.one(
            "process_open_fds",
            "gauge",
            "Open file descriptors of the daemon.",
            fds as f64,
        );
    }
    if let Some(threads) = process.threads {
        out.one(
            "process_threads",
            "gauge",
            "Threads of the daemon.",
            threads as f64,
        );
    }
}

/// Serves `GET /metrics` (Prometheus text) and `GET /health` (the health summary as JSON;
/// 200 unless failed, 503 when failed) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<StatusReport>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _peer)) = accepted else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Overflow policy: a connection beyond the limit is closed unanswered.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Some(path)) =
                tokio::time::timeout(REQUEST_TIMEOUT, read_request_path(&mut stream)).await
            else {
                let _ = stream
                    .write_all(&response(400, "text/plain", "bad request\n"))
                    .await;
                return;
            };
            let reply = match path.as_str() {
                "/metrics" => {
                    let report = status.borrow().clone();
                    let body = render(global(), &report, &ProcessSample::read());
                    response(200, "text/plain; version=0.0.4; charset=utf-8", &body)
                }
                "/health" => {
                    let report = status.borrow().clone();
                    let code = if report.health.state == crate::health::HealthState::Failed {
                        503
                    } else {
                        200
                    };
                    let body = serde_json::to_string(&report.health).unwrap_or_default();
                    response(code, "application/json", &body)
                }
                _ => response(404, "text/plain", "not found: try /metrics or /health\n"),
            };
            let _ = stream.write_all(&reply).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Reads the request head; returns the path of a `GET`, `None` for anything else.
async fn read_request_path(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") && !buffer.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buffer.len() + n > REQUEST_BYTES_MAX {
            return None;
        }
        buffer.extend_from_slice(chunk.get(..n)?);
    }
    request_path(&buffer)
}

/// The path of a `GET` request line, without the query.
fn request_path(head: &[u8]) -> Option<String> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut words = line.split(' ');
    let (method, target) = (words.next()?, words.next()?);
    if method != "GET" {
        return None;
    }
    Some(target.split('?').next().unwrap_or(target).to_owned())
}

fn response(code: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Binds the metrics listener (before READY, so a wrong address fails the start loudly).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen} (metrics.listen)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as a process may choose.
        let text = "1234 (fc (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 7 0 100 123456789 2048 18446744073709551615";
        let sample = parse_proc_stat(text, 100, 4096).unwrap();
        assert_eq!(sample.cpu_seconds, Some(3.0));
        assert_eq!(sample.threads, Some(7));
        assert_eq!(sample.virtual_memory_bytes, Some(123_456_789));
        assert_eq!(sample.resident_memory_bytes, Some(2048 * 4096));
        assert_eq!(parse_proc_stat("garbage", 100, 4096), None);
        assert_eq!(parse_proc_stat("1 (x) S 1 2", 100, 4096), None);
    }

    #[test]
    fn thermal_readings_are_millidegrees_and_nonsense_is_dropped() {
        assert_eq!(parse_thermal_millicelsius("48312\n"), Some(48.312));
        assert_eq!(parse_thermal_millicelsius("-273000"), None);
        assert_eq!(parse_thermal_millicelsius("hot"), None);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let metrics = Metrics::default();
        metrics.record_tool_call("get_status", ToolOutcome::Ok, Duration::from_millis(3));
        metrics.record_tool_call("get_status", ToolOutcome::Ok, Duration::from_millis(70));
        metrics.record_tool_call("get_status", ToolOutcome::Ok, Duration::from_secs(500));
        let text = render(
            &metrics,
            &StatusReport::without_vehicle(),
            &ProcessSample::default(),
        );
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} missing in\n{text}"))
                .to_owned()
        };
        let bucket = "flight_companion_mcp_tool_call_duration_seconds_bucket{tool=\"get_status\",outcome=\"ok\",le=";
        assert!(line(&format!("{bucket}\"0.005\"}}")).ends_with(" 1"));
        assert!(line(&format!("{bucket}\"0.1\"}}")).ends_with(" 2"));
        assert!(line(&format!("{bucket}\"120\"}}")).ends_with(" 2"));
        assert!(line(&format!("{bucket}\"+Inf\"}}")).ends_with(" 3"));
        assert!(
            line("flight_companion_mcp_tool_calls_total{tool=\"get_status\",outcome=\"ok\"}")
                .ends_with(" 3")
        );
    }

    #[test]
    fn a_watched_queue_shows_its_depth_and_is_forgotten_when_it_is_gone() {
        let metrics = Metrics::default();
        let (tx, rx) = tokio::sync::mpsc::channel::<u8>(8);
        metrics.watch_channel("test_queue", &tx);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        let text = render(
            &metrics,
            &StatusReport::without_vehicle(),
            &ProcessSample::default(),
        );
        assert!(
            text.contains("flight_companion_queue_depth{queue=\"test_queue\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("flight_companion_queue_capacity{queue=\"test_queue\"} 8\n"),
            "{text}"
        );
        // Watching holds a weak sender: the channel closes when its own senders go.
        drop(tx);
        drop(rx);
        assert!(metrics.queue_depths().is_empty());
        let text = render(
            &metrics,
            &StatusReport::without_vehicle(),
            &ProcessSample::default(),
        );
        assert!(!text.contains("queue_depth"), "{text}");
    }

    #[test]
    fn watching_a_channel_does_not_keep_it_open() {
        let metrics = Metrics::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(1);
        metrics.watch_channel("closing", &tx);
        drop(tx);
        assert_eq!(
            rx.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
        );
    }

    #[test]
    fn labels_are_escaped_and_their_number_is_capped() {
        let metrics = Metrics::default();
        metrics.record_envelope_refusal("quote\" back\\slash\nnewline");
        for i in 0..(LABEL_SETS_MAX + 10) {
            metrics.record_security_event(&format!("kind{i}"));
        }
        let text = render(
            &metrics,
            &StatusReport::without_vehicle(),
            &ProcessSample::default(),
        );
        assert!(
            text.contains("reason=\"quote\\\" back\\\\slash\\nnewline\""),
            "{text}"
        );
        let kinds = text
            .lines()
            .filter(|l| l.starts_with("flight_companion_security_events_total{"))
            .count();
        assert_eq!(kinds, LABEL_SETS_MAX + 1, "capped, plus `other`");
        assert!(
            text.contains("flight_companion_security_events_total{kind=\"other\"} 10"),
            "{text}"
        );
    }

    #[test]
    fn every_counter_family_ends_in_total_and_every_family_has_help_and_type() {
        let metrics = Metrics::default();
        metrics.record_estop("mcp_tool");
        metrics.set_cpu_temperature(Some(51.5));
        let text = render(
            &metrics,
            &StatusReport::without_vehicle(),
            &ProcessSample::read(),
        );
        let mut families = 0;
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut words = line.split(' ').skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            families += 1;
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            } else {
                assert!(!name.ends_with("_total"), "{line}");
            }
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert!(families > 20, "{text}");
        assert!(
            text.contains("flight_companion_cpu_temperature_celsius 51.5"),
            "{text}"
        );
        assert!(
            text.contains("flight_companion_estops_total{trigger=\"mcp_tool\"} 1"),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn request_paths() {
        assert_eq!(
            request_path(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").as_deref(),
            Some("/metrics")
        );
        assert_eq!(request_path(b"POST /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_path(b"\xff\xfe"), None);
    }
}
