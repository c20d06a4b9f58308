//! Table-driven: an emergency stop arriving while a tool is running and while its caller is
//! rate-limited, on virtual time. The daemon's real Core (`daemon::Core`: the e-stop machine,
//! the supervisor, the one whitelist) runs in the daemon loop's order, against the
//! simulated autopilot in process; the caller's session is a real `auth::Gate` whose budget
//! is used up first. Each row: what runs, who is limited, which trigger → how the tool ends,
//! what the autopilot is told in the trigger's own turn, where the vehicle ends up.

use std::time::{Duration, Instant};

use super::*;
use crate::auth::permissions::Permission;
use crate::auth::revocation::Denylist;
use crate::auth::token::tests::{NOW, claims, fixture};
use crate::auth::token::{Claims, KeyAlg, issue};
use crate::auth::{Gate, GateConfig, RateLimits};
use crate::estop::{Source, StopAsk, Trigger};
use crate::sim::autopilot::FlightMode as SimMode;
use crate::vehicle::modes::FlightMode;

impl Rig {
    /// A trigger in the loop's first branch: decided and sent in this very turn.
    fn trigger(&mut self, source: Source, identity: &str, reason: &str) {
        let trigger = Trigger {
            source,
            identity: identity.into(),
            reason: reason.into(),
        };
        match self.turn(Input::Stop(StopAsk::Stop(trigger))) {
            Handled::Stop(ack) => assert!(ack.ok, "{ack:?}"),
            other => panic!("a stop answered with {other:?}"),
        }
        self.exchange();
    }
}

/// Which budget of the caller's session is used up before the trigger.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Limited {
    No,
    /// Every call refused (`calls_per_s`).
    Calls,
    /// Motion calls refused (`motion_calls_per_s`).
    Motion,
}

/// What runs when the stop arrives.
#[derive(Debug, Clone, Copy)]
enum Running {
    Nothing,
    /// From the ground (the takeoff is the running tool).
    Takeoff,
    Goto,
    MoveRelative,
    SetHeading,
    ReturnHome,
    Land,
}

struct Case {
    name: &'static str,
    running: Running,
    /// Virtual seconds the tool runs before the trigger.
    after_s: f64,
    limited: Limited,
    source: Source,
    /// The job ends, in the trigger's turn, with this outcome.
    job_ends: Option<Outcome>,
    /// The mode commanded in the trigger's turn; `None`: nothing (the vehicle already flies
    /// a mode at least as severe as a hold).
    commanded: Option<FlightMode>,
    /// The simulator's mode 3 s later.
    mode_after: SimMode,
}

/// A gate with tight budgets and one OPERATOR session ("s") that holds the controls.
fn gate(now: Instant) -> Gate {
    let f = fixture();
    let mut gate = Gate::new(GateConfig {
        verifier: f.config.clone(),
        denylist: Denylist::default(),
        allow_anonymous: false,
        lease_timeout: Duration::from_secs(60),
        limits: RateLimits {
            calls_per_s: 0.1,
            calls_burst: 3,
            motion_calls_per_s: 0.1,
            motion_calls_burst: 1,
        },
        broker_identities: Default::default(),
        sessions: Default::default(),
    });
    let token = issue(
        f.ed_private.as_bytes(),
        KeyAlg::EdDsa,
        "ed1",
        &Claims {
            sub: "pilot".into(),
            jti: Some("jti-pilot".into()),
            ..claims("OPERATOR")
        },
    )
    .unwrap();
    gate.handle_initialize(now, NOW, "s", 1, Some(&token))
        .unwrap();
    gate.handle_promote(now, "s", 1).unwrap();
    let caller = gate
        .authorize_tool(now, NOW, "s#1", "request_control", needs("request_control"))
        .unwrap();
    assert_eq!(
        gate.handle_control(now, &caller, true),
        crate::auth::ControlResult::Granted
    );
    gate.handle_call_finished(now, "s#1");
    gate
}

/// The permissions of the tools this test calls: the registry's (`mcp::tools`), which the
/// MCP server hands the gate with each call.
fn needs(tool: &str) -> Permission {
    match tool {
        "get_status" => Permission::READ,
        "goto" => Permission::MOTION,
        "request_control" => Permission::CONTROL,
        "emergency_stop" => Permission::EMERGENCY_STOP,
        other => panic!("no permission for {other} in this test"),
    }
}

