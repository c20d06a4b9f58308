//! The Core's side of the parameter tools: reads answered from the supervisor's table, writes
//! accepted (or refused with what would be allowed) and their outcome audited with the old
//! and new value.

use std::collections::HashMap;
use std::time::Instant;

use tracing::info;

use super::{Core, Event, Handled};
use crate::control::Caller;
use crate::control::param::{ParamAnswer, ParamAsk};
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

fn who(caller: &Caller) -> String {
    format!("{} ({})", caller.identity, caller.role)
}
