//! `flight-companion probe`: the first thing a person runs on a new vehicle or a HIL rig.
//!
//! It connects like a ground station (system 255, component 190, `MAV_TYPE_GCS`), waits for
//! the autopilot's heartbeat, asks for telemetry, collects it briefly, prints the vehicle
//! state and link health, and exits 0 — or exits 1 saying why if no autopilot answers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::link::dialect::MavType;
use crate::link::endpoint::Endpoint;
use crate::link::pin::{PeerPolicy, PinRule};
use crate::link::signing::{Acceptance, SigningMode};
use crate::link::transport::{Link, LinkOptions, SigningSetup};
use crate::supervisor::{Supervisor, SupervisorOptions};
use crate::vehicle::snapshot::VehicleSnapshot;

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Autopilot endpoint, e.g. `serial:/dev/ttyACM0:115200` or `udpin:0.0.0.0:14550`.
    #[arg(long)]
    pub link: Endpoint,
    /// Print the vehicle state as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the heartbeat and then to collect telemetry.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Sign with this MAVLink 2 key and accept only frames signed with it (a file: 32
    /// bytes, or 64 hex digits, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// After the heartbeat, how long at most to wait for the requested telemetry to arrive.
const COLLECT_FOR: Duration = Duration::from_millis(2500);
/// After the heartbeat, how long at least to listen: 1 Hz messages (SIMSTATE,
/// EXTENDED_SYS_STATE on some firmwares) need a full period to show up.
const COLLECT_AT_LEAST: Duration = Duration::from_millis(1200);

pub async fn run(args: ProbeArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        anyhow::bail!("--seconds must be in (0, 3600], got {}", args.seconds);
    }
    let wait_for_heartbeat = Duration::from_secs_f64(args.seconds);
    let link_stopped = shutdown.child_token();
    let signing = match &args.signing_key {
        None => None,
        Some(path) => Some(SigningSetup {
            key: crate::link::keys::load_key(path).map_err(anyhow::Error::msg)?,
            mode: SigningMode::Required,
            acceptance: Acceptance::SignedOnly,
            // The probe is its own system (255): its streams cannot collide with the daemon's.
            link_id: 0,
            initial_timestamp: 0,
            wall_clock: true,
            timestamp_store: None,
        }),
    };
    let (link, mut events) = Link::open(
        &args.link,
        LinkOptions {
            system_id: 255,
            component_id: 190,
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_millis(1000),
            signing,
            peer: PeerPolicy {
                rule: PinRule::FirstAutopilot,
                release_after: Duration::from_secs(3),
            },
        },
        link_stopped.clone(),
    )
    .await
    .with_context(|| format!("cannot open {}", args.link))?;

    let options = SupervisorOptions {
        heartbeat_type: MavType::MAV_TYPE_GCS,
        system_id: 255,
        component_id: 190,
        ..SupervisorOptions::from_config(&crate::config::VehicleConfig::default())
    };
    let started = Instant::now();
    let mut supervisor = Supervisor::new(options, started);
    let mut found_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let deadline = match found_at {
            Some(at) => at + COLLECT_FOR,
            None => started + wait_for_heartbeat,
        };
        let listened_enough = found_at.is_some_and(|at| now >= at + COLLECT_AT_LEAST);
        if now >= deadline || (listened_enough && telemetry_complete(&supervisor, now)) {
            break;
        }
        let wake = supervisor
            .poll_timeout()
            .min(deadline)
            .min(found_at.map_or(deadline, |at| at + COLLECT_AT_LEAST));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(ExitCode::from(130)),
            event = events.recv() => match event {
                Some(event) => supervisor.handle_link_event(Instant::now(), &event),
                // The link's token is a child of `shutdown`: it ends first when we stop.
                None if link_stopped.is_cancelled() => return Ok(ExitCode::from(130)),
                None => anyhow::bail!("the link task ended unexpectedly"),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = Instant::now();
        while let Some(message) = supervisor.poll_transmit(now) {
            let _ = link.send(&message);
        }
        while supervisor.poll_notice().is_some() {}
        if found_at.is_none() && supervisor.vehicle().autopilot().is_some() {
            found_at = Some(now);
        }
    }

    let (counters, reconnects) = link.counters();
    let snapshot = supervisor.snapshot(Instant::now(), counters, reconnects);
    if snapshot.autopilot.is_none() {
        eprintln!(
            "error: no autopilot answered on {} within {:.1} s (link {}, {} frames received, {} CRC errors, {} garbage bytes); check the cable or address, the baud rate, and that the autopilot sends MAVLink 2 on that port",
            args.link,
            args.seconds,
            if snapshot.link.connected {
                "open"
            } else {
                "not open"
            },
            snapshot.link.frames_received,
            snapshot.link.crc_errors,
            snapshot.link.garbage_bytes,
        );
        if let Some(last) = &snapshot.link.trust.last_refusal {
            eprintln!(
                "error: {} frames refused by the link (signing, pinned peer); the last: {last}",
                snapshot.link.trust.refused.total()
            );
        }
        return Ok(ExitCode::from(1));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", describe(&snapshot));
    }
    Ok(ExitCode::SUCCESS)
}