/// Uses up `limited`; returns the tool the session is now refused.
fn exhaust(gate: &mut Gate, now: Instant, limited: Limited) -> Option<&'static str> {
    let tool = match limited {
        Limited::No => return None,
        Limited::Calls => "get_status",
        Limited::Motion => "goto",
    };
    for _ in 0..10 {
        match gate.authorize_tool(now, NOW, "s#1", tool, needs(tool)) {
            Ok(_) => gate.handle_call_finished(now, "s#1"),
            Err(d) => {
                assert_eq!(d.kind, "rate_limited", "{d:?}");
                return Some(tool);
            }
        }
    }
    panic!("{tool} was never rate-limited");
}

fn stop_mode_of(m: &MavMessage) -> Option<u32> {
    match m {
        MavMessage::COMMAND_LONG(c) if c.command == MavCmd::MAV_CMD_DO_SET_MODE => {
            Some(c.param2 as u32)
        }
        _ => None,
    }
}

fn custom_mode(mode: FlightMode) -> u32 {
    FlightMode::encode(crate::vehicle::snapshot::AutopilotKind::Ardupilot, mode)
        .unwrap()
        .1
}

fn run(case: &Case) {
    let mut rig = Rig::new(Personality::ArduPilot);
    let mut gate = gate(rig.instant());
    if !matches!(case.running, Running::Takeoff) {
        let end = rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
        assert_eq!(end.outcome, Outcome::Completed, "{}: {end:?}", case.name);
    }
    let action = match case.running {
        Running::Nothing => None,
        Running::Takeoff => Some(Action::Takeoff { altitude_m: 20.0 }),
        Running::Goto => Some(goto_offset(60.0, 0.0, 10.0)),
        Running::MoveRelative => Some(Action::MoveRelative {
            forward_m: 0.0,
            right_m: 40.0,
            up_m: 0.0,
        }),
        Running::SetHeading => Some(Action::SetHeading { heading_deg: 180.0 }),
        Running::ReturnHome => Some(Action::ReturnHome),
        Running::Land => Some(Action::Land),
    };
    let job = action.map(|a| {
        rig.request(a)
            .unwrap_or_else(|e| panic!("{}: {a} refused: {e}", case.name))
    });
    rig.run(case.after_s);
    if let Some(job) = job {
        assert!(
            rig.end_of(job).is_none(),
            "{}: the tool ended before the trigger: {:?}",
            case.name,
            rig.end_of(job)
        );
    }

    // The caller's session is over its budget: that tool is refused, the stop is not.
    let now = rig.instant();
    let refused_tool = exhaust(&mut gate, now, case.limited);
    let caller = gate
        .authorize_tool(now, NOW, "s#1", "emergency_stop", needs("emergency_stop"))
        .unwrap_or_else(|d| panic!("{}: the stop was refused: {d:?}", case.name));

    let at = rig.now;
    let sent_before = rig.sent.len();
    let reason = format!("row {}", case.name);
    rig.trigger(case.source, &caller.subject, &reason);
    // Accepted while the same session stays limited for everything else.
    if let Some(tool) = refused_tool {
        let d = gate
            .authorize_tool(now, NOW, "s#1", tool, needs(tool))
            .expect_err("still limited");
        assert_eq!(d.kind, "rate_limited", "{}", case.name);
    }

    // In the trigger's own turn: the tool ended with the reason, the hold left.
    if let Some(job) = job {
        let end = rig
            .end_of(job)
            .unwrap_or_else(|| panic!("{}: the tool still runs after the stop", case.name))
            .clone();
        assert_eq!(Some(end.outcome), case.job_ends, "{}: {end:?}", case.name);
        assert!(
            end.message.contains("the emergency stop took over") && end.message.contains(&reason),
            "{}: {}",
            case.name,
            end.message
        );
    }
    // The stop's command is the first thing the Core sends in the trigger's turn, before
    // the supervisor's heartbeat or anything else due.
    if case.commanded.is_some() {
        let (_, head) = (rig.sent.get(sent_before))
            .unwrap_or_else(|| panic!("{}: nothing sent in the trigger's turn", case.name));
        assert!(
            stop_mode_of(head).is_some(),
            "{}: first {head:?}",
            case.name
        );
    }
    let first: Vec<u32> = rig
        .sent
        .iter()
        .filter(|(t, _)| *t == at)
        .filter_map(|(_, m)| stop_mode_of(m))
        .collect();
    let expected: Vec<u32> = case.commanded.map(custom_mode).into_iter().collect();
    assert_eq!(
        first, expected,
        "{}: commanded in the trigger's turn",
        case.name
    );

    rig.run(3.0);
    assert_eq!(rig.sim.mode(), case.mode_after, "{}", case.name);
    // Nothing but stop commands after the trigger: no step of the tool went out.
    let after: Vec<MavCmd> = rig.commands_sent_since(at);
    assert!(
        after.iter().all(|c| *c == MavCmd::MAV_CMD_DO_SET_MODE),
        "{}: {after:?}",
        case.name
    );
    // Latched: motion is refused with the stop's reason.
    let refusal = rig
        .request(goto_offset(0.0, 30.0, 10.0))
        .expect_err("motion is refused while stopped");
    assert!(
        refusal.contains("emergency stop is latched") && refusal.contains(&reason),
        "{}: {refusal}",
        case.name
    );
}

