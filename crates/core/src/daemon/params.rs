//! The Core's side of the parameter tools: reads answered from the supervisor's table, writes
//! accepted (or refused with what would be allowed) and their outcome audited with the old
//! and new value.

use std::collections::HashMap;
use std::time::Instant;

use tracing::info;

use super::{Core, Event, Handled};
use crate::control::Caller;
use crate::control::param::{FenceMirrorReport, ParamAnswer, ParamAsk};
use crate::safety::fence_mirror::{self, FencePlan};
use crate::vehicle::fence_sync::{FenceJob, FenceSyncEvent};
use crate::vehicle::param_table::{WriteId, WriteOutcome};

/// A write on its way: who asked, for the audit and the answer.
#[derive(Debug, Clone)]
pub(super) struct PendingWrite {
    name: String,
    caller: Caller,
}

/// The writes waiting for the autopilot's echo.
pub(super) type PendingWrites = HashMap<WriteId, PendingWrite>;

/// Upper bound of `list_parameters`' page (an LLM's context is small).
pub const LIST_LIMIT_MAX: usize = 200;

impl Core {
    /// A parameter tool's request: reads are answered now ([`Handled::Param`]); an accepted
    /// write is answered later by [`Event::ParamWritten`].
    pub(super) fn param_ask(&mut self, now: Instant, ask: ParamAsk) -> Handled {
        let s = &mut self.supervisor;
        match ask {
            ParamAsk::Get { name } => Handled::Param(ParamAnswer::Value {
                value: s.parameter(&name),
                progress: s.parameter_progress(),
            }),
            ParamAsk::List { prefix, limit } => {
                let (parameters, matched) = s.parameters(&prefix, limit.min(LIST_LIMIT_MAX));
                Handled::Param(ParamAnswer::List {
                    parameters,
                    matched,
                    progress: s.parameter_progress(),
                    writable: s.writable_parameters(),
                })
            }
            ParamAsk::Set {
                name,
                value,
                caller,
            } => match s.set_parameter(now, &name, value, caller.role) {
                Ok((id, old)) => {
                    info!(caller = %caller.identity, "parameter write {name}: {old} -> {value}");
                    self.param_writes.insert(id, PendingWrite { name, caller });
                    Handled::ParamWrite(id)
                }
                Err(reason) => {
                    self.audit_param(
                        "parameter_set_refused",
                        format!("{name} = {value} by {}: {reason}", who(&caller)),
                    );
                    Handled::Param(ParamAnswer::Refused(format!(
                        "set_parameter {name} = {value} refused: {reason}; nothing was sent"
                    )))
                }
            },
            ParamAsk::MirrorFence { caller } => self.mirror_fence(now, caller),
        }
    }

    /// `mirror_fence`: started (answered by [`Event::ParamWritten`] once read back and
    /// compared) or refused now; both audited with the caller.
    fn mirror_fence(&mut self, now: Instant, caller: Caller) -> Handled {
        match self.supervisor.mirror_fence(now) {
            Ok(plan) => {
                self.audit_param(
                    "fence_mirror_started",
                    format!("by {}: {}", who(&caller), describe_plan(&plan)),
                );
                self.fence_mirror_next = self.fence_mirror_next.wrapping_add(1);
                let id = FENCE_MIRROR_IDS | self.fence_mirror_next;
                self.param_writes.insert(
                    id,
                    PendingWrite {
                        name: FENCE_MIRROR.into(),
                        caller,
                    },
                );
                Handled::ParamWrite(id)
            }
            Err(reason) => {
                self.audit_param(
                    "fence_mirror_refused",
                    format!("by {}: {reason}", who(&caller)),
                );
                Handled::Param(ParamAnswer::Refused(format!(
                    "mirror_fence refused: {reason}; nothing was sent"
                )))
            }
        }
    }

