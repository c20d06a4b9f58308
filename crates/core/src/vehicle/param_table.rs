//! The autopilot's whole parameter table: a cached, complete download and confirmed writes,
//! sans-IO.
//!
//! Download: `PARAM_REQUEST_LIST`, then the autopilot streams `PARAM_VALUE` ×N, each with
//! its index and the table's size (`param_count`). Streams lose messages on a radio link, so
//! once the stream goes quiet for [`LIST_QUIET`] the indices never seen are asked for one by
//! one (`PARAM_REQUEST_READ` by index), a few at a time, each retried up to
//! [`ATTEMPTS_MAX`] times. A list that is never answered is asked again [`LIST_ATTEMPTS`]
//! times. [`ParamTable::progress`] says how far it got.
//!
//! A `PARAM_VALUE` is taken whenever the autopilot sends it, asked or not: both firmwares
//! broadcast a changed parameter, and ArduPilot does so with index 65535 (`-1`), so values
//! are keyed by name and the index is kept only to find gaps.
//!
//! Writes: [`ParamTable::set`] queues a `PARAM_SET` for a parameter already read (its type
//! decides the wire encoding: ArduPilot casts integers into the float, PX4 copies their bytes,
//! see `params::decode`). The write is confirmed only by a `PARAM_VALUE` echo carrying the
//! value asked for; it is sent again after [`RETRY_AFTER`] up to [`ATTEMPTS_MAX`] times, then
//! reported as not confirmed with the value the autopilot last gave. Outcomes come out of
//! [`ParamTable::poll_outcome`].
//!
//! Call order as for every core: `start(now, kind, system, component)` when the autopilot is
//! found; `handle_message(now, header, msg)` for every message; `poll_transmit(now)` until
//! `None`; wake at `poll_timeout()`; `stop()` when the link is lost.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::link::dialect::{
    MavParamType, PARAM_REQUEST_LIST_DATA, PARAM_REQUEST_READ_DATA, PARAM_SET_DATA,
};
use crate::link::{MavHeader, MavMessage};

use super::modes::AutopilotKind;
use super::params::{decode, encode};

/// The stream is taken as ended after this long without a `PARAM_VALUE`.
pub const LIST_QUIET: Duration = Duration::from_millis(1000);
/// `PARAM_REQUEST_LIST` sends before a silent autopilot is given up.
pub const LIST_ATTEMPTS: u8 = 3;
/// Gap requests outstanding at once (a radio link is narrow).
pub const IN_FLIGHT_MAX: usize = 8;
/// An unanswered gap request or write is sent again after this.
pub const RETRY_AFTER: Duration = Duration::from_millis(1000);
/// Sends of one gap request or one write before it is given up.
pub const ATTEMPTS_MAX: u8 = 3;
/// The largest table taken (ArduCopter has about 1300; a bigger count is a corrupt frame).
pub const COUNT_MAX: u16 = 4096;

/// One parameter as last read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct ParamValue {
    /// The autopilot's name for it.
    pub name: String,
    /// Its value, in the firmware's own units.
    pub value: f64,
    /// `int8`, `uint8`, `int16`, `uint16`, `int32`, `uint32` or `float`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its index in the autopilot's table, when the autopilot gave one.
    pub index: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    value: f64,
    kind: MavParamType,
    index: Option<u16>,
}

/// Where the download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    /// No autopilot to ask yet.
    NotStarted,
    /// The list was asked for; the stream or the gap requests are running.
    Downloading,
    /// Every index of the table was read.
    Complete,
    /// Given up with indices (or the whole list) unanswered; what was read stands.
    Incomplete,
}

/// How far the download got.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct DownloadProgress {
    pub state: DownloadState,
    /// Parameters read, by index.
    pub received: usize,
    /// The table's size as the autopilot gave it (`None` before its first answer).
    pub count: Option<u16>,
    /// Indices given up on.
    pub missing: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    /// `PARAM_REQUEST_LIST` to send (again).
    WantList {
        attempts: u8,
    },
    /// The stream: `last` is the last time it said anything (or the list was sent).
    Streaming {
        attempts: u8,
        last: Instant,
    },
    /// Asking for the indices the stream missed.
    Gaps,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Asked {
    index: u16,
    attempts: u8,
    sent_at: Instant,
}

