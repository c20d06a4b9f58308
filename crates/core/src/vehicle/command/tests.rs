use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::link::dialect::{COMMAND_ACK_DATA, HEARTBEAT_DATA, MavAutopilot, MavModeFlag};

const US: (u8, u8) = (1, 191);
const ARM: MavCmd = MavCmd::MAV_CMD_COMPONENT_ARM_DISARM;
const TAKEOFF: MavCmd = MavCmd::MAV_CMD_NAV_TAKEOFF;

fn options() -> CommandOptions {
    CommandOptions {
        ack_timeout: Duration::from_secs(1),
        retries_max: 3,
        in_progress_timeout: Duration::from_secs(30),
        source_system: US.0,
        source_component: US.1,
    }
}

fn header(system_id: u32, component_id: u8) -> MavHeader {
    MavHeader {
        system_id,
        component_id,
        sequence: 0,
    }
}

fn long(command: MavCmd) -> CommandRequest {
    CommandRequest::Long {
        command,
        params: [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    }
}

fn ack(command: MavCmd, result: MavResult) -> MavMessage {
    MavMessage::COMMAND_ACK(COMMAND_ACK_DATA {
        command,
        result,
        target_system: US.0,
        target_component: US.1,
        ..COMMAND_ACK_DATA::DEFAULT
    })
}

fn confirmation(msg: &MavMessage) -> u8 {
    match msg {
        MavMessage::COMMAND_LONG(c) => c.confirmation,
        other => panic!("expected COMMAND_LONG, got {other:?}"),
    }
}

fn events(protocol: &mut CommandProtocol) -> Vec<CommandEvent> {
    std::iter::from_fn(|| protocol.poll_event()).collect()
}

fn finished(id: CommandId, command: MavCmd, outcome: CommandOutcome) -> CommandEvent {
    CommandEvent::Finished {
        id,
        command,
        outcome,
    }
}

#[test]
fn retries_with_confirmation_then_times_out() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut p = CommandProtocol::new(options());
    let id = p.submit(t0, 1, 1, long(ARM)).unwrap();
    assert_eq!(p.poll_timeout(), None, "nothing sent yet");
    let first = p.poll_transmit(t0).unwrap();
    match &first {
        MavMessage::COMMAND_LONG(c) => {
            assert_eq!(
                (c.command, c.target_system, c.target_component),
                (ARM, 1, 1)
            );
            assert_eq!((c.param1, c.confirmation), (1.0, 0));
        }
        other => panic!("{other:?}"),
    }
    assert!(p.poll_transmit(t0).is_none());
    assert!(p.poll_transmit(t0 + Duration::from_millis(999)).is_none());
    for retry in 1..=3u8 {
        let at = t0 + s(u64::from(retry));
        assert_eq!(p.poll_timeout(), Some(at));
        let msg = p.poll_transmit(at).unwrap();
        assert_eq!(confirmation(&msg), retry);
        assert!(p.poll_transmit(at).is_none());
        assert!(events(&mut p).is_empty());
    }
    assert_eq!(p.poll_timeout(), Some(t0 + s(4)));
    assert!(p.poll_transmit(t0 + s(4)).is_none(), "no fifth attempt");
    let outcome = CommandOutcome::TimedOut {
        attempts: 4,
        elapsed: s(4),
    };
    assert_eq!(events(&mut p), [finished(id, ARM, outcome)]);
    assert_eq!(
        finished(id, ARM, outcome).to_string(),
        "no COMMAND_ACK for MAV_CMD_COMPONENT_ARM_DISARM after 4 attempts over 4.0 s: is the link up?"
    );
    assert_eq!(p.pending_count(), 0);
    assert_eq!(p.poll_timeout(), None);

    // The ACK that finally arrives is late: ignored and counted.
    p.handle_message(
        t0 + s(5),
        &header(1, 1),
        &ack(ARM, MavResult::MAV_RESULT_ACCEPTED),
    );
    assert!(events(&mut p).is_empty());
    assert_eq!((p.late_acks(), p.foreign_acks()), (1, 0));
}

