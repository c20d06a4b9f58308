//! Table-driven tests of the stop and failsafe machine as a pure function of time, state and
//! inputs (in the manner of PX4's `failsafe_test.cpp`): each case is a list of
//! `(milliseconds, input, expectations)`; after each input every due command is polled.

use super::*;
use crate::vehicle::snapshot::AutopilotKind::{Ardupilot, Px4};

/// Vehicle presets.
#[derive(Debug, Clone, Copy)]
enum V {
    /// ArduCopter armed in the air in this mode, position valid, battery 80 %.
    Fly(FlightMode),
    /// PX4 armed in the air.
    Px4Fly(FlightMode),
    /// In the air without a valid position.
    FlyNoPosition(FlightMode),
    /// In the air with this battery percentage.
    FlyBattery(FlightMode, f64),
    /// On the ground.
    Ground { armed: bool, mode: FlightMode },
    /// The heartbeat stopped (stale).
    Silent(FlightMode),
}

impl V {
    /// The vehicle as a heartbeat arriving at `now` reports it.
    fn observation(self, now: Instant) -> VehicleView {
        let air = |autopilot, mode| VehicleView {
            autopilot: Some(autopilot),
            heartbeat_fresh: true,
            heartbeat_at: Some(now),
            armed: true,
            landed: Landed::InAir,
            mode: Some(mode),
            position_valid: true,
            battery_remaining_percent: Some(80.0),
            ..VehicleView::UNKNOWN
        };
        match self {
            V::Fly(mode) => air(Ardupilot, mode),
            V::Px4Fly(mode) => air(Px4, mode),
            V::FlyNoPosition(mode) => VehicleView {
                position_valid: false,
                ..air(Ardupilot, mode)
            },
            V::FlyBattery(mode, percent) => VehicleView {
                battery_remaining_percent: Some(percent),
                ..air(Ardupilot, mode)
            },
            V::Ground { armed, mode } => VehicleView {
                armed,
                landed: Landed::OnGround,
                ..air(Ardupilot, mode)
            },
            V::Silent(mode) => VehicleView {
                heartbeat_fresh: false,
                ..air(Ardupilot, mode)
            },
        }
    }
}

#[derive(Debug, Clone)]
enum In {
    Trigger(Source),
    Vehicle(V),
    /// Nothing new: only time passes.
    Tick,
    Reset(Role),
    /// The autopilot's ACK to the last stop command.
    Ack(bool),
    Ground(bool),
    Activity,
    /// Ground activity that came at this many ms, read by the loop at the step's time.
    ActivityAt(u64),
    ApLink(bool),
    /// A kill request; `Some(0)` means "the code the previous request returned".
    Kill(Option<u32>),
}

