//! Serves the simulated autopilot over real MAVLink bytes (`flight-companion sim`).
//!
//! One [`SimAutopilot`] behind one or more links (default `tcpin:127.0.0.1:5760`, where the
//! daemon's default connects). Every message the vehicle sends goes to every link, from
//! component 1; frames from any link reach the same vehicle.
//!
//! Virtual time runs `--speedup` times faster than the wall clock; the core steps its physics
//! at a fixed 50 Hz of virtual time whatever the speedup.
//!
//! Lines on stdout (flushed one by one; tests wait for them):
//! - `sim: serving ENDPOINT` once per link after it is bound, with the real port
//!   (`sim: serving tcpin:127.0.0.1:41234` when started on port 0);
//! - `sim: mode MODE`, `sim: armed`, `sim: disarmed`;
//! - `sim: command NAME from SYS/COMP -> RESULT` for each COMMAND_LONG/COMMAND_INT;
//! - `sim: companion heartbeat seen` on the first heartbeat from component 191, then
//!   `sim: companion heartbeat lost` / `sim: companion heartbeat back` (silent for more than
//!   3 s of virtual time, and back);
//! - `sim: statustext TEXT` for each STATUSTEXT the vehicle sends;
//! - `sim: signing on N links (key FINGERPRINT)` at start when `--signing-store` holds a key,
//!   `sim: signing key installed (key FINGERPRINT)` / `sim: signing off` after SETUP_SIGNING,
//!   and `sim: refused REASON: WHAT` when a link refuses a frame (the first of each reason at
//!   once, then at most one line per reason every 10 s).
//!
//! Signing is ArduPilot's (`super::signing`): link N is channel N and signs with link id N;
//! channel 0 (the first `--link`, SITL's SERIAL0 / a flight controller's USB) accepts
//! unsigned frames, the others only RADIO_STATUS and RADIO unsigned.
//!
//! With `--stamp-monotonic`, a `command` line also carries `mono_ns=N` before its time: the
//! `CLOCK_MONOTONIC` nanoseconds at which the link read the bytes of that command (taken at
//! the read, not at the print), which a benchmark compares with its own stamp of the trigger.
//!
//! Every line but `serving` ends with ` (t=SECONDS s)`, the simulated time of the event with
//! millisecond resolution, the same clock as `time_boot_ms` in the vehicle's telemetry: a test
//! can measure how long after a reported position the daemon's command arrived.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::args::{SimArgs, SimAutopilot as SimAutopilotArg};
use super::autopilot::{
    AUTOPILOT_COMPONENT_ID, PHYSICS_STEP, Personality, SimAutopilot, SimEvent, SimOptions,
};
use super::physics::GeoPoint;
use super::signing::StoredKey;
use crate::link::endpoint::Endpoint;
use crate::link::transport::{Link, LinkEvent, LinkHandle, LinkOptions, SendError};

/// Frames from all links, merged. Overflow policy: each link's forwarder awaits capacity, so
/// a busy simulator pushes back on the link's own bounded channel (and then its socket).
const MERGED_EVENT_CAPACITY: usize = 256;
/// The timer never fires faster than this, whatever the speedup; the core catches up with
/// several physics steps per wake-up instead.
const TICK_PERIOD_MIN: Duration = Duration::from_millis(2);
/// A speedup beyond this makes no sense on a 2-core machine and is refused.
const SPEEDUP_MAX: f64 = 1000.0;