    /// The ends of fence mirrors and checks: audited, and a waiting `mirror_fence` answered.
    pub(super) fn fence_outcomes(&mut self) {
        while let Some(FenceSyncEvent::Finished {
            job,
            plan,
            matches,
            differences,
            error,
        }) = self.supervisor.poll_fence_event()
        {
            let report = FenceMirrorReport {
                verified: matches == Some(true),
                matches_envelope: matches,
                differences,
                error,
                zones: fence_mirror::counts(&plan.items),
                items: plan.items.len(),
                parameters: plan
                    .params
                    .iter()
                    .map(|p| format!("{}={}", p.name, p.value))
                    .collect(),
            };
            let result = match (&report.error, report.verified) {
                (Some(e), _) => format!("not verified: {e}"),
                (None, true) => "verified: the autopilot's fence matches the envelope".into(),
                (None, false) => format!("differs: {}", report.differences.join("; ")),
            };
            if job == FenceJob::Check {
                if !report.verified {
                    self.audit_param("autopilot_fence_differs", result);
                }
                continue;
            }
            let waiting = self
                .param_writes
                .iter()
                .find(|(id, w)| **id & FENCE_MIRROR_IDS != 0 && w.name == FENCE_MIRROR)
                .map(|(id, _)| *id);
            let by = waiting
                .and_then(|id| self.param_writes.remove(&id).map(|w| (id, w)))
                .map(|(id, w)| (id, who(&w.caller)));
            let who_text = by.as_ref().map_or(
                "the configuration (mirror_to_autopilot)".to_string(),
                |(_, w)| w.clone(),
            );
            self.audit_param(
                if report.verified {
                    "fence_mirrored"
                } else {
                    "fence_mirror_failed"
                },
                format!("by {who_text}: {}; {result}", describe_plan(&plan)),
            );
            if let Some((id, _)) = by {
                self.events.push_back(Event::ParamWritten {
                    id,
                    answer: ParamAnswer::FenceMirrored(report),
                });
            }
        }
    }

    /// The outcomes of writes: audited and handed to the shell for the waiting call.
    pub(super) fn param_outcomes(&mut self) {
        while let Some((id, outcome)) = self.supervisor.poll_parameter_outcome() {
            let Some(write) = self.param_writes.remove(&id) else {
                continue;
            };
            let name = write.name;
            let by = who(&write.caller);
            let answer = match outcome {
                WriteOutcome::Confirmed { old, new } => {
                    self.audit_param("parameter_set", format!("{name}: {old} -> {new} by {by}"));
                    ParamAnswer::Written { name, old, new }
                }
                WriteOutcome::NotConfirmed { asked, autopilot } => {
                    let why = format!(
                        "{name} = {asked} by {by} was not confirmed by the autopilot; it reports \
                         {autopilot}"
                    );
                    self.audit_param("parameter_set_unconfirmed", why.clone());
                    ParamAnswer::Refused(format!(
                        "{why} (it may refuse the value or the link may be losing messages; \
                         check with get_parameter)"
                    ))
                }
                WriteOutcome::Aborted(why) => {
                    let why = format!("{name} by {by}: {why}");
                    self.audit_param("parameter_set_unconfirmed", why.clone());
                    ParamAnswer::Refused(why)
                }
            };
            self.events.push_back(Event::ParamWritten { id, answer });
        }
    }

    fn audit_param(&mut self, kind: &str, detail: String) {
        info!("{kind}: {detail}");
        self.events
            .push_back(Event::Audit(crate::audit::Event::Safety {
                kind: kind.into(),
                detail,
            }));
    }
}

/// `mirror_fence`'s answers travel as parameter writes, with ids of their own (the table's
/// count up from 0 and never reach the top bit).
const FENCE_MIRROR_IDS: WriteId = 1 << 63;
const FENCE_MIRROR: &str = "fence mirror";

/// What a fence plan uploads, for the audit.
fn describe_plan(plan: &FencePlan) -> String {
    let c = fence_mirror::counts(&plan.items);
    format!(
        "{} fence items ({} inclusion polygons, {} exclusion polygons, {} inclusion circles, \
         {} exclusion circles), parameters {}",
        plan.items.len(),
        c.inclusion_polygons,
        c.exclusion_polygons,
        c.inclusion_circles,
        c.exclusion_circles,
        plan.params
            .iter()
            .map(|p| format!("{}={}", p.name, p.value))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn who(caller: &Caller) -> String {
    format!("{} ({})", caller.identity, caller.role)
}