#[derive(Debug, Clone)]
enum Want {
    /// Exactly these commands are due now.
    Sends(Vec<StopCommand>),
    Rung(Option<Rung>),
    Confirmed(bool),
    Latched(bool),
    PilotInControl(bool),
    /// An event since the previous step whose text contains this.
    Event(&'static str),
    /// The last reset or kill was refused with a text containing this.
    Refused(&'static str),
    Failsafe(Vec<Failsafe>),
}

use FlightMode::{Brake, Guided, Land, Loiter, Rtl, Stabilize};
use StopCommand::{Disarm, SetMode};

fn options() -> StopOptions {
    StopOptions {
        ground_activity_timeout: Some(Duration::from_secs(20)),
        ..StopOptions::default()
    }
}

struct Case {
    name: &'static str,
    options: StopOptions,
    steps: Vec<(u64, In, Vec<Want>)>,
}

fn case(name: &'static str, steps: Vec<(u64, In, Vec<Want>)>) -> Case {
    Case {
        name,
        options: options(),
        steps,
    }
}

fn run(case: &Case) {
    let t0 = Instant::now();
    let mut stop = EmergencyStop::new(case.options.clone(), t0, true);
    let mut last_refusal = String::new();
    let mut last_code = 0;
    for (i, (ms, input, wants)) in case.steps.iter().enumerate() {
        let now = t0 + Duration::from_millis(*ms);
        let trigger = |source| Trigger {
            source,
            identity: "tester".into(),
            reason: format!("step {i}"),
        };
        match input {
            In::Trigger(source) => stop.handle_trigger(now, trigger(*source)),
            In::Vehicle(v) => stop.handle_vehicle(now, v.observation(now)),
            In::Tick => {}
            In::Reset(role) => match stop.handle_reset(now, "tester", *role) {
                Ok(_) => last_refusal.clear(),
                Err(e) => last_refusal = e,
            },
            In::Ack(accepted) => stop.handle_mode_ack(now, *accepted, "DENIED"),
            In::Ground(up) => stop.handle_ground_link(now, *up),
            In::Activity => stop.handle_ground_activity(now),
            In::ActivityAt(at_ms) => {
                stop.handle_ground_activity_at(now, t0 + Duration::from_millis(*at_ms));
            }
            In::ApLink(up) => stop.handle_autopilot_link(now, *up),
            In::Kill(code) => {
                let code = code.map(|c| if c == 0 { last_code } else { c });
                match stop.handle_kill(now, trigger(Source::McpTool), code, 4242) {
                    KillReply::ConfirmationRequired { code, .. } => last_code = code,
                    KillReply::Refused(e) => last_refusal = e,
                    KillReply::Executing(_) => {}
                }
            }
        }
        let sent: Vec<StopCommand> = std::iter::from_fn(|| stop.poll_transmit(now)).collect();
        let events: Vec<String> = std::iter::from_fn(|| stop.poll_event())
            .map(|e| e.to_string())
            .collect();
        let status = stop.status();
        let at = format!(
            "case `{}`, step {i} at {ms} ms ({input:?}): sent {sent:?}, events {events:?}, status rung {:?} confirmed {}",
            case.name, status.rung, status.rung_confirmed
        );
        for want in wants {
            match want {
                Want::Sends(expected) => assert_eq!(&sent, expected, "{at}"),
                Want::Rung(rung) => assert_eq!(status.rung, *rung, "{at}"),
                Want::Confirmed(c) => assert_eq!(status.rung_confirmed, *c, "{at}"),
                Want::Latched(l) => {
                    assert_eq!(status.latched, *l, "{at}");
                    assert_eq!(stop.motion_refusal().is_some(), *l, "{at}");
                }
                Want::PilotInControl(p) => assert_eq!(status.pilot_in_control, *p, "{at}"),
                Want::Event(needle) => assert!(
                    events.iter().any(|e| e.contains(needle)),
                    "{at}: no event with {needle:?}"
                ),
                Want::Refused(needle) => {
                    assert!(
                        last_refusal.contains(needle),
                        "{at}: refusal {last_refusal:?}"
                    )
                }
                Want::Failsafe(f) => assert_eq!(&status.failsafes_active, f, "{at}"),
            }
        }
        // Invariant on every step: a timeout is never in the past once polled, also when no
        // command can go (the pilot in control, no link, no autopilot): a passed deadline
        // would turn the decision loop at once, forever.
        if let Some(at_timeout) = stop.poll_timeout() {
            assert!(
                at_timeout > now,
                "case `{}` step {i}: poll_timeout {at_timeout:?} not after now",
                case.name
            );
        }
    }
}

fn fly(mode: FlightMode) -> In {
    In::Vehicle(V::Fly(mode))
}

#[test]
fn every_trigger_latches_and_holds_at_once() {
    for source in [
        Source::McpTool,
        Source::MqttPanic,
        Source::Local,
        Source::Hardware,
    ] {
        run(&case(
            "trigger",
            vec![
                (
                    0,
                    fly(Guided),
                    vec![Want::Latched(false), Want::Sends(vec![])],
                ),
                (
                    10,
                    In::Trigger(source),
                    vec![
                        Want::Latched(true),
                        Want::Sends(vec![SetMode(Brake)]),
                        Want::Rung(Some(Rung::Hold)),
                        Want::Event("EMERGENCY STOP"),
                    ],
                ),
                // Re-sent every 250 ms until the heartbeat shows it.
                (100, In::Tick, vec![Want::Sends(vec![])]),
                (260, In::Tick, vec![Want::Sends(vec![SetMode(Brake)])]),
                (
                    300,
                    fly(Brake),
                    vec![Want::Confirmed(true), Want::Event("hold confirmed")],
                ),
                (
                    2000,
                    In::Tick,
                    vec![Want::Sends(vec![]), Want::Rung(Some(Rung::Hold))],
                ),
            ],
        ));
    }
}

#[test]
fn ladder_cases() {
    let px4_hold = Case {
        name: "PX4 holds in AUTO.LOITER; LOITER configured for ArduPilot is PX4's only hold",
        options: StopOptions {
            hold_mode: HoldMode::Loiter,
            ..options()
        },
        steps: vec![
            (0, In::Vehicle(V::Px4Fly(Guided)), vec![]),
            (
                0,
                In::Trigger(Source::Local),
                vec![Want::Sends(vec![SetMode(Loiter)])],
            ),
            (
                100,
                In::Vehicle(V::Px4Fly(Loiter)),
                vec![Want::Confirmed(true)],
            ),
        ],
    };
    let cases = vec![
        case(
            "not confirmed within the bounded time → land",
            vec![
                (0, fly(Guided), vec![]),
                (
                    0,
                    In::Trigger(Source::McpTool),
                    vec![Want::Sends(vec![SetMode(Brake)])],
                ),
                (1499, In::Tick, vec![Want::Rung(Some(Rung::Hold))]),
                (
                    1500,
                    In::Tick,
                    vec![
                        Want::Rung(Some(Rung::Land)),
                        Want::Sends(vec![SetMode(Land)]),
                        Want::Event("did not show hold within 1500 ms"),
                    ],
                ),
                (1600, fly(Land), vec![Want::Confirmed(true)]),
                // Landed and still armed → disarm; disarmed on the ground → done.
                (
                    9000,
                    In::Vehicle(V::Ground {
                        armed: true,
                        mode: Land,
                    }),
                    vec![Want::Rung(Some(Rung::Disarm)), Want::Sends(vec![Disarm])],
                ),
                (
                    9100,
                    In::Vehicle(V::Ground {
                        armed: false,
                        mode: Land,
                    }),
                    vec![
                        Want::Rung(None),
                        Want::Confirmed(true),
                        Want::Event("disarmed on the ground"),
                        Want::Latched(true),
                    ],
                ),
                (20000, In::Tick, vec![Want::Sends(vec![])]),
            ],
        ),
        case(
            "the autopilot refuses BRAKE → land at once",
            vec![
                (0, fly(Guided), vec![]),
                (
                    0,
                    In::Trigger(Source::Hardware),
                    vec![Want::Sends(vec![SetMode(Brake)])],
                ),
                (
                    30,
                    In::Ack(false),
                    vec![
                        Want::Rung(Some(Rung::Land)),
                        Want::Sends(vec![SetMode(Land)]),
                    ],
                ),
            ],
        ),
        case(
            "an accepted ACK is not a confirmation: only the heartbeat is",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Trigger(Source::Hardware), vec![]),
                (30, In::Ack(true), vec![Want::Confirmed(false)]),
                (260, In::Tick, vec![Want::Sends(vec![SetMode(Brake)])]),
            ],
        ),
        case(
            // Lost for the grace (two telemetry periods, 500 ms here) while the heartbeat
            // keeps coming: land.
            "position lost while holding → land",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Trigger(Source::Local), vec![]),
                (100, fly(Brake), vec![Want::Confirmed(true)]),
                (
                    500,
                    In::Vehicle(V::FlyNoPosition(Brake)),
                    vec![Want::Rung(Some(Rung::Hold)), Want::Sends(vec![])],
                ),
                (
                    800,
                    In::Vehicle(V::FlyNoPosition(Brake)),
                    vec![Want::Rung(Some(Rung::Hold)), Want::Sends(vec![])],
                ),
                (
                    1000,
                    In::Tick,
                    vec![
                        Want::Rung(Some(Rung::Land)),
                        Want::Sends(vec![SetMode(Land)]),
                        Want::Event("no valid position"),
                    ],
                ),
            ],
        ),
        case(
            // A daemon stalled for 3 s (SIGSTOP) is stopped by its microcontroller's watchdog
            // and, running again, reads the autopilot's heartbeat from its backlog before the
            // position: its own stale view is no position loss (seen against ArduCopter SITL).
            "a position stale only in the daemon's own backlog does not land",
            vec![
                (0, fly(Guided), vec![]),
                (
                    3900,
                    In::Trigger(Source::Hardware),
                    vec![Want::Sends(vec![SetMode(Brake)])],
                ),
                (
                    3902,
                    In::Vehicle(V::FlyNoPosition(Guided)),
                    vec![Want::Rung(Some(Rung::Hold)), Want::Sends(vec![])],
                ),
                (3910, fly(Guided), vec![Want::Rung(Some(Rung::Hold))]),
                (4200, fly(Brake), vec![Want::Confirmed(true)]),
                (
                    4600,
                    In::Tick,
                    vec![Want::Rung(Some(Rung::Hold)), Want::Sends(vec![])],
                ),
            ],
        ),
        case(
            "battery critical while holding → land",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Trigger(Source::Local), vec![]),
                (100, fly(Brake), vec![]),
                (
                    500,
                    In::Vehicle(V::FlyBattery(Brake, 9.0)),
                    vec![
                        Want::Rung(Some(Rung::Land)),
                        Want::Sends(vec![SetMode(Land)]),
                        Want::Failsafe(vec![Failsafe::BatteryCritical]),
                    ],
                ),
            ],
        ),
        case(
            "already disarmed on the ground: latch, nothing sent",
            vec![
                (
                    0,
                    In::Vehicle(V::Ground {
                        armed: false,
                        mode: Stabilize,
                    }),
                    vec![],
                ),
                (
                    10,
                    In::Trigger(Source::McpTool),
                    vec![Want::Latched(true), Want::Sends(vec![]), Want::Rung(None)],
                ),
            ],
        ),
        case(
            "armed on the ground: disarm directly",
            vec![
                (
                    0,
                    In::Vehicle(V::Ground {
                        armed: true,
                        mode: Guided,
                    }),
                    vec![],
                ),
                (
                    10,
                    In::Trigger(Source::McpTool),
                    vec![Want::Sends(vec![Disarm]), Want::Rung(Some(Rung::Disarm))],
                ),
            ],
        ),
        case(
            "another GCS switches away from the hold: asserted again",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Trigger(Source::Local), vec![]),
                (100, fly(Brake), vec![Want::Confirmed(true)]),
                (
                    3000,
                    fly(Guided),
                    vec![Want::Confirmed(false), Want::Sends(vec![SetMode(Brake)])],
                ),
            ],
        ),
        case(
            "the autopilot's own, more severe failsafe (RTL) is respected",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Trigger(Source::Local), vec![]),
                (100, fly(Brake), vec![Want::Confirmed(true)]),
                (
                    3000,
                    fly(Rtl),
                    vec![Want::Confirmed(true), Want::Sends(vec![])],
                ),
            ],
        ),
        case(
            "a hold shown by a heartbeat older than the trigger is commanded anyway: the vehicle \
             may have left it since (the benchmark's 5-20 ms tail)",
            vec![
                (0, fly(Brake), vec![]),
                // Someone switches to GUIDED at 2 ms; the next heartbeat comes at 20 ms.
                (
                    5,
                    In::Trigger(Source::MqttPanic),
                    vec![Want::Sends(vec![SetMode(Brake)]), Want::Confirmed(false)],
                ),
                (
                    20,
                    fly(Guided),
                    vec![Want::Confirmed(false), Want::Sends(vec![])],
                ),
                (40, fly(Brake), vec![Want::Confirmed(true)]),
            ],
        ),
        case(
            "a hold shown by a heartbeat newer than the trigger confirms it",
            vec![
                (0, fly(Guided), vec![]),
                (
                    5,
                    In::Trigger(Source::Local),
                    vec![Want::Sends(vec![SetMode(Brake)])],
                ),
                (20, fly(Loiter), vec![Want::Confirmed(true)]),
                (300, In::Tick, vec![Want::Sends(vec![])]),
            ],
        ),
        case(
            "a more severe mode shown before the trigger is not downgraded to the hold",
            vec![
                (0, fly(Rtl), vec![]),
                (
                    5,
                    In::Trigger(Source::Local),
                    vec![Want::Sends(vec![]), Want::Confirmed(true)],
                ),
                // It was left just before the trigger: asserted on the next heartbeat.
                (
                    20,
                    fly(Guided),
                    vec![Want::Confirmed(false), Want::Sends(vec![SetMode(Brake)])],
                ),
            ],
        ),
        case(
            "a silent autopilot does not confirm; the ladder escalates on time",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Trigger(Source::Local), vec![]),
                (
                    100,
                    In::Vehicle(V::Silent(Brake)),
                    vec![Want::Confirmed(false)],
                ),
                (1500, In::Tick, vec![Want::Rung(Some(Rung::Land))]),
            ],
        ),
        px4_hold,
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn reset_cases() {
    let cases = vec![
        case(
            "reset clears the latch; later triggers start again",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Trigger(Source::MqttPanic), vec![]),
                (100, fly(Brake), vec![]),
                (
                    5000,
                    In::Reset(Role::Admin),
                    vec![
                        Want::Latched(false),
                        Want::Rung(None),
                        Want::Event("reset by tester"),
                    ],
                ),
                // The vehicle stays in BRAKE; nothing is sent, nothing escalates.
                (9000, In::Tick, vec![Want::Sends(vec![])]),
                // The last heartbeat (100 ms) predates the trigger: the hold is sent again,
                // and the next heartbeat confirms it.
                (
                    9100,
                    In::Trigger(Source::Local),
                    vec![
                        Want::Latched(true),
                        Want::Sends(vec![SetMode(Brake)]),
                        Want::Confirmed(false),
                    ],
                ),
                (9120, fly(Brake), vec![Want::Confirmed(true)]),
            ],
        ),
        case(
            "the operator flying cannot reset: it needs an ADMIN, and says so",
            vec![
                (0, In::Trigger(Source::Local), vec![]),
                (
                    10,
                    In::Reset(Role::Operator),
                    vec![Want::Latched(true), Want::Refused("needs the ADMIN role")],
                ),
            ],
        ),
        case(
            "reset is refused while the battery is critical",
            vec![
                (
                    0,
                    In::Vehicle(V::FlyBattery(Guided, 5.0)),
                    vec![Want::Latched(true)],
                ),
                (
                    10,
                    In::Reset(Role::Admin),
                    vec![Want::Latched(true), Want::Refused("battery critical")],
                ),
            ],
        ),
        case(
            "a second trigger while latched is recorded and changes nothing",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Trigger(Source::Local), vec![]),
                (1000, fly(Brake), vec![]),
                (
                    1100,
                    In::Trigger(Source::Hardware),
                    vec![
                        Want::Event("already latched"),
                        Want::Sends(vec![]),
                        Want::Rung(Some(Rung::Hold)),
                    ],
                ),
            ],
        ),
    ];
    for c in &cases {
        run(c);
    }
}