#[test]
fn accepted_after_a_retry_and_duplicates_are_counted() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let id = p.submit(t0, 1, 1, long(ARM)).unwrap();
    p.poll_transmit(t0).unwrap();
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(confirmation(&p.poll_transmit(t1).unwrap()), 1);
    let accepted = ack(ARM, MavResult::MAV_RESULT_ACCEPTED);
    p.handle_message(t1, &header(1, 1), &accepted);
    // Both sends were answered.
    p.handle_message(t1, &header(1, 1), &accepted);
    assert_eq!(
        events(&mut p),
        [finished(id, ARM, CommandOutcome::Accepted)]
    );
    assert_eq!(p.late_acks(), 1);
    assert!(p.poll_transmit(t0 + Duration::from_secs(10)).is_none());
    // Finished: the same command may be sent again.
    assert!(p.submit(t1, 1, 1, long(ARM)).is_ok());
}

#[test]
fn acks_from_elsewhere_or_for_other_commands_are_ignored() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let id = p.submit(t0, 1, 1, long(ARM)).unwrap();
    p.poll_transmit(t0).unwrap();
    let accepted = ack(ARM, MavResult::MAV_RESULT_ACCEPTED);
    // Another system, another component, another command, addressed to someone else.
    p.handle_message(t0, &header(2, 1), &accepted);
    p.handle_message(t0, &header(1, 100), &accepted);
    p.handle_message(
        t0,
        &header(1, 1),
        &ack(TAKEOFF, MavResult::MAV_RESULT_ACCEPTED),
    );
    let mut for_gcs = accepted.clone();
    if let MavMessage::COMMAND_ACK(a) = &mut for_gcs {
        a.target_system = 255;
        a.target_component = 190;
    }
    p.handle_message(t0, &header(1, 1), &for_gcs);
    p.handle_message(t0, &header(300, 1), &accepted);
    assert!(events(&mut p).is_empty());
    assert_eq!((p.foreign_acks(), p.late_acks()), (5, 0));
    assert_eq!(p.pending_count(), 1);

    // A MAVLink 1 style ACK without target fields is accepted.
    let mut untargeted = accepted;
    if let MavMessage::COMMAND_ACK(a) = &mut untargeted {
        a.target_system = 0;
        a.target_component = 0;
    }
    p.handle_message(t0, &header(1, 1), &untargeted);
    assert_eq!(
        events(&mut p),
        [finished(id, ARM, CommandOutcome::Accepted)]
    );
}

#[test]
fn an_ack_before_the_first_send_is_not_ours() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    p.submit(t0, 1, 1, long(ARM)).unwrap();
    p.handle_message(t0, &header(1, 1), &ack(ARM, MavResult::MAV_RESULT_ACCEPTED));
    assert!(events(&mut p).is_empty());
    assert_eq!(p.foreign_acks(), 1);
    assert_eq!(confirmation(&p.poll_transmit(t0).unwrap()), 0);
}

#[test]
fn in_progress_stops_retries_and_extends_the_deadline() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let id = p.submit(t0, 1, 1, long(TAKEOFF)).unwrap();
    p.poll_transmit(t0).unwrap();
    let mut in_progress = ack(TAKEOFF, MavResult::MAV_RESULT_IN_PROGRESS);
    if let MavMessage::COMMAND_ACK(a) = &mut in_progress {
        a.progress = 40;
    }
    let t1 = t0 + Duration::from_millis(500);
    p.handle_message(t1, &header(1, 1), &in_progress);
    assert_eq!(p.poll_timeout(), Some(t1 + Duration::from_secs(30)));
    assert!(
        p.poll_transmit(t0 + Duration::from_secs(5)).is_none(),
        "no re-send"
    );
    assert_eq!(
        events(&mut p),
        [CommandEvent::Progress {
            id,
            command: TAKEOFF,
            percent: Some(40)
        }]
    );
    // Unknown progress (255), then the end.
    if let MavMessage::COMMAND_ACK(a) = &mut in_progress {
        a.progress = 255;
    }
    let t2 = t0 + Duration::from_secs(20);
    p.handle_message(t2, &header(1, 1), &in_progress);
    assert_eq!(p.poll_timeout(), Some(t2 + Duration::from_secs(30)));
    p.handle_message(
        t2,
        &header(1, 1),
        &ack(TAKEOFF, MavResult::MAV_RESULT_ACCEPTED),
    );
    // The queued progress of a finished command is dropped: only the end remains.
    assert_eq!(
        events(&mut p),
        [finished(id, TAKEOFF, CommandOutcome::Accepted)]
    );
}

