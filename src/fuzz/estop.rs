//! The e-stop core under any order of inputs: triggers from every source, resets by every
//! role, two-step kills with right and wrong codes, vehicle states of any kind (as the
//! vehicle state reports them), mode acknowledgements, ground and autopilot links coming
//! and going, time jumping. Checked after every input:
//! - the latch never clears but by a reset that answered `Ok`;
//! - a trigger, an executing kill and a raised failsafe leave it latched;
//! - while latched, motion is refused (with the way out in words); when not, it is not;
//! - termination or a forced disarm is never sent unless configured and confirmed with
//!   the code the core gave;
//! - `poll_timeout` is never in the past of the input that set it by more than a turn.

use std::time::{Duration, Instant};

use super::Rng;
use crate::estop::core::{
    EmergencyStop, GroundLossAction, HoldMode, KillAction, KillReply, Source, StopCommand,
    StopOptions, Trigger,
};
use crate::geodesy::GeoPosition;
use crate::role::Role;
use crate::vehicle::modes::{AutopilotKind, FlightMode};
use crate::vehicle::snapshot::FixType;
use crate::vehicle::view::{Landed, VehicleView};

const SOURCES: [Source; 5] = [
    Source::McpTool,
    Source::MqttPanic,
    Source::Local,
    Source::Hardware,
    Source::Failsafe,
];
const ROLES: [Role; 4] = [Role::Public, Role::ReadOnly, Role::Operator, Role::Admin];
const MODES: [FlightMode; 8] = [
    FlightMode::Guided,
    FlightMode::Loiter,
    FlightMode::Brake,
    FlightMode::Land,
    FlightMode::Rtl,
    FlightMode::Stabilize,
    FlightMode::AltHold,
    FlightMode::Auto,
];

/// Options within what `config.rs` accepts (a resend interval of 0 would make the core
/// resend at every poll, which the configuration refuses).
fn options(rng: &mut Rng) -> StopOptions {
    let ms = |rng: &mut Rng, min: usize, max: usize| {
        Duration::from_millis((min + rng.below(max - min + 1)) as u64)
    };
    StopOptions {
        hold_mode: *rng.pick(&[HoldMode::Brake, HoldMode::Loiter]),
        hold_confirm_timeout: ms(rng, 200, 10_000),
        resend_interval: ms(rng, 50, 2000),
        kill_action: *rng.pick(&[
            KillAction::None,
            KillAction::ForceDisarm,
            KillAction::Terminate,
        ]),
        kill_confirm_window: ms(rng, 1000, 60_000),
        ground_link_timeout: rng.one_in(3).then(|| ms(rng, 1000, 10_000)),
        ground_activity_timeout: rng.one_in(3).then(|| ms(rng, 1000, 10_000)),
        ground_loss_hold: ms(rng, 0, 10_000),
        ground_loss_action: *rng.pick(&[GroundLossAction::ReturnHome, GroundLossAction::Land]),
        battery_critical_percent: rng.one_in(2).then(|| rng.below(101) as f64),
        position_loss_grace: ms(rng, 500, 2000),
    }
}

fn vehicle(rng: &mut Rng, now: Instant) -> VehicleView {
    if rng.one_in(10) {
        return VehicleView::UNKNOWN;
    }
    VehicleView {
        autopilot: *rng.pick(&[
            None,
            Some(AutopilotKind::Ardupilot),
            Some(AutopilotKind::Px4),
            Some(AutopilotKind::Other),
        ]),
        heartbeat_fresh: !rng.one_in(4),
        heartbeat_at: (!rng.one_in(5))
            .then(|| now.checked_sub(Duration::from_millis(rng.below(5000) as u64)))
            .flatten(),
        armed: rng.one_in(2),
        landed: *rng.pick(&[Landed::OnGround, Landed::InAir, Landed::Unknown]),
        mode: (!rng.one_in(6)).then(|| *rng.pick(&MODES)),
        position: (!rng.one_in(4)).then(|| GeoPosition {
            latitude_deg: 47.0 + rng.below(1000) as f64 * 1e-5,
            longitude_deg: 8.0,
            altitude_m: rng.below(200) as f64 - 10.0,
        }),
        velocity_ned_m_s: [0.0; 3],
        position_valid: !rng.one_in(4),
        battery_remaining_percent: (!rng.one_in(3)).then(|| rng.below(101) as f64),
        gps_fix_type: *rng.pick(&[FixType::NoFix, FixType::Fix3d, FixType::RtkFixed]),
        satellites_visible: rng.below(20) as u8,
        hdop: None,
        home_altitude_msl_m: None,
    }
}