/// A write's identity, for matching its outcome.
pub type WriteId = u64;

/// How a write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The autopilot echoed the new value.
    Confirmed { old: f64, new: f64 },
    /// No echo with the value asked for: the value the autopilot last gave, if any.
    NotConfirmed { asked: f64, autopilot: f64 },
    /// The link or the autopilot went away first.
    Aborted(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Write {
    id: WriteId,
    name: String,
    asked: f64,
    wire: f32,
    kind: MavParamType,
    old: f64,
    attempts: u8,
    sent_at: Option<Instant>,
}

/// The cached table. See the module doc.
#[derive(Debug)]
pub struct ParamTable {
    kind: Option<AutopilotKind>,
    target: Option<(u8, u8)>,
    count: Option<u16>,
    entries: BTreeMap<String, Entry>,
    /// Which indices have been seen (its length is `count`).
    seen: Vec<bool>,
    phase: Phase,
    gaps: VecDeque<u16>,
    in_flight: Vec<Asked>,
    missing: Vec<u16>,
    writes: VecDeque<Write>,
    next_write: WriteId,
    outcomes: VecDeque<(WriteId, WriteOutcome)>,
}

impl Default for ParamTable {
    fn default() -> Self {
        ParamTable::new()
    }
}

impl ParamTable {
    pub fn new() -> ParamTable {
        ParamTable {
            kind: None,
            target: None,
            count: None,
            entries: BTreeMap::new(),
            seen: Vec::new(),
            phase: Phase::Idle,
            gaps: VecDeque::new(),
            in_flight: Vec::new(),
            missing: Vec::new(),
            writes: VecDeque::new(),
            next_write: 1,
            outcomes: VecDeque::new(),
        }
    }

    /// Downloads the table of this autopilot (a different autopilot forgets the old table).
    pub fn start(&mut self, _now: Instant, kind: AutopilotKind, system: u8, component: u8) {
        if self.kind != Some(kind) || self.target != Some((system, component)) {
            self.entries.clear();
            self.count = None;
            self.seen.clear();
        }
        self.kind = Some(kind);
        self.target = Some((system, component));
        self.gaps.clear();
        self.in_flight.clear();
        self.missing.clear();
        self.phase = Phase::WantList { attempts: 0 };
    }

    /// Forgets the autopilot's link (values read stand); pending writes end.
    pub fn stop(&mut self) {
        self.phase = Phase::Idle;
        self.gaps.clear();
        self.in_flight.clear();
        for write in std::mem::take(&mut self.writes) {
            self.outcomes.push_back((
                write.id,
                WriteOutcome::Aborted(
                    "the autopilot link was lost before the write was confirmed".into(),
                ),
            ));
        }
    }

    /// Takes the autopilot's `PARAM_VALUE`s; ignores everything else.
    pub fn handle_message(&mut self, now: Instant, header: &MavHeader, msg: &MavMessage) {
        let MavMessage::PARAM_VALUE(p) = msg else {
            return;
        };
        let Some((system, component)) = self.target else {
            return;
        };
        if u8::try_from(header.system_id) != Ok(system) || header.component_id != component {
            return;
        }
        let Ok(name) = p.param_id.to_str() else {
            return;
        };
        let name = name.trim_end_matches('\0');
        if name.is_empty() {
            return;
        }
        let Some(value) = decode(self.kind, p.param_type, p.param_value) else {
            return;
        };
        if (1..=COUNT_MAX).contains(&p.param_count) && self.count != Some(p.param_count) {
            // First answer, or the table changed size: track the new size.
            self.count = Some(p.param_count);
            self.seen.resize(usize::from(p.param_count), false);
        }
        let index = (p.param_index < p.param_count).then_some(p.param_index);
        if let Some(i) = index
            && let Some(seen) = self.seen.get_mut(usize::from(i))
        {
            *seen = true;
            self.in_flight.retain(|a| a.index != i);
            self.gaps.retain(|g| *g != i);
            self.missing.retain(|m| *m != i);
        }
        let entry = self.entries.entry(name.to_owned()).or_insert(Entry {
            value,
            kind: p.param_type,
            index,
        });
        entry.value = value;
        entry.kind = p.param_type;
        entry.index = index.or(entry.index);
        if let Phase::Streaming { attempts, .. } = self.phase {
            self.phase = Phase::Streaming {
                attempts,
                last: now,
            };
        }
        // A write is confirmed by an echo of the value asked for; another value may be a
        // broadcast sent before the write arrived, so the write waits for its retries.
        if let Some(at) = self.writes.iter().position(|w| w.name == name)
            && same_value(self.writes[at].kind, self.writes[at].asked, value)
            && let Some(write) = self.writes.remove(at)
        {
            self.outcomes.push_back((
                write.id,
                WriteOutcome::Confirmed {
                    old: write.old,
                    new: value,
                },
            ));
        }
    }

    /// Queues a write of `name` (already read: its type is needed) to `value`, in the
    /// firmware's units. Refused if the value does not fit the parameter's type.
    pub fn set(&mut self, name: &str, value: f64) -> Result<WriteId, String> {
        let Some(entry) = self.entries.get(name) else {
            return Err(format!(
                "`{name}` has not been read from the autopilot (it does not have it, or the \
                 download has not reached it yet)"
            ));
        };
        let Some((low, high)) = integer_range(entry.kind) else {
            if !(value.is_finite() && value.abs() <= f64::from(f32::MAX)) {
                return Err(format!("`{name}` is a float; {value} is not one"));
            }
            return Ok(self.queue_write(name, value, entry.kind, entry.value));
        };
        if !(value.is_finite() && value.fract() == 0.0 && (low..=high).contains(&value)) {
            return Err(format!(
                "`{name}` is an integer ({}) from {low} to {high}; {value} is not one",
                type_name(entry.kind)
            ));
        }
        Ok(self.queue_write(name, value, entry.kind, entry.value))
    }

    fn queue_write(&mut self, name: &str, value: f64, kind: MavParamType, old: f64) -> WriteId {
        let id = self.next_write;
        self.next_write += 1;
        // A newer write of the same name supersedes the older one.
        if let Some(at) = self.writes.iter().position(|w| w.name == name)
            && let Some(older) = self.writes.remove(at)
        {
            self.outcomes.push_back((
                older.id,
                WriteOutcome::Aborted(format!("superseded by a newer write of `{name}`")),
            ));
        }
        self.writes.push_back(Write {
            id,
            name: name.to_owned(),
            asked: value,
            wire: encode(self.kind, kind, value),
            kind,
            old,
            attempts: 0,
            sent_at: None,
        });
        id
    }

    /// The next message to send, if any: writes first, then the download.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<MavMessage> {
        let (system, component) = self.target?;
        if self.phase == Phase::Idle {
            return None;
        }
        if let Some(message) = self.poll_write(now, system, component) {
            return Some(message);
        }
        match self.phase {
            Phase::Idle | Phase::Done => None,
            Phase::WantList { attempts } => {
                self.phase = Phase::Streaming {
                    attempts: attempts + 1,
                    last: now,
                };
                Some(MavMessage::PARAM_REQUEST_LIST(PARAM_REQUEST_LIST_DATA {
                    target_system: system,
                    target_component: component,
                }))
            }
            Phase::Streaming { attempts, last } => {
                if now < last + LIST_QUIET {
                    return None;
                }
                if self.count.is_none() {
                    if attempts < LIST_ATTEMPTS {
                        self.phase = Phase::WantList { attempts };
                    } else {
                        self.phase = Phase::Done;
                    }
                    return self.poll_transmit(now);
                }
                self.gaps = (self.seen.iter().enumerate())
                    .filter(|(_, seen)| !**seen)
                    .map(|(i, _)| i as u16)
                    .collect();
                self.phase = Phase::Gaps;
                self.poll_transmit(now)
            }
            Phase::Gaps => self.poll_gap(now, system, component),
        }
    }

    fn poll_write(&mut self, now: Instant, system: u8, component: u8) -> Option<MavMessage> {
        let due = |w: &Write| w.sent_at.is_none_or(|at| now >= at + RETRY_AFTER);
        while let Some(at) = self.writes.iter().position(due) {
            let write = &mut self.writes[at];
            if write.attempts >= ATTEMPTS_MAX {
                let write = self.writes.remove(at)?;
                let autopilot = self.entries.get(&write.name).map_or(f64::NAN, |e| e.value);
                self.outcomes.push_back((
                    write.id,
                    WriteOutcome::NotConfirmed {
                        asked: write.asked,
                        autopilot,
                    },
                ));
                continue;
            }
            write.attempts += 1;
            write.sent_at = Some(now);
            return Some(MavMessage::PARAM_SET(PARAM_SET_DATA {
                param_value: write.wire,
                target_system: system,
                target_component: component,
                param_id: write.name.as_str().into(),
                param_type: write.kind,
            }));
        }
        None
    }

    fn poll_gap(&mut self, now: Instant, system: u8, component: u8) -> Option<MavMessage> {
        let mut index = 0;
        let mut retry = None;
        while index < self.in_flight.len() {
            let asked = self.in_flight[index];
            if now < asked.sent_at + RETRY_AFTER {
                index += 1;
            } else if asked.attempts >= ATTEMPTS_MAX {
                self.in_flight.remove(index);
                self.missing.push(asked.index);
            } else {
                retry.get_or_insert(index);
                index += 1;
            }
        }
        let asked = if let Some(at) = retry {
            let asked = &mut self.in_flight[at];
            asked.attempts += 1;
            asked.sent_at = now;
            *asked
        } else if self.in_flight.len() < IN_FLIGHT_MAX
            && let Some(gap) = self.gaps.pop_front()
        {
            let asked = Asked {
                index: gap,
                attempts: 1,
                sent_at: now,
            };
            self.in_flight.push(asked);
            asked
        } else {
            if self.in_flight.is_empty() && self.gaps.is_empty() {
                self.phase = Phase::Done;
            }
            return None;
        };
        Some(MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
            param_index: asked.index as i16,
            target_system: system,
            target_component: component,
            param_id: "".into(),
        }))
    }

    /// When `poll_transmit` next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let writes = self.writes.iter().filter_map(|w| w.sent_at);
        let writes = writes.map(|at| at + RETRY_AFTER).min();
        let download = match self.phase {
            Phase::Streaming { last, .. } => Some(last + LIST_QUIET),
            Phase::Gaps => self.in_flight.iter().map(|a| a.sent_at + RETRY_AFTER).min(),
            _ => None,
        };
        writes.into_iter().chain(download).min()
    }

    /// The outcome of a write, once it has one.
    pub fn poll_outcome(&mut self) -> Option<(WriteId, WriteOutcome)> {
        self.outcomes.pop_front()
    }

    pub fn progress(&self) -> DownloadProgress {
        let received = self.seen.iter().filter(|s| **s).count();
        let state = match self.phase {
            Phase::Idle if self.entries.is_empty() => DownloadState::NotStarted,
            Phase::WantList { .. } | Phase::Streaming { .. } | Phase::Gaps => {
                DownloadState::Downloading
            }
            _ if self.count.is_some_and(|c| received == usize::from(c)) => DownloadState::Complete,
            _ => DownloadState::Incomplete,
        };
        DownloadProgress {
            state,
            received,
            count: self.count,
            missing: self.missing.len(),
        }
    }

    /// One parameter, if read.
    pub fn get(&self, name: &str) -> Option<ParamValue> {
        self.entries.get(name).map(|e| value_of(name, e))
    }

    /// The parameters whose name starts with `prefix`, in name order: at most `limit` of
    /// them, and how many matched in all.
    pub fn list(&self, prefix: &str, limit: usize) -> (Vec<ParamValue>, usize) {
        let matching = (self.entries.range(prefix.to_owned()..))
            .take_while(|(name, _)| name.starts_with(prefix));
        let mut total = 0;
        let mut out = Vec::new();
        for (name, entry) in matching {
            total += 1;
            if out.len() < limit {
                out.push(value_of(name, entry));
            }
        }
        (out, total)
    }

    /// The autopilot the table came from.
    pub fn autopilot(&self) -> Option<AutopilotKind> {
        self.kind
    }
}

