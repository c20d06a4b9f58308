//! The one place that decides what is recorded of each source.
//!
//! Every source's own event type is mapped here by an exhaustive `match` (no `_` arm): a new
//! e-stop source, failsafe, stop event, supervisor notice or bridge event does not compile
//! until someone decides here what its record is. The sources then hand their events to the
//! one recorder (the daemon's `AuditHandle::record`), never writing records of their own:
//! - the e-stop driver, for every [`StopEvent`] it drains (in the decision loop's turn);
//! - the daemon loop, for every supervisor [`Notice`], [`BridgeEvent`], job end, ground-link
//!   change, envelope change, and its start, configuration and stop;
//! - the MCP guard, for calls, security events and lease changes.
//!
//! Recording never waits: `record` is a `try_send` on a bounded channel.

use crate::bridge::BridgeEvent;
use crate::estop::{Failsafe, Source, StopEvent};
use crate::flight::{JobEnd, Outcome};
use crate::supervisor::Notice;

use super::Event;

/// The name of an e-stop source in the log.
pub fn source_name(source: Source) -> &'static str {
    match source {
        Source::McpTool => "mcp_tool",
        Source::MqttPanic => "mqtt_panic",
        Source::Local => "local",
        Source::Hardware => "hardware",
        Source::Failsafe => "failsafe",
    }
}

/// The name of a failsafe of the e-stop core in the log.
pub fn failsafe_name(failsafe: Failsafe) -> &'static str {
    match failsafe {
        Failsafe::GroundLinkLost => "ground_link_lost",
        Failsafe::GroundInactive => "ground_inactive",
        Failsafe::BatteryCritical => "battery_critical",
    }
}

/// The record of an e-stop event: every one is recorded.
pub fn stop(event: &StopEvent) -> Event {
    let plain = |kind: &str| Event::Stop {
        kind: kind.into(),
        source: String::new(),
        identity: String::new(),
        detail: event.to_string(),
    };
    match event {
        StopEvent::Triggered {
            source,
            identity,
            reason,
            first,
        } => Event::Stop {
            kind: if *first {
                "triggered"
            } else {
                "triggered_again"
            }
            .into(),
            source: source_name(*source).into(),
            identity: identity.clone(),
            detail: reason.clone(),
        },
        StopEvent::FailsafeTriggered { failsafe, detail } => Event::Failsafe {
            failsafe: failsafe_name(*failsafe).into(),
            raised: true,
            detail: detail.clone(),
        },
        StopEvent::FailsafeCleared { failsafe } => Event::Failsafe {
            failsafe: failsafe_name(*failsafe).into(),
            raised: false,
            detail: event.to_string(),
        },
        StopEvent::RungStarted { rung, why } => Event::Stop {
            kind: "rung_started".into(),
            source: String::new(),
            identity: String::new(),
            detail: format!("{rung}: {why}"),
        },
        StopEvent::RungConfirmed { .. } => plain("rung_confirmed"),
        StopEvent::RungRefused { .. } => plain("rung_refused"),
        StopEvent::PilotTookOver { mode } => Event::Failsafe {
            failsafe: "pilot_takeover".into(),
            raised: true,
            detail: format!("while stopped, in {mode}: {event}"),
        },
        StopEvent::Stopped { .. } => plain("stopped"),
        StopEvent::GroundLinkBack => Event::Link {
            link: "ground".into(),
            up: true,
            detail: event.to_string(),
        },
        StopEvent::AutopilotLinkLost => Event::Failsafe {
            failsafe: "autopilot_link_lost".into(),
            raised: true,
            detail: event.to_string(),
        },
        StopEvent::AutopilotLinkBack => Event::Failsafe {
            failsafe: "autopilot_link_lost".into(),
            raised: false,
            detail: event.to_string(),
        },
        StopEvent::KillConfirmationRequired {
            action, within_s, ..
        } => Event::Stop {
            kind: "kill_confirmation_required".into(),
            source: String::new(),
            identity: String::new(),
            // The code itself stays out of the log: it is a one-time secret.
            detail: format!("{action} requested; confirmation asked within {within_s:.0} s"),
        },
        StopEvent::Reset { identity } => Event::Stop {
            kind: "reset".into(),
            source: String::new(),
            identity: identity.clone(),
            detail: event.to_string(),
        },
    }
}

/// A reset the e-stop core refused (no event of its own: the caller gets the answer).
pub fn reset_refused(identity: &str, why: &str) -> Event {
    Event::Stop {
        kind: "reset_refused".into(),
        source: String::new(),
        identity: identity.into(),
        detail: why.into(),
    }
}