#[test]
fn in_progress_then_silence_times_out_with_the_last_percent() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let id = p.submit(t0, 1, 1, long(TAKEOFF)).unwrap();
    p.poll_transmit(t0).unwrap();
    let mut in_progress = ack(TAKEOFF, MavResult::MAV_RESULT_IN_PROGRESS);
    if let MavMessage::COMMAND_ACK(a) = &mut in_progress {
        a.progress = 70;
    }
    p.handle_message(t0, &header(1, 1), &in_progress);
    events(&mut p);
    p.handle_timeout(t0 + Duration::from_millis(29_999));
    assert!(events(&mut p).is_empty());
    p.handle_timeout(t0 + Duration::from_secs(30));
    let outcome = CommandOutcome::InProgressTimedOut {
        last_percent: Some(70),
    };
    assert_eq!(events(&mut p), [finished(id, TAKEOFF, outcome)]);
    assert!(outcome.describe(TAKEOFF).contains("(70%)"));
}

#[test]
fn interleaved_commands_to_different_targets_are_kept_apart() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let a = p.submit(t0, 1, 1, long(ARM)).unwrap();
    let b = p.submit(t0, 2, 1, long(ARM)).unwrap();
    let c = p.submit(t0, 1, 1, long(TAKEOFF)).unwrap();
    let sent: Vec<_> = std::iter::from_fn(|| p.poll_transmit(t0)).collect();
    assert_eq!(sent.len(), 3);
    p.handle_message(t0, &header(2, 1), &ack(ARM, MavResult::MAV_RESULT_DENIED));
    p.handle_message(
        t0,
        &header(1, 1),
        &ack(TAKEOFF, MavResult::MAV_RESULT_FAILED),
    );
    assert_eq!(
        events(&mut p),
        [
            finished(b, ARM, CommandOutcome::Denied { result_param2: 0 }),
            finished(c, TAKEOFF, CommandOutcome::Failed { result_param2: 0 }),
        ]
    );
    // `a` still retries on its own schedule.
    let t1 = t0 + Duration::from_secs(1);
    let retry = p.poll_transmit(t1).unwrap();
    match retry {
        MavMessage::COMMAND_LONG(c) => {
            assert_eq!((c.command, c.target_system, c.confirmation), (ARM, 1, 1))
        }
        other => panic!("{other:?}"),
    }
    p.handle_message(t1, &header(1, 1), &ack(ARM, MavResult::MAV_RESULT_ACCEPTED));
    assert_eq!(events(&mut p), [finished(a, ARM, CommandOutcome::Accepted)]);
}

#[test]
fn a_second_identical_command_is_busy_not_confused() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let a = p.submit(t0, 1, 1, long(ARM)).unwrap();
    assert_eq!(
        p.submit(t0, 1, 1, long(ARM)),
        Err(Busy::SameCommandPending {
            command: ARM,
            existing: a
        })
    );
    // Broadcast to all components overlaps with a specific one.
    assert!(p.submit(t0, 1, 0, long(ARM)).is_err());
    assert!(p.submit(t0, 2, 1, long(ARM)).is_ok());
    assert!(p.submit(t0, 1, 1, long(TAKEOFF)).is_ok());
    let message = p.submit(t0, 1, 1, long(ARM)).unwrap_err().to_string();
    assert!(message.contains("already pending"), "{message}");
    for system in 3..=(2 + PENDING_MAX as u8 - 3) {
        p.submit(t0, system, 1, long(ARM)).unwrap();
    }
    assert_eq!(
        p.submit(t0, 200, 1, long(ARM)),
        Err(Busy::TooManyPending { limit: PENDING_MAX })
    );
}

#[test]
fn broadcast_command_is_answered_by_any_component_of_the_target() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let id = p.submit(t0, 1, 0, long(ARM)).unwrap();
    p.poll_transmit(t0).unwrap();
    p.handle_message(t0, &header(1, 1), &ack(ARM, MavResult::MAV_RESULT_ACCEPTED));
    assert_eq!(
        events(&mut p),
        [finished(id, ARM, CommandOutcome::Accepted)]
    );
}