/// Enough telemetry has arrived to describe the vehicle.
fn telemetry_complete(supervisor: &Supervisor, now: Instant) -> bool {
    let s = supervisor.vehicle().snapshot(now);
    !s.position.freshness.stale && !s.battery.freshness.stale && !s.gps.freshness.stale
}

/// A human summary, one fact per line.
pub fn describe(s: &VehicleSnapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let stale = |f: &crate::vehicle::snapshot::Freshness| if f.stale { " (stale)" } else { "" };
    if let Some(a) = &s.autopilot {
        let _ = writeln!(
            out,
            "autopilot: {:?} {} system {} component {}{}{}",
            a.autopilot,
            a.vehicle_type,
            a.system_id,
            a.component_id,
            a.firmware_version
                .as_deref()
                .map(|v| format!(", firmware {v}"))
                .unwrap_or_default(),
            if a.simulated { ", simulated" } else { "" }
        );
    }
    let _ = writeln!(
        out,
        "mode: {} {}, landed state {}, status {}{}",
        s.mode.flight_mode,
        if s.mode.armed { "armed" } else { "disarmed" },
        s.mode.landed_state,
        s.mode.system_status,
        stale(&s.mode.freshness)
    );
    let p = &s.position;
    let _ = writeln!(
        out,
        "position: {:.7}, {:.7}, {:.1} m MSL, {:.1} m above home, {:.1} m/s{}",
        p.latitude_deg,
        p.longitude_deg,
        p.altitude_msl_m,
        p.altitude_relative_m,
        p.ground_speed_m_s,
        stale(&p.freshness)
    );
    let _ = writeln!(
        out,
        "heading: {:.0} deg{}",
        s.attitude.heading_deg,
        stale(&s.attitude.freshness)
    );
    let b = &s.battery;
    let _ = writeln!(
        out,
        "battery: {:.2} V, {}, {}{}",
        b.voltage_v,
        b.current_a
            .map(|c| format!("{c:.1} A"))
            .unwrap_or_else(|| "current unknown".into()),
        b.remaining_percent
            .map(|r| format!("{r:.0} % left"))
            .unwrap_or_else(|| "remaining unknown".into()),
        stale(&b.freshness)
    );
    let g = &s.gps;
    let _ = writeln!(
        out,
        "gps: {}, {} satellites, hdop {}{}",
        g.fix_type,
        g.satellites_visible,
        g.hdop
            .map(|h| format!("{h:.1}"))
            .unwrap_or_else(|| "unknown".into()),
        stale(&g.freshness)
    );
    let _ = writeln!(
        out,
        "position estimate: {}{}",
        if s.estimator.position_valid {
            "valid"
        } else {
            "NOT valid"
        },
        stale(&s.estimator.freshness)
    );
    if let Some(h) = &s.home {
        let _ = writeln!(
            out,
            "home: {:.7}, {:.7}, {:.1} m MSL",
            h.latitude_deg, h.longitude_deg, h.altitude_msl_m
        );
    }
    for t in &s.status_texts {
        let _ = writeln!(
            out,
            "statustext ({}, {} ms ago): {}",
            t.severity, t.age_ms, t.text
        );
    }
    let l = &s.link;
    let _ = writeln!(
        out,
        "link: heartbeat {} ago, {} frames, {:.1} % lost, {} CRC errors, {} parse errors, {} unknown messages, {} garbage bytes, {} reconnects",
        l.heartbeat_age_ms
            .map(|a| format!("{a} ms"))
            .unwrap_or_else(|| "never".into()),
        l.frames_received,
        l.loss_percent,
        l.crc_errors,
        l.parse_errors,
        l.unknown_messages,
        l.garbage_bytes,
        l.reconnects
    );
    let t = &l.trust;
    let r = &t.refused;
    if t.signing != crate::link::signing::SigningMode::Off || r.total() > 0 {
        let _ = writeln!(
            out,
            "signing: {}, {} signed frames; refused: {} unsigned, {} bad signature, {} replayed, {} old timestamp, {} from another peer",
            t.signing,
            t.signed_frames,
            r.unsigned,
            r.bad_signature,
            r.replayed,
            r.old_timestamp,
            r.foreign_peer + r.connection_refused
        );
    }
    out
}