pub fn run(rng: &mut Rng) -> Result<(), String> {
    let options = options(rng);
    let kill_action = options.kill_action;
    let mut now = Instant::now();
    let mut stop = EmergencyStop::new(options, now, rng.one_in(2));
    // The code the core gave for the pending kill, if any.
    let mut kill_code: Option<u32> = None;
    let mut kill_confirmed = false;
    for step in 0..1 + rng.below(40) {
        let was_latched = stop.is_latched();
        let mut reset_ok = false;
        let mut must_latch = false;
        match rng.below(11) {
            0 => {
                stop.handle_trigger(
                    now,
                    Trigger {
                        source: *rng.pick(&SOURCES),
                        identity: rng.text(20),
                        reason: rng.text(40),
                    },
                );
                must_latch = true;
            }
            1 => {
                let role = *rng.pick(&ROLES);
                reset_ok = stop.handle_reset(now, "fuzz", role).is_ok();
                if reset_ok && role < Role::Admin && was_latched {
                    return Err(format!("a {role} reset the latch"));
                }
            }
            2 => {
                let code = match (kill_code, rng.below(3)) {
                    (Some(code), 0 | 1) => Some(code),
                    (_, 0) => None,
                    _ => Some(rng.next_u64() as u32),
                };
                let trigger = Trigger {
                    source: Source::McpTool,
                    identity: "fuzz".into(),
                    reason: "kill".into(),
                };
                match stop.handle_kill(now, trigger, code, rng.next_u64() as u32) {
                    KillReply::ConfirmationRequired { code, .. } => kill_code = Some(code),
                    KillReply::Executing(_) => {
                        if code.is_some() && code == kill_code {
                            kill_confirmed = true;
                        }
                        must_latch = true;
                    }
                    KillReply::Refused(why) => {
                        if why.trim().is_empty() {
                            return Err("a kill refused without a reason".into());
                        }
                    }
                }
            }
            3 | 4 => stop.handle_vehicle(now, vehicle(rng, now)),
            5 => stop.handle_mode_ack(now, rng.one_in(2), "fuzz"),
            6 => stop.handle_ground_link(now, rng.one_in(2)),
            7 => stop.handle_ground_activity(now),
            8 => stop.handle_autopilot_link(now, rng.one_in(3)),
            _ => {
                now += rng.step(700, 5, 30_000);
            }
        }
        let mut sent = 0;
        while let Some(command) = stop.poll_transmit(now) {
            sent += 1;
            if sent > 100 {
                return Err(format!(
                    "step {step}: poll_transmit never ends at one instant (last {command:?})"
                ));
            }
            let drastic = matches!(command, StopCommand::Terminate | StopCommand::ForceDisarm);
            if drastic {
                let allowed = match command {
                    StopCommand::Terminate => kill_action == KillAction::Terminate,
                    _ => kill_action == KillAction::ForceDisarm,
                };
                if !allowed || !kill_confirmed {
                    return Err(format!(
                        "step {step}: {command:?} sent with kill_action {kill_action:?}, \
                         confirmed: {kill_confirmed}"
                    ));
                }
            }
        }
        let mut events = 0;
        while let Some(event) = stop.poll_event() {
            events += 1;
            if events > 100 {
                return Err(format!(
                    "step {step}: poll_event never ends (last {event:?})"
                ));
            }
        }
        let latched = stop.is_latched();
        if was_latched && !latched && !reset_ok {
            return Err(format!("step {step}: the latch cleared without a reset"));
        }
        if must_latch && !latched {
            return Err(format!(
                "step {step}: a trigger or a kill left it unlatched"
            ));
        }
        match (latched, stop.motion_refusal()) {
            (true, None) => return Err(format!("step {step}: latched, motion accepted")),
            (false, Some(r)) => return Err(format!("step {step}: not latched, refused: {r}")),
            (true, Some(r)) if !r.contains("reset_emergency_stop") => {
                return Err(format!("step {step}: the refusal names no way out: {r}"));
            }
            _ => {}
        }
        if stop.status().latched != latched {
            return Err(format!("step {step}: the status disagrees with the latch"));
        }
    }
    Ok(())
}