#[test]
fn abort_all_finishes_everything_at_once_and_nothing_is_retried() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let a = p.submit(t0, 1, 1, long(ARM)).unwrap();
    p.poll_transmit(t0).unwrap();
    let b = p.submit(t0, 1, 1, long(TAKEOFF)).unwrap();
    p.abort_all(AbortReason::LinkLost);
    assert_eq!(
        events(&mut p),
        [
            finished(a, ARM, CommandOutcome::LinkLost),
            finished(b, TAKEOFF, CommandOutcome::LinkLost),
        ]
    );
    assert!(p.poll_transmit(t0 + Duration::from_secs(60)).is_none());
    assert_eq!(p.poll_timeout(), None);
    p.handle_message(t0, &header(1, 1), &ack(ARM, MavResult::MAV_RESULT_ACCEPTED));
    assert!(events(&mut p).is_empty());
    assert_eq!(p.late_acks(), 1);
    assert!(
        CommandOutcome::LinkLost
            .describe(ARM)
            .contains("link to the autopilot was lost")
    );
}

#[test]
fn cancel_withdraws_one_command() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    let a = p.submit(t0, 1, 1, long(ARM)).unwrap();
    let b = p.submit(t0, 1, 1, long(TAKEOFF)).unwrap();
    assert!(p.cancel(a));
    assert!(!p.cancel(a));
    assert_eq!(
        events(&mut p),
        [finished(a, ARM, CommandOutcome::Withdrawn)]
    );
    match p.poll_transmit(t0).unwrap() {
        MavMessage::COMMAND_LONG(c) => assert_eq!(c.command, TAKEOFF),
        other => panic!("{other:?}"),
    }
    assert!(p.poll_transmit(t0).is_none());
    assert_eq!(p.pending_count(), 1);
    let _ = b;
}

#[test]
fn command_int_carries_frame_and_coordinates() {
    let t0 = Instant::now();
    let mut p = CommandProtocol::new(options());
    p.submit(
        t0,
        1,
        1,
        CommandRequest::Int {
            command: MavCmd::MAV_CMD_DO_REPOSITION,
            frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
            params: [-1.0, 1.0, 0.0, f32::NAN],
            x: 473_977_420,
            y: 85_455_940,
            z: 30.0,
        },
    )
    .unwrap();
    match p.poll_transmit(t0).unwrap() {
        MavMessage::COMMAND_INT(c) => {
            assert_eq!(c.command, MavCmd::MAV_CMD_DO_REPOSITION);
            assert_eq!(c.frame, MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT);
            assert_eq!((c.x, c.y, c.z), (473_977_420, 85_455_940, 30.0));
            assert_eq!((c.param1, c.param2), (-1.0, 1.0));
            assert!(c.param4.is_nan());
            assert_eq!((c.target_system, c.target_component), (1, 1));
        }
        other => panic!("{other:?}"),
    }
}

const ALL_RESULTS: [MavResult; 11] = [
    MavResult::MAV_RESULT_ACCEPTED,
    MavResult::MAV_RESULT_TEMPORARILY_REJECTED,
    MavResult::MAV_RESULT_DENIED,
    MavResult::MAV_RESULT_UNSUPPORTED,
    MavResult::MAV_RESULT_FAILED,
    MavResult::MAV_RESULT_IN_PROGRESS,
    MavResult::MAV_RESULT_CANCELLED,
    MavResult::MAV_RESULT_COMMAND_LONG_ONLY,
    MavResult::MAV_RESULT_COMMAND_INT_ONLY,
    MavResult::MAV_RESULT_COMMAND_UNSUPPORTED_MAV_FRAME,
    MavResult::MAV_RESULT_NOT_IN_CONTROL,
];