fn value_of(name: &str, entry: &Entry) -> ParamValue {
    ParamValue {
        name: name.to_owned(),
        value: entry.value,
        kind: type_name(entry.kind),
        index: entry.index,
    }
}

/// The parameter type's name as the tools show it.
pub fn type_name(kind: MavParamType) -> &'static str {
    use MavParamType as T;
    match kind {
        T::MAV_PARAM_TYPE_UINT8 => "uint8",
        T::MAV_PARAM_TYPE_INT8 => "int8",
        T::MAV_PARAM_TYPE_UINT16 => "uint16",
        T::MAV_PARAM_TYPE_INT16 => "int16",
        T::MAV_PARAM_TYPE_UINT32 => "uint32",
        T::MAV_PARAM_TYPE_INT32 => "int32",
        T::MAV_PARAM_TYPE_UINT64 => "uint64",
        T::MAV_PARAM_TYPE_INT64 => "int64",
        T::MAV_PARAM_TYPE_REAL64 => "double",
        _ => "float",
    }
}

/// The MAVLink type of a [`type_name`].
pub fn mav_type(name: &str) -> MavParamType {
    use MavParamType as T;
    match name {
        "uint8" => T::MAV_PARAM_TYPE_UINT8,
        "int8" => T::MAV_PARAM_TYPE_INT8,
        "uint16" => T::MAV_PARAM_TYPE_UINT16,
        "int16" => T::MAV_PARAM_TYPE_INT16,
        "uint32" => T::MAV_PARAM_TYPE_UINT32,
        "int32" => T::MAV_PARAM_TYPE_INT32,
        "uint64" => T::MAV_PARAM_TYPE_UINT64,
        "int64" => T::MAV_PARAM_TYPE_INT64,
        "double" => T::MAV_PARAM_TYPE_REAL64,
        _ => T::MAV_PARAM_TYPE_REAL32,
    }
}

/// The values an integer type holds (`None`: a float).
fn integer_range(kind: MavParamType) -> Option<(f64, f64)> {
    use MavParamType as T;
    match kind {
        T::MAV_PARAM_TYPE_UINT8 => Some((0.0, f64::from(u8::MAX))),
        T::MAV_PARAM_TYPE_INT8 => Some((f64::from(i8::MIN), f64::from(i8::MAX))),
        T::MAV_PARAM_TYPE_UINT16 => Some((0.0, f64::from(u16::MAX))),
        T::MAV_PARAM_TYPE_INT16 => Some((f64::from(i16::MIN), f64::from(i16::MAX))),
        T::MAV_PARAM_TYPE_UINT32 => Some((0.0, f64::from(u32::MAX))),
        T::MAV_PARAM_TYPE_INT32 => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        _ => None,
    }
}

/// An echo equals the value asked for as the wire carries it (a float rounds to f32).
fn same_value(kind: MavParamType, asked: f64, echo: f64) -> bool {
    match integer_range(kind) {
        Some(_) => asked == echo,
        None => (asked as f32) == (echo as f32),
    }
}

#[cfg(test)]
#[path = "param_table_tests.rs"]
mod tests;