/// The record of a supervisor notice, if any.
pub fn notice(notice: &Notice) -> Option<Event> {
    let link = |up: bool, detail: String| {
        Some(Event::Link {
            link: "autopilot".into(),
            up,
            detail,
        })
    };
    let safety = |kind: &str, detail: String| {
        Some(Event::Safety {
            kind: kind.into(),
            detail,
        })
    };
    match notice {
        Notice::LinkUp { peer } => link(true, format!("link open: {peer}")),
        Notice::LinkDown { reason } => link(false, format!("link closed: {reason}")),
        Notice::AutopilotFound { description } => {
            link(true, format!("autopilot heard: {description}"))
        }
        Notice::AutopilotLost { silent_for } => Some(Event::Failsafe {
            failsafe: "autopilot_link_lost".into(),
            raised: true,
            detail: format!(
                "no heartbeat for {:.1} s: every tool refuses motion until it is back",
                silent_for.as_secs_f64()
            ),
        }),
        // Routine: how many telemetry streams the autopilot accepted, and every finished
        // command (each call has its own record with its outcome).
        Notice::TelemetryRequested { .. } | Notice::CommandFinished { .. } => None,
        Notice::EnvelopeInvalid { reason } => safety("envelope_invalid", reason.clone()),
        Notice::EnvelopeWarning { warning: Some(w) } => safety("envelope_warning", w.clone()),
        Notice::EnvelopeWarning { warning: None } => {
            safety("envelope_warning_cleared", "back inside the margins".into())
        }
        Notice::EnvelopeBreach { what } => safety(
            "envelope_breach",
            format!("{what}: holding, then the breach action"),
        ),
        Notice::WhitelistViolation { description } => safety(
            "whitelist_violation",
            format!("not transmitted: {description}"),
        ),
        Notice::LinkRefused {
            reason,
            count,
            peer,
            detail,
        } => Some(Event::Security {
            kind: format!("autopilot_link_{reason}"),
            session: "autopilot link".into(),
            subject: peer.clone().unwrap_or_else(|| "-".into()),
            detail: match count {
                1 => detail.clone(),
                n => format!("{n} refused since the last record; the last: {detail}"),
            },
        }),
    }
}

/// The record of a bridge event, if any.
pub fn bridge(event: &BridgeEvent) -> Option<Event> {
    let link = |up: bool, detail: String| {
        Some(Event::Link {
            link: "bridge".into(),
            up,
            detail,
        })
    };
    match event {
        // The trigger itself is recorded from the e-stop's own event (source `hardware`);
        // this says what the MCU saw.
        BridgeEvent::EstopAsserted { source, seq } => match source {
            fwbridge_protocol::EstopSource::CompanionSilent => Some(Event::Failsafe {
                failsafe: "companion_stall".into(),
                raised: true,
                detail: format!(
                    "the safety microcontroller missed the companion's heartbeat and latched \
                     its stop (event {seq})"
                ),
            }),
            fwbridge_protocol::EstopSource::Switch => Some(Event::Safety {
                kind: "hardware_switch".into(),
                detail: format!("the e-stop circuit opened (event {seq})"),
            }),
        },
        BridgeEvent::EstopReleased { source } => Some(Event::Safety {
            kind: "hardware_released".into(),
            detail: format!("the safety microcontroller released its latch (was {source})"),
        }),
        BridgeEvent::Connected {
            mcu_version,
            watchdog_ms,
        } => link(
            true,
            format!("firmware {mcu_version}, companion watchdog {watchdog_ms} ms"),
        ),
        BridgeEvent::VersionMismatch { message } => link(false, message.clone()),
        BridgeEvent::Lost { reason } => link(false, reason.clone()),
        BridgeEvent::OutputChanged { asserted } => Some(Event::Safety {
            kind: if *asserted {
                "hardware_output_asserted"
            } else {
                "hardware_output_released"
            }
            .into(),
            detail: String::new(),
        }),
        BridgeEvent::ReleaseAnswered { result } => Some(Event::Safety {
            kind: "hardware_release_answered".into(),
            detail: format!("{result:?}"),
        }),
    }
}

/// The record of a finished flight job, if any: a pilot taking over is a failsafe (every
/// other outcome is in the call's own record).
pub fn job_end(end: &JobEnd) -> Option<Event> {
    match end.outcome {
        Outcome::TakenOver => Some(Event::Failsafe {
            failsafe: "pilot_takeover".into(),
            raised: true,
            detail: end.message.clone(),
        }),
        Outcome::Completed
        | Outcome::Refused
        | Outcome::Failed
        | Outcome::Cancelled
        | Outcome::Superseded
        | Outcome::LinkLost
        | Outcome::Preempted => None,
    }
}

/// The broker connection as the MCP shell reports it.
pub fn ground_link(connected: bool) -> Event {
    Event::Link {
        link: "ground".into(),
        up: connected,
        detail: if connected {
            "connected to the broker".into()
        } else {
            "no broker connection".into()
        },
    }
}