#[test]
fn a_stop_during_a_running_tool_or_a_rate_limit_ends_the_tool_and_holds() {
    use FlightMode::Brake;
    let cases = [
        Case {
            name: "takeoff climbing, MCP tool",
            running: Running::Takeoff,
            after_s: 4.0,
            limited: Limited::No,
            source: Source::McpTool,
            job_ends: Some(Outcome::Preempted),
            commanded: Some(Brake),
            mode_after: SimMode::Brake,
        },
        Case {
            name: "goto under way, caller over its motion budget",
            running: Running::Goto,
            after_s: 3.0,
            limited: Limited::Motion,
            source: Source::McpTool,
            job_ends: Some(Outcome::Preempted),
            commanded: Some(Brake),
            mode_after: SimMode::Brake,
        },
        Case {
            name: "goto under way, caller over its call budget",
            running: Running::Goto,
            after_s: 3.0,
            limited: Limited::Calls,
            source: Source::McpTool,
            job_ends: Some(Outcome::Preempted),
            commanded: Some(Brake),
            mode_after: SimMode::Brake,
        },
        Case {
            name: "move_relative under way, panic topic",
            running: Running::MoveRelative,
            after_s: 2.0,
            limited: Limited::No,
            source: Source::MqttPanic,
            job_ends: Some(Outcome::Preempted),
            commanded: Some(Brake),
            mode_after: SimMode::Brake,
        },
        Case {
            name: "set_heading turning, hardware switch",
            running: Running::SetHeading,
            after_s: 0.5,
            limited: Limited::Motion,
            source: Source::Hardware,
            job_ends: Some(Outcome::Preempted),
            commanded: Some(Brake),
            mode_after: SimMode::Brake,
        },
        Case {
            name: "hovering, no tool, caller over its motion budget, local command",
            running: Running::Nothing,
            after_s: 1.0,
            limited: Limited::Motion,
            source: Source::Local,
            job_ends: None,
            commanded: Some(Brake),
            mode_after: SimMode::Brake,
        },
        // RTL and LAND are at least as severe as a hold (PX4's ordering, see estop::core):
        // the heartbeat already confirms the stop, so nothing is sent and the vehicle keeps
        // returning or landing; the tool still ends, and motion is refused.
        Case {
            name: "return_home under way",
            running: Running::ReturnHome,
            after_s: 2.0,
            limited: Limited::No,
            source: Source::McpTool,
            job_ends: Some(Outcome::Preempted),
            commanded: None,
            mode_after: SimMode::Rtl,
        },
        Case {
            name: "land under way, caller over its call budget",
            running: Running::Land,
            after_s: 1.0,
            limited: Limited::Calls,
            source: Source::McpTool,
            job_ends: Some(Outcome::Preempted),
            commanded: None,
            mode_after: SimMode::Land,
        },
    ];
    for case in &cases {
        run(case);
    }
}