#[test]
fn every_result_code_is_mapped_with_an_actionable_message() {
    let expected = [
        (Some(CommandOutcome::Accepted), "accepted"),
        (Some(CommandOutcome::TemporarilyRejected), "try again"),
        (
            Some(CommandOutcome::Denied { result_param2: 7 }),
            "refused in its current state [result_param2 7]",
        ),
        (Some(CommandOutcome::Unsupported), "does not implement"),
        (
            Some(CommandOutcome::Failed { result_param2: 7 }),
            "executing it failed",
        ),
        (None, ""),
        (Some(CommandOutcome::Cancelled), "cancelled"),
        (Some(CommandOutcome::LongOnly), "only as COMMAND_LONG"),
        (Some(CommandOutcome::IntOnly), "only as COMMAND_INT"),
        (Some(CommandOutcome::UnsupportedFrame), "coordinate frame"),
        (Some(CommandOutcome::NotInControl), "another system"),
    ];
    for (result, (outcome, needle)) in ALL_RESULTS.into_iter().zip(expected) {
        assert_eq!(CommandOutcome::from_ack(result, 7), outcome, "{result:?}");
        if let Some(outcome) = outcome {
            let text = outcome.describe(ARM);
            assert!(text.contains(needle), "{result:?}: {text}");
            assert!(text.contains("MAV_CMD_COMPONENT_ARM_DISARM"), "{text}");
            assert!(outcome.is_from_autopilot());
        }
    }
    assert_eq!(
        CommandOutcome::Denied { result_param2: 0 }.describe(ARM),
        "the autopilot denied MAV_CMD_COMPONENT_ARM_DISARM: the vehicle refused in its current \
         state"
    );
}

fn heartbeat(autopilot: MavAutopilot, custom_mode: u32) -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode,
        autopilot,
        base_mode: MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
        ..HEARTBEAT_DATA::DEFAULT
    })
}