/// The MCP shell stopped stamping that it serves (its runtime stalled) while connected, or
/// stamps again: the loop counts its silence as the ground link lost (`Core`).
pub fn ground_serving(serving: bool, silent_max: std::time::Duration) -> Event {
    Event::Link {
        link: "ground".into(),
        up: serving,
        detail: if serving {
            "the MCP side is serving again".into()
        } else {
            format!(
                "the MCP side has not stamped for {} s: the connection it reports is taken as lost",
                silent_max.as_secs_f64()
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every e-stop source, listed by a match with no wildcard: adding a source to
    /// `estop::Source` fails to compile here until it is listed, and the test then checks
    /// that its trigger leaves a record naming it.
    fn all_sources() -> Vec<Source> {
        let list = [
            Source::McpTool,
            Source::MqttPanic,
            Source::Local,
            Source::Hardware,
            Source::Failsafe,
        ];
        for s in list {
            match s {
                Source::McpTool
                | Source::MqttPanic
                | Source::Local
                | Source::Hardware
                | Source::Failsafe => {}
            }
        }
        list.to_vec()
    }

    fn all_failsafes() -> Vec<Failsafe> {
        let list = [
            Failsafe::GroundLinkLost,
            Failsafe::GroundInactive,
            Failsafe::BatteryCritical,
        ];
        for f in list {
            match f {
                Failsafe::GroundLinkLost | Failsafe::GroundInactive | Failsafe::BatteryCritical => {
                }
            }
        }
        list.to_vec()
    }

    #[test]
    fn every_stop_source_and_failsafe_leaves_a_record_naming_it() {
        let mut names = std::collections::HashSet::new();
        for source in all_sources() {
            let event = StopEvent::Triggered {
                source,
                identity: "who".into(),
                reason: "why".into(),
                first: true,
            };
            match stop(&event) {
                Event::Stop {
                    kind,
                    source: name,
                    identity,
                    ..
                } => {
                    assert_eq!(kind, "triggered");
                    assert_eq!(identity, "who");
                    assert!(names.insert(name.clone()), "{name} named twice");
                }
                other => panic!("{source:?}: {other:?}"),
            }
        }
        let mut failsafes = std::collections::HashSet::new();
        for failsafe in all_failsafes() {
            for (event, raised) in [
                (
                    StopEvent::FailsafeTriggered {
                        failsafe,
                        detail: "d".into(),
                    },
                    true,
                ),
                (StopEvent::FailsafeCleared { failsafe }, false),
            ] {
                match stop(&event) {
                    Event::Failsafe {
                        failsafe: name,
                        raised: r,
                        ..
                    } => {
                        assert_eq!(r, raised);
                        failsafes.insert(name);
                    }
                    other => panic!("{failsafe:?}: {other:?}"),
                }
            }
        }
        assert_eq!(failsafes.len(), all_failsafes().len());
    }

    #[test]
    fn the_failsafes_outside_the_stop_core_are_recorded() {
        // Autopilot link, daemon stall (seen by the bridge MCU), pilot takeover.
        let lost = notice(&Notice::AutopilotLost {
            silent_for: std::time::Duration::from_secs(3),
        });
        assert!(
            matches!(lost, Some(Event::Failsafe { ref failsafe, raised: true, .. }) if failsafe == "autopilot_link_lost")
        );
        let stall = bridge(&BridgeEvent::EstopAsserted {
            source: fwbridge_protocol::EstopSource::CompanionSilent,
            seq: 1,
        });
        assert!(
            matches!(stall, Some(Event::Failsafe { ref failsafe, .. }) if failsafe == "companion_stall")
        );
        let pilot = job_end(&JobEnd {
            outcome: Outcome::TakenOver,
            message: "the pilot switched to POSHOLD".into(),
        });
        assert!(
            matches!(pilot, Some(Event::Failsafe { ref failsafe, .. }) if failsafe == "pilot_takeover")
        );
        // The kill code never reaches the log.
        let kill = stop(&StopEvent::KillConfirmationRequired {
            action: "force disarm".into(),
            code: 123_456,
            within_s: 10.0,
        });
        assert!(!format!("{kill:?}").contains("123456"));
    }

    #[test]
    fn link_refusals_are_security_records_naming_the_reason_and_the_peer() {
        let first = notice(&Notice::LinkRefused {
            reason: "bad_signature",
            count: 1,
            peer: Some("10.0.0.9:14550".into()),
            detail: "HEARTBEAT from system 1 component 1 refused".into(),
        });
        let Some(Event::Security {
            kind,
            session,
            subject,
            detail,
        }) = first
        else {
            panic!("{first:?}");
        };
        assert_eq!(kind, "autopilot_link_bad_signature");
        assert_eq!(session, "autopilot link");
        assert_eq!(subject, "10.0.0.9:14550");
        assert_eq!(detail, "HEARTBEAT from system 1 component 1 refused");
        let summed = notice(&Notice::LinkRefused {
            reason: "unsigned",
            count: 250,
            peer: None,
            detail: "unsigned COMMAND_ACK".into(),
        });
        let Some(Event::Security {
            subject, detail, ..
        }) = summed
        else {
            panic!("{summed:?}");
        };
        assert_eq!(subject, "-");
        assert!(
            detail.starts_with("250 refused since the last record"),
            "{detail}"
        );
    }
}