/// In the air, ground activity at 15 s (`activity`: when the Core is told, and how), then
/// silence: the inactivity failsafe (20 s) latches at 35 s, not a millisecond before.
fn silent_20_s_after_activity_at_15_s(name: &'static str, activity: (u64, In)) -> Case {
    case(
        name,
        vec![
            (0, fly(Guided), vec![]),
            (activity.0, activity.1, vec![]),
            (34_999, In::Tick, vec![Want::Latched(false)]),
            (
                35_000,
                In::Tick,
                vec![
                    Want::Latched(true),
                    Want::Failsafe(vec![Failsafe::GroundInactive]),
                ],
            ),
        ],
    )
}

#[test]
fn failsafe_cases() {
    let land_after = Case {
        name: "ground link lost, configured to land",
        options: StopOptions {
            ground_loss_action: GroundLossAction::Land,
            ..options()
        },
        steps: vec![
            (0, fly(Guided), vec![]),
            (0, In::Ground(false), vec![]),
            (5000, In::Tick, vec![Want::Sends(vec![SetMode(Brake)])]),
            (5100, fly(Brake), vec![]),
            (10_000, In::Tick, vec![Want::Sends(vec![SetMode(Land)])]),
        ],
    };
    let cases = vec![
        case(
            "broker connection lost in the air: hold after 5 s, return after 5 s more",
            vec![
                (0, fly(Guided), vec![]),
                (1000, In::Ground(false), vec![Want::Latched(false)]),
                (
                    5999,
                    In::Tick,
                    vec![Want::Latched(false), Want::Sends(vec![])],
                ),
                (
                    6000,
                    In::Tick,
                    vec![
                        Want::Latched(true),
                        Want::Failsafe(vec![Failsafe::GroundLinkLost]),
                        Want::Sends(vec![SetMode(Brake)]),
                        Want::Event("FAILSAFE ground link lost"),
                    ],
                ),
                (6100, fly(Brake), vec![Want::Confirmed(true)]),
                (10_999, In::Tick, vec![Want::Rung(Some(Rung::Hold))]),
                (
                    11_000,
                    In::Tick,
                    vec![
                        Want::Rung(Some(Rung::ReturnHome)),
                        Want::Sends(vec![SetMode(Rtl)]),
                    ],
                ),
                (11_100, fly(Rtl), vec![Want::Confirmed(true)]),
                // The link comes back: nothing resumes, the latch stays.
                (
                    12_000,
                    In::Ground(true),
                    vec![
                        Want::Latched(true),
                        Want::Event("does not resume"),
                        Want::Sends(vec![]),
                    ],
                ),
                (12_100, In::Reset(Role::Admin), vec![Want::Latched(false)]),
            ],
        ),
        case(
            "the link back during the hold: the vehicle keeps holding, no return",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Ground(false), vec![]),
                (5000, In::Tick, vec![Want::Latched(true)]),
                (5100, fly(Brake), vec![]),
                (7000, In::Ground(true), vec![Want::Failsafe(vec![])]),
                (
                    20_000,
                    In::Tick,
                    vec![Want::Rung(Some(Rung::Hold)), Want::Sends(vec![])],
                ),
            ],
        ),
        case(
            "the broker lost on the ground: no failsafe",
            vec![
                (
                    0,
                    In::Vehicle(V::Ground {
                        armed: false,
                        mode: Stabilize,
                    }),
                    vec![],
                ),
                (0, In::Ground(false), vec![]),
                (60_000, In::Tick, vec![Want::Latched(false)]),
            ],
        ),
        silent_20_s_after_activity_at_15_s(
            "connected but no ground activity for 20 s in the air",
            (15_000, In::Activity),
        ),
        silent_20_s_after_activity_at_15_s(
            "ground activity read 40 ms late counts from when it came, not from the read",
            (15_040, In::ActivityAt(15_000)),
        ),
        case(
            "battery critical in the air with no stop: land at once (more severe than hold)",
            vec![
                (0, fly(Guided), vec![]),
                (
                    100,
                    In::Vehicle(V::FlyBattery(Guided, 10.0)),
                    vec![
                        Want::Latched(true),
                        Want::Rung(Some(Rung::Land)),
                        Want::Sends(vec![SetMode(Land)]),
                    ],
                ),
            ],
        ),
        land_after,
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn arbitration_cases() {
    let cases = vec![
        case(
            "a stop while returning (ground loss): the more severe rung stays",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Ground(false), vec![]),
                (5000, In::Tick, vec![Want::Rung(Some(Rung::Hold))]),
                (5100, fly(Brake), vec![Want::Confirmed(true)]),
                (10_000, In::Tick, vec![Want::Rung(Some(Rung::ReturnHome))]),
                (
                    10_100,
                    In::Trigger(Source::McpTool),
                    vec![
                        Want::Rung(Some(Rung::ReturnHome)),
                        Want::Event("already latched"),
                    ],
                ),
            ],
        ),
        case(
            "battery critical during a ground-loss return: land wins",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::Ground(false), vec![]),
                (5000, In::Tick, vec![Want::Rung(Some(Rung::Hold))]),
                (5100, fly(Brake), vec![Want::Confirmed(true)]),
                (10_000, fly(Rtl), vec![Want::Rung(Some(Rung::ReturnHome))]),
                (
                    10_100,
                    In::Vehicle(V::FlyBattery(Rtl, 8.0)),
                    vec![
                        Want::Rung(Some(Rung::Land)),
                        Want::Sends(vec![SetMode(Land)]),
                    ],
                ),
                // The ground-loss timer cannot step it back down.
                (30_000, fly(Land), vec![Want::Rung(Some(Rung::Land))]),
            ],
        ),
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn pilot_takeover_cases() {
    let cases = vec![
        case(
            "the pilot switches to STABILIZE during the stop: nothing more is sent",
            vec![
                (0, fly(Guided), vec![]),
                (
                    0,
                    In::Trigger(Source::McpTool),
                    vec![Want::Sends(vec![SetMode(Brake)])],
                ),
                (
                    100,
                    fly(Stabilize),
                    vec![
                        Want::PilotInControl(true),
                        Want::Event("pilot took over in STABILIZE"),
                    ],
                ),
                // Neither re-sent nor escalated: the pilot flies.
                (
                    5000,
                    In::Tick,
                    vec![Want::Sends(vec![]), Want::Rung(Some(Rung::Hold))],
                ),
                (
                    5100,
                    In::Vehicle(V::FlyBattery(Stabilize, 5.0)),
                    vec![Want::Sends(vec![])],
                ),
                (
                    5200,
                    In::Trigger(Source::Hardware),
                    vec![Want::Sends(vec![]), Want::Latched(true)],
                ),
            ],
        ),
        case(
            "a stop while the pilot already flies manually: latched, nothing sent",
            vec![
                (0, fly(Stabilize), vec![]),
                (
                    10,
                    In::Trigger(Source::Local),
                    vec![
                        Want::Latched(true),
                        Want::PilotInControl(true),
                        Want::Sends(vec![]),
                    ],
                ),
            ],
        ),
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn autopilot_link_cases() {
    let cases = vec![
        case(
            "link down: nothing sent or queued; back: asserted at once",
            vec![
                (0, fly(Guided), vec![]),
                (0, In::ApLink(false), vec![]),
                (
                    10,
                    In::Trigger(Source::Local),
                    vec![Want::Sends(vec![]), Want::Latched(true)],
                ),
                (200, In::Tick, vec![Want::Sends(vec![])]),
                (
                    1000,
                    In::ApLink(true),
                    vec![
                        Want::Event("asserted again"),
                        Want::Sends(vec![SetMode(Brake)]),
                    ],
                ),
            ],
        ),
        case(
            "the autopilot never heard: latched, sent once it appears",
            vec![
                (0, In::Trigger(Source::Local), vec![Want::Sends(vec![])]),
                (100, fly(Guided), vec![Want::Sends(vec![SetMode(Brake)])]),
            ],
        ),
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn kill_cases() {
    let terminate = StopOptions {
        kill_action: KillAction::Terminate,
        ..options()
    };
    let cases = vec![
        case(
            "not configured: refused, says what is available",
            vec![
                (0, fly(Guided), vec![]),
                (
                    0,
                    In::Kill(None),
                    vec![
                        Want::Refused("not configured"),
                        Want::Latched(false),
                        Want::Sends(vec![]),
                    ],
                ),
            ],
        ),
        Case {
            name: "two steps: the first holds and returns a code, the second terminates; final",
            options: terminate.clone(),
            steps: vec![
                (0, fly(Guided), vec![]),
                (
                    0,
                    In::Kill(None),
                    vec![
                        Want::Latched(true),
                        Want::Sends(vec![SetMode(Brake)]),
                        Want::Event("confirm with code"),
                    ],
                ),
                (
                    100,
                    In::Kill(Some(0)),
                    vec![
                        Want::Rung(Some(Rung::Terminate)),
                        Want::Sends(vec![StopCommand::Terminate]),
                    ],
                ),
                (
                    400,
                    In::Tick,
                    vec![Want::Sends(vec![StopCommand::Terminate])],
                ),
                (
                    700,
                    In::Tick,
                    vec![Want::Sends(vec![StopCommand::Terminate])],
                ),
                (1000, In::Tick, vec![Want::Sends(vec![])]),
                (
                    2000,
                    In::Reset(Role::System),
                    vec![Want::Latched(true), Want::Refused("final")],
                ),
                (
                    3000,
                    In::Vehicle(V::Ground {
                        armed: false,
                        mode: Stabilize,
                    }),
                    vec![Want::Rung(Some(Rung::Terminate)), Want::Latched(true)],
                ),
            ],
        },
        Case {
            name: "a wrong or late code is refused",
            options: terminate,
            steps: vec![
                (0, fly(Guided), vec![]),
                (0, In::Kill(None), vec![]),
                (
                    100,
                    In::Kill(Some(1)),
                    vec![
                        Want::Refused("wrong or expired"),
                        Want::Rung(Some(Rung::Hold)),
                    ],
                ),
                (200, fly(Brake), vec![]),
                (
                    10_001,
                    In::Kill(Some(0)),
                    vec![
                        Want::Refused("wrong or expired"),
                        Want::Rung(Some(Rung::Hold)),
                    ],
                ),
            ],
        },
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn reasons_are_clipped_and_cleaned() {
    assert_eq!(clip("  "), "no reason given");
    assert_eq!(clip("a\nb"), "a b");
    let long = "x".repeat(500);
    assert_eq!(clip(&long).chars().count(), REASON_CHARS_MAX + 1);
}

#[test]
fn history_is_bounded_and_numbered() {
    let t0 = Instant::now();
    let mut stop = EmergencyStop::new(options(), t0, true);
    for i in 0..40 {
        stop.handle_trigger(
            t0,
            Trigger {
                source: Source::Local,
                identity: "t".into(),
                reason: format!("{i}"),
            },
        );
    }
    let status = stop.status();
    assert_eq!(status.history.len(), HISTORY_MAX);
    let seqs: Vec<u64> = status.history.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(
        status.reason.as_deref(),
        Some("0"),
        "the first trigger's reason stays"
    );
}