#[test]
fn mode_change_is_confirmed_by_heartbeat_not_by_the_ack() {
    let t0 = Instant::now();
    let ap = MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA;
    let (mut change, request) = ModeChange::new(
        t0,
        AutopilotKind::Ardupilot,
        1,
        1,
        FlightMode::Guided,
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(
        request,
        CommandRequest::Long {
            command: MavCmd::MAV_CMD_DO_SET_MODE,
            params: [1.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        }
    );
    let mut p = CommandProtocol::new(options());
    let id = p.submit(t0, 1, 1, request).unwrap();
    change.set_command(id);
    p.poll_transmit(t0).unwrap();
    p.handle_message(
        t0,
        &header(1, 1),
        &ack(MavCmd::MAV_CMD_DO_SET_MODE, MavResult::MAV_RESULT_ACCEPTED),
    );
    for event in events(&mut p) {
        change.handle_command_event(&event);
    }
    assert_eq!(change.outcome(), None, "ACCEPTED alone does not confirm");
    // Still LOITER; then another system in GUIDED; then ours in GUIDED.
    change.handle_message(t0, &header(1, 1), &heartbeat(ap, 5));
    change.handle_message(t0, &header(2, 1), &heartbeat(ap, 4));
    assert_eq!(change.outcome(), None);
    change.handle_message(t0, &header(1, 1), &heartbeat(ap, 4));
    assert_eq!(change.outcome(), Some(ModeChangeOutcome::Confirmed));
    assert_eq!(change.poll_timeout(), None);
    assert_eq!(change.describe().unwrap(), "the vehicle is in GUIDED");
}

#[test]
fn mode_change_refused_by_ack_or_timed_out_without_heartbeat() {
    let t0 = Instant::now();
    let (mut change, request) = ModeChange::new(
        t0,
        AutopilotKind::Px4,
        1,
        1,
        FlightMode::Loiter,
        Duration::from_secs(3),
    )
    .unwrap();
    // PX4 gets main and sub mode as separate parameters.
    assert_eq!(
        request,
        CommandRequest::Long {
            command: MavCmd::MAV_CMD_DO_SET_MODE,
            params: [1.0, 4.0, 3.0, 0.0, 0.0, 0.0, 0.0]
        }
    );
    change.set_command(CommandId(9));
    // An event of another command is not ours.
    change.handle_command_event(&finished(
        CommandId(8),
        MavCmd::MAV_CMD_DO_SET_MODE,
        CommandOutcome::Denied { result_param2: 0 },
    ));
    assert_eq!(change.outcome(), None);
    // A lost ACK leaves the decision to the heartbeat.
    change.handle_command_event(&finished(
        CommandId(9),
        MavCmd::MAV_CMD_DO_SET_MODE,
        CommandOutcome::TimedOut {
            attempts: 4,
            elapsed: Duration::from_secs(4),
        },
    ));
    assert_eq!(change.outcome(), None);
    let px4 = MavAutopilot::MAV_AUTOPILOT_PX4;
    change.handle_message(t0, &header(1, 1), &heartbeat(px4, 3 << 16));
    assert_eq!(change.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    change.handle_timeout(t0 + Duration::from_millis(2999));
    assert_eq!(change.outcome(), None);
    change.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(
        change.outcome(),
        Some(ModeChangeOutcome::TimedOut {
            last_seen: Some(FlightMode::PosHold)
        })
    );
    assert_eq!(
        change.describe().unwrap(),
        "the vehicle did not report AUTO.LOITER in time; it last reported POSCTL"
    );

    let (mut refused, _) = ModeChange::new(
        t0,
        AutopilotKind::Ardupilot,
        1,
        1,
        FlightMode::Land,
        Duration::from_secs(3),
    )
    .unwrap();
    refused.set_command(CommandId(1));
    let denied = CommandOutcome::Denied { result_param2: 0 };
    refused.handle_command_event(&finished(CommandId(1), MavCmd::MAV_CMD_DO_SET_MODE, denied));
    assert_eq!(refused.outcome(), Some(ModeChangeOutcome::Refused(denied)));
    // A later heartbeat does not overturn the result.
    refused.handle_message(
        t0,
        &header(1, 1),
        &heartbeat(MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA, 9),
    );
    assert_eq!(refused.outcome(), Some(ModeChangeOutcome::Refused(denied)));

    assert!(
        ModeChange::new(
            t0,
            AutopilotKind::Ardupilot,
            1,
            1,
            FlightMode::Manual,
            Duration::from_secs(3)
        )
        .is_none(),
        "ArduCopter has no MANUAL"
    );
}

#[test]
fn telemetry_requests_cover_what_the_state_needs() {
    let ids = |autopilot, rate| -> Vec<(MavCmd, u32, f32)> {
        telemetry_requests(autopilot, rate)
            .into_iter()
            .map(|r| match r {
                CommandRequest::Long { command, params } => (command, params[0] as u32, params[1]),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let interval = MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL;
    let ardupilot = ids(AutopilotKind::Ardupilot, 10.0);
    for message in [33, 30, 74, 1, 24, 147, 245, 193] {
        assert!(
            ardupilot.contains(&(interval, message, 100_000.0)),
            "message {message} at 10 Hz"
        );
    }
    assert!(
        ardupilot.contains(&(interval, 242, 5_000_000.0)),
        "HOME_POSITION slowly"
    );
    assert!(!ardupilot.iter().any(|(_, id, _)| *id == 230));
    let request = MavCmd::MAV_CMD_REQUEST_MESSAGE;
    assert!(ardupilot.contains(&(request, 148, 0.0)));
    assert!(ardupilot.contains(&(request, 242, 0.0)));

    let px4 = ids(AutopilotKind::Px4, f32::NAN);
    assert!(
        px4.contains(&(interval, 230, 1_000_000.0)),
        "NaN rate is 1 Hz"
    );
    assert!(!px4.iter().any(|(_, id, _)| *id == 193));
    let fast = ids(AutopilotKind::Other, 1000.0);
    assert!(fast.contains(&(interval, 33, 20_000.0)), "capped at 50 Hz");
    assert!(fast.iter().any(|(_, id, _)| *id == 193) && fast.iter().any(|(_, id, _)| *id == 230));
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Submit {
        command: usize,
        system: u8,
        component: u8,
    },
    Ack {
        command: usize,
        result: usize,
        system: u32,
        component: u8,
        to_us: bool,
        progress: u8,
    },
    Cancel(u64),
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..2500).prop_map(Op::Advance),
        3 => (0usize..3, 1u8..3, 0u8..3).prop_map(|(command, system, component)| Op::Submit {
            command,
            system,
            component
        }),
        6 => (0usize..3, 0usize..11, 0u32..4, 0u8..3, any::<bool>(), any::<u8>()).prop_map(
            |(command, result, system, component, to_us, progress)| Op::Ack {
                command,
                result,
                system,
                component,
                to_us,
                progress
            }
        ),
        1 => (1u64..10).prop_map(Op::Cancel),
        1 => Just(Op::Abort),
    ]
}

const COMMANDS: [MavCmd; 3] = [ARM, TAKEOFF, MavCmd::MAV_CMD_DO_SET_MODE];

proptest! {
    /// Whatever ACKs arrive, in whatever order: no panic; each command is sent at most
    /// 1 + retries_max times with confirmations 0, 1, 2, ...; each finishes exactly once;
    /// and once time runs far enough, nothing is left pending.
    #[test]
    fn any_ack_sequence_keeps_the_protocol_sound(ops in proptest::collection::vec(op(), 0..80)) {
        let options = options();
        let mut p = CommandProtocol::new(options);
        let mut now = Instant::now();
        let mut submitted: HashMap<CommandId, (MavCmd, u8, u8)> = HashMap::new();
        let mut sends: HashMap<(u32, u8, u8), Vec<u8>> = HashMap::new();
        let mut finished_ids: HashSet<CommandId> = HashSet::new();

        let drain = |p: &mut CommandProtocol,
                         now: Instant,
                         sends: &mut HashMap<(u32, u8, u8), Vec<u8>>,
                         finished_ids: &mut HashSet<CommandId>,
                         submitted: &HashMap<CommandId, (MavCmd, u8, u8)>|
         -> Result<(), TestCaseError> {
            while let Some(msg) = p.poll_transmit(now) {
                let MavMessage::COMMAND_LONG(c) = msg else {
                    return Err(TestCaseError::fail("not a COMMAND_LONG"));
                };
                let key = (c.command as u32, c.target_system, c.target_component);
                let seen = sends.entry(key).or_default();
                // A new command with the same key starts again at confirmation 0.
                if c.confirmation == 0 {
                    seen.clear();
                }
                prop_assert_eq!(usize::from(c.confirmation), seen.len());
                prop_assert!(c.confirmation <= options.retries_max);
                seen.push(c.confirmation);
            }
            while let Some(event) = p.poll_event() {
                if let CommandEvent::Finished { id, .. } = event {
                    prop_assert!(submitted.contains_key(&id));
                    prop_assert!(finished_ids.insert(id), "{} finished twice", id);
                    prop_assert!(!event.to_string().is_empty());
                } else if let CommandEvent::Progress { id, .. } = event {
                    prop_assert!(!finished_ids.contains(&id));
                }
            }
            Ok(())
        };

        for op in ops {
            match op {
                Op::Advance(ms) => now += Duration::from_millis(ms),
                Op::Submit { command, system, component } => {
                    let command = COMMANDS[command];
                    if let Ok(id) = p.submit(now, system, component, long(command)) {
                        submitted.insert(id, (command, system, component));
                    }
                }
                Op::Ack { command, result, system, component, to_us, progress } => {
                    let (target_system, target_component) = if to_us { US } else { (9, 9) };
                    let msg = MavMessage::COMMAND_ACK(COMMAND_ACK_DATA {
                        command: COMMANDS[command],
                        result: ALL_RESULTS[result],
                        progress,
                        result_param2: i32::from(progress),
                        target_system,
                        target_component,
                    });
                    p.handle_message(now, &header(system, component), &msg);
                }
                Op::Cancel(id) => {
                    p.cancel(CommandId(id));
                }
                Op::Abort => p.abort_all(AbortReason::LinkLost),
            }
            drain(&mut p, now, &mut sends, &mut finished_ids, &submitted)?;
            prop_assert!(p.pending_count() <= PENDING_MAX);
            if let Some(deadline) = p.poll_timeout() {
                prop_assert!(deadline > now, "a passed deadline was not handled");
            }
        }
        // Run out the clock: every command ends.
        for _ in 0..(usize::from(options.retries_max) + 2) {
            now += options.in_progress_timeout;
            drain(&mut p, now, &mut sends, &mut finished_ids, &submitted)?;
        }
        prop_assert_eq!(p.pending_count(), 0);
        prop_assert_eq!(finished_ids.len(), submitted.len());
    }
}