/// Runs the simulator until `shutdown`; exit code 0 on a clean stop.
pub async fn run(args: SimArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    if !(args.speedup.is_finite() && args.speedup > 0.0 && args.speedup <= SPEEDUP_MAX) {
        anyhow::bail!(
            "--speedup {} is outside (0, {SPEEDUP_MAX}]; 1 is real time",
            args.speedup
        );
    }
    if let Some(ready_s) = args.ekf_ready_s
        && !(ready_s.is_finite() && (0.0..=3600.0).contains(&ready_s))
    {
        anyhow::bail!("--ekf-ready-s {ready_s} is outside 0..=3600 simulated seconds");
    }
    let endpoints = if args.links.is_empty() {
        vec![Endpoint::default_sim()]
    } else {
        args.links.clone()
    };
    let options = LinkOptions {
        system_id: args.system_id,
        component_id: AUTOPILOT_COMPONENT_ID,
        reconnect_backoff_min: Duration::from_millis(100),
        reconnect_backoff_max: Duration::from_secs(2),
        signing: None,
        peer: crate::link::pin::PeerPolicy::OPEN,
    };
    let (merged_tx, mut merged) = mpsc::channel::<LinkEvent>(MERGED_EVENT_CAPACITY);
    let mut links: Vec<(String, LinkHandle)> = Vec::new();
    for endpoint in &endpoints {
        let (handle, mut events) = Link::open(endpoint, options.clone(), shutdown.clone())
            .await
            .with_context(|| format!("cannot serve {endpoint}"))?;
        let shown = shown_endpoint(endpoint, &handle);
        say(&format!("serving {shown}"));
        let tx = merged_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if tx.send(event).await.is_err() {
                    break;
                }
            }
        });
        links.push((shown, handle));
    }
    drop(merged_tx);
    let mut signing = Signing::load(args.signing_store.clone())?;
    signing.activate(&links);

    let (lat_deg, lon_deg, alt_amsl_m) = args.home;
    let mut sim = SimAutopilot::new(SimOptions {
        autopilot: match args.autopilot {
            SimAutopilotArg::Ardupilot => Personality::ArduPilot,
            SimAutopilotArg::Px4 => Personality::Px4,
        },
        home: GeoPoint {
            lat_deg,
            lon_deg,
            alt_amsl_m,
        },
        seed: args.seed,
        system_id: args.system_id,
        ekf_ready_s: args.ekf_ready_s,
    });
    sim.set_extra_telemetry_hz(args.extra_telemetry_hz);
    let start = Instant::now();
    let virtual_now = || start.elapsed().mul_f64(args.speedup);
    let mut ticker = tokio::time::interval(PHYSICS_STEP.div_f64(args.speedup).max(TICK_PERIOD_MIN));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut send_failures: u64 = 0;
    let stamp = args.stamp_monotonic.then(crate::clock::MonotonicStamp::new);

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            event = merged.recv() => match event {
                Some(LinkEvent::Frame { frame, received_at }) => {
                    let now = virtual_now();
                    sim.handle_message(now, &frame.header, &frame.message);
                    let read_ns = stamp.map(|s| s.ns(received_at));
                    send_failures += flush(&mut sim, now, &links, read_ns);
                    while let Some(setup) = sim.poll_signing_setup() {
                        signing.install(setup, &links, &mut sim);
                        send_failures += flush(&mut sim, now, &links, None);
                    }
                }
                Some(LinkEvent::Connected { peer }) => tracing::info!(%peer, "peer connected"),
                Some(LinkEvent::Disconnected { reason }) => {
                    tracing::info!(%reason, "peer disconnected");
                }
                Some(LinkEvent::Refused(refusal)) => {
                    say(&format!("refused {}: {}", refusal.reason.as_str(), refusal.detail));
                }
                // Every link ended: only shutdown does that.
                None => break,
            },
            _ = ticker.tick() => {
                let now = virtual_now();
                sim.step(now);
                send_failures += flush(&mut sim, now, &links, None);
                signing.tick(&sim, now, &links);
            }
        }
    }
    let counters = sim.counters();
    tracing::info!(
        ignored = counters.ignored,
        rejected = counters.rejected,
        dropped = counters.dropped,
        send_failures,
        "simulator stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends what the vehicle has to say to every link and prints its events; returns how many
/// sends failed because a link's queue was full (a lagging peer loses telemetry, as over a
/// real radio). `read_ns`: when the frame just handled was read (`--stamp-monotonic`), put
/// on the command lines it caused.
fn flush(
    sim: &mut SimAutopilot,
    now: Duration,
    links: &[(String, LinkHandle)],
    read_ns: Option<u64>,
) -> u64 {
    let mut failures = 0;
    while let Some(message) = sim.poll_transmit(now) {
        for (name, handle) in links {
            match handle.send(&message) {
                Ok(()) | Err(SendError::NotConnected) => {}
                Err(SendError::Full) => {
                    failures += 1;
                    tracing::debug!(link = %name, "send queue full; message dropped");
                }
            }
        }
    }
    while let Some(event) = sim.poll_event() {
        let stamp = match (&event, read_ns) {
            (SimEvent::Command { .. }, Some(ns)) => format!(" mono_ns={ns}"),
            _ => String::new(),
        };
        say(&format!("{event}{stamp} (t={:.3} s)", now.as_secs_f64()));
    }
    failures
}

/// The simulator's signing storage and the links' signing, by ArduPilot's rules
/// (`super::signing`).
struct Signing {
    /// The storage file; `None`: the key lives in memory and is lost at exit.
    store: Option<std::path::PathBuf>,
    stored: Option<StoredKey>,
    last_save: Instant,
    last_gps_time: Option<Instant>,
    /// SITL's `start_time_UTC`: the wall clock at start, from which its GPS counts.
    start_utc: Duration,
}

/// ArduPilot saves the timestamp at most this often (`save_signing_timestamp`).
const SIGNING_SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// How often the simulated GPS time raises the signing timestamps.
const GPS_TIME_INTERVAL: Duration = Duration::from_secs(1);

impl Signing {
    fn load(store: Option<std::path::PathBuf>) -> anyhow::Result<Signing> {
        let stored = match &store {
            None => None,
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => StoredKey::decode(&bytes)
                    .map_err(|e| anyhow::anyhow!("--signing-store {}: {e}", path.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => anyhow::bail!("--signing-store {}: {e}", path.display()),
            },
        };
        Ok(Signing {
            store,
            stored,
            last_save: Instant::now(),
            last_gps_time: None,
            start_utc: std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        })
    }

    /// `load_signing_key` on every link: link N is channel N.
    fn activate(&self, links: &[(String, LinkHandle)]) {
        use crate::link::signing::{Acceptance, LinkSigning, SigningMode};
        let activation = self.stored.as_ref().and_then(StoredKey::activation);
        for (channel, (_, handle)) in links.iter().enumerate() {
            let channel = u8::try_from(channel).unwrap_or(u8::MAX);
            let signing = activation.as_ref().map(|(key, timestamp)| {
                LinkSigning::new(
                    key.clone(),
                    channel,
                    Acceptance::ArduPilot { channel },
                    *timestamp,
                )
            });
            handle.set_signing(signing, SigningMode::Required);
        }
        if let Some((key, _)) = &activation {
            say(&format!(
                "signing on {} links (key {})",
                links.len(),
                key.fingerprint()
            ));
        }
    }

    /// SETUP_SIGNING: stored first; activated only if that worked (`handle_setup_signing`).
    fn install(
        &mut self,
        setup: StoredKey,
        links: &[(String, LinkHandle)],
        sim: &mut SimAutopilot,
    ) {
        if let Err(error) = self.save(&setup) {
            tracing::error!(%error, "cannot store the signing key");
            sim.signing_save_failed();
            return;
        }
        match setup.signing_key() {
            Some(key) => say(&format!(
                "signing key installed (key {})",
                key.fingerprint()
            )),
            None => say("signing off"),
        }
        self.stored = Some(setup);
        self.last_save = Instant::now();
        self.activate(links);
    }

    /// The GPS time, and the periodic save of the newest timestamp.
    fn tick(&mut self, sim: &SimAutopilot, now: Duration, links: &[(String, LinkHandle)]) {
        let Some(stored) = self.stored.clone() else {
            return;
        };
        if stored.activation().is_none() {
            return;
        }
        let wall = Instant::now();
        if sim.gps_time_known()
            && self
                .last_gps_time
                .is_none_or(|at| wall.duration_since(at) >= GPS_TIME_INTERVAL)
        {
            self.last_gps_time = Some(wall);
            let gps_time = crate::link::signing::timestamp_at(self.start_utc + now);
            for (_, handle) in links {
                handle.advance_signing_timestamp(gps_time);
            }
        }
        if wall.duration_since(self.last_save) < SIGNING_SAVE_INTERVAL {
            return;
        }
        self.last_save = wall;
        let newest = links
            .iter()
            .filter_map(|(_, handle)| handle.signing_timestamp())
            .max();
        if let Some(timestamp) = newest.filter(|t| *t > stored.timestamp) {
            let update = StoredKey {
                timestamp,
                ..stored
            };
            match self.save(&update) {
                Ok(()) => self.stored = Some(update),
                Err(error) => tracing::error!(%error, "cannot store the signing timestamp"),
            }
        }
    }

    /// Writes storage atomically (mode 0600); in memory only without `--signing-store`.
    fn save(&self, key: &StoredKey) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let Some(path) = &self.store else {
            return Ok(());
        };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&key.encode())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// The endpoint as served: a listener on port 0 shows the port it got.
fn shown_endpoint(endpoint: &Endpoint, handle: &LinkHandle) -> String {
    match (endpoint, handle.local_addr()) {
        (Endpoint::TcpIn { .. }, Some(addr)) => format!("tcpin:{addr}"),
        (Endpoint::UdpIn { .. }, Some(addr)) => format!("udpin:{addr}"),
        _ => endpoint.to_string(),
    }
}

/// One line on stdout, flushed at once: tests and people wait for these lines.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) must not stop the vehicle.
    let _ = writeln!(out, "sim: {line}");
    let _ = out.flush();
}
