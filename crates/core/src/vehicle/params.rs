//! Reading a few named parameters from the autopilot: the MAVLink parameter protocol
//! (`PARAM_REQUEST_READ` → `PARAM_VALUE`), sans-IO.
//!
//! Only names given at construction are asked for or kept (the pre-flight check's list; the
//! whitelist allows `PARAM_REQUEST_READ` of those names only). A `PARAM_VALUE` for one of them
//! is taken whenever the autopilot sends it, asked or not: ArduPilot and PX4 broadcast a
//! parameter when any ground station changes it, so a fix made from a GCS is seen at once.
//!
//! Values are decoded as the firmware encodes them: ArduPilot casts integers to the float
//! field (`MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_C_CAST`), PX4 copies their bytes into it
//! (`PARAM_ENCODE_BYTEWISE`).
//!
//! Call order: `start(now, kind, system, component)` when the autopilot is found (again on
//! `refresh`); `handle_message(now, header, msg)` for every message; `poll_transmit(now)` until
//! `None`; wake at `poll_timeout()`. Requests go out a few at a time, each retried after
//! [`RETRY_AFTER`] up to [`ATTEMPTS_MAX`] times; a name never answered is reported missing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::link::dialect::{MavParamType, PARAM_REQUEST_READ_DATA};
use crate::link::{MavHeader, MavMessage};

use super::snapshot::AutopilotKind;

/// Requests outstanding at once (a radio link is narrow).
pub const IN_FLIGHT_MAX: usize = 4;
/// An unanswered request is sent again after this.
pub const RETRY_AFTER: Duration = Duration::from_millis(1500);
/// Sends of one name before it is given up as missing.
pub const ATTEMPTS_MAX: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Value {
    value: f64,
    at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Asked {
    name: &'static str,
    attempts: u8,
    sent_at: Instant,
}

/// The autopilot's answer so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// No autopilot to ask yet.
    NotStarted,
    /// Some names are still being asked for.
    Reading,
    /// Every name was answered or given up.
    Done,
}

/// Reads and keeps a fixed set of parameters. See the module doc.
#[derive(Debug)]
pub struct ParamReader {
    names_for: fn(AutopilotKind) -> &'static [&'static str],
    names: &'static [&'static str],
    kind: Option<AutopilotKind>,
    target: Option<(u8, u8)>,
    values: Vec<(&'static str, Value)>,
    queue: VecDeque<&'static str>,
    in_flight: Vec<Asked>,
    missing: Vec<&'static str>,
    started: bool,
    /// Bumped whenever a value changes, so readers can tell.
    generation: u64,
}

impl ParamReader {
    /// `names_for` gives the names to read from each kind of autopilot.
    pub fn new(names_for: fn(AutopilotKind) -> &'static [&'static str]) -> ParamReader {
        ParamReader {
            names_for,
            names: &[],
            kind: None,
            target: None,
            values: Vec::new(),
            queue: VecDeque::new(),
            in_flight: Vec::new(),
            missing: Vec::new(),
            started: false,
            generation: 0,
        }
    }

    /// Reads every name from this autopilot (a different autopilot forgets the old values).
    pub fn start(&mut self, now: Instant, kind: AutopilotKind, system: u8, component: u8) {
        if self.kind != Some(kind) || self.target != Some((system, component)) {
            self.values.clear();
            self.generation += 1;
        }
        self.kind = Some(kind);
        self.target = Some((system, component));
        self.names = (self.names_for)(kind);
        self.started = true;
        self.refresh(now);
    }

    /// Asks for every name again; the values read so far stand until the answers come.
    pub fn refresh(&mut self, _now: Instant) {
        if !self.started {
            return;
        }
        self.queue = self.names.iter().copied().collect();
        self.in_flight.clear();
        self.missing.clear();
    }

    /// Forgets the autopilot (link lost or a different one appeared).
    pub fn stop(&mut self) {
        self.started = false;
        self.queue.clear();
        self.in_flight.clear();
    }

    /// Takes `PARAM_VALUE`s of the wanted names from the autopilot; ignores everything else.
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
        let Ok(id) = p.param_id.to_str() else {
            return;
        };
        let Some(name) = self.names.iter().copied().find(|n| *n == id) else {
            return;
        };
        let Some(value) = decode(self.kind, p.param_type, p.param_value) else {
            return;
        };
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                if v.value != value {
                    self.generation += 1;
                }
                *v = Value { value, at: now };
            }
            None => {
                self.values.push((name, Value { value, at: now }));
                self.generation += 1;
            }
        }
        self.in_flight.retain(|a| a.name != name);
        self.queue.retain(|n| *n != name);
        self.missing.retain(|n| *n != name);
    }

    /// The next `PARAM_REQUEST_READ` to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<MavMessage> {
        let (system, component) = self.target?;
        if !self.started {
            return None;
        }
        // Give up or retry the ones that went unanswered.
        let mut retry = None;
        let mut index = 0;
        while index < self.in_flight.len() {
            let asked = self.in_flight[index];
            if now < asked.sent_at + RETRY_AFTER {
                index += 1;
                continue;
            }
            if asked.attempts >= ATTEMPTS_MAX {
                self.in_flight.remove(index);
                if !self.missing.contains(&asked.name) {
                    self.missing.push(asked.name);
                }
                continue;
            }
            if retry.is_none() {
                retry = Some(index);
            }
            index += 1;
        }
        let name = if let Some(index) = retry {
            let asked = &mut self.in_flight[index];
            asked.attempts += 1;
            asked.sent_at = now;
            asked.name
        } else if self.in_flight.len() < IN_FLIGHT_MAX {
            let name = self.queue.pop_front()?;
            self.in_flight.push(Asked {
                name,
                attempts: 1,
                sent_at: now,
            });
            name
        } else {
            return None;
        };
        Some(MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
            param_index: -1,
            target_system: system,
            target_component: component,
            param_id: name.into(),
        }))
    }

    /// When an unanswered request is due again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.iter().map(|a| a.sent_at + RETRY_AFTER).min()
    }

    /// The value of `name`, if read (firmware units).
    pub fn value(&self, name: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.value)
    }

    /// When the oldest value was read.
    pub fn oldest_at(&self) -> Option<Instant> {
        self.values.iter().map(|(_, v)| v.at).min()
    }

    pub fn state(&self) -> ReadState {
        if !self.started && self.values.is_empty() {
            ReadState::NotStarted
        } else if self.queue.is_empty() && self.in_flight.is_empty() {
            ReadState::Done
        } else {
            ReadState::Reading
        }
    }

    /// Names asked for and given up on.
    pub fn missing(&self) -> &[&'static str] {
        &self.missing
    }

    /// Names to read from this autopilot, and how many have a value.
    pub fn expected(&self) -> usize {
        self.names.len()
    }

    pub fn read_count(&self) -> usize {
        self.values.len()
    }

    /// The autopilot the values came from.
    pub fn autopilot(&self) -> Option<AutopilotKind> {
        self.kind
    }

    /// Changes whenever a value changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A value as `PARAM_SET`'s float field carries it for this firmware: PX4 copies an
/// integer's bytes into it (`PARAM_ENCODE_BYTEWISE`), ArduPilot casts (`C_CAST`). The value
/// must already fit the type (`ParamTable::set` checks).
pub(crate) fn encode(kind: Option<AutopilotKind>, kind_of_value: MavParamType, value: f64) -> f32 {
    use MavParamType as T;
    if kind != Some(AutopilotKind::Px4) {
        return value as f32;
    }
    match kind_of_value {
        T::MAV_PARAM_TYPE_UINT8 => f32::from_bits(u32::from(value as u8)),
        T::MAV_PARAM_TYPE_INT8 => f32::from_bits(value as i8 as u8 as u32),
        T::MAV_PARAM_TYPE_UINT16 => f32::from_bits(u32::from(value as u16)),
        T::MAV_PARAM_TYPE_INT16 => f32::from_bits(value as i16 as u16 as u32),
        T::MAV_PARAM_TYPE_UINT32 => f32::from_bits(value as u32),
        T::MAV_PARAM_TYPE_INT32 => f32::from_bits(value as i32 as u32),
        _ => value as f32,
    }
}

/// A `PARAM_VALUE` as a number: PX4 copies integers bytewise into the float, ArduPilot casts.
pub(crate) fn decode(
    kind: Option<AutopilotKind>,
    kind_of_value: MavParamType,
    wire: f32,
) -> Option<f64> {
    use MavParamType as T;
    let integer = matches!(
        kind_of_value,
        T::MAV_PARAM_TYPE_UINT8
            | T::MAV_PARAM_TYPE_INT8
            | T::MAV_PARAM_TYPE_UINT16
            | T::MAV_PARAM_TYPE_INT16
            | T::MAV_PARAM_TYPE_UINT32
            | T::MAV_PARAM_TYPE_INT32
    );
    let value = if kind == Some(AutopilotKind::Px4) && integer {
        let bits = wire.to_bits();
        match kind_of_value {
            T::MAV_PARAM_TYPE_UINT8 => f64::from(bits as u8),
            T::MAV_PARAM_TYPE_INT8 => f64::from(bits as u8 as i8),
            T::MAV_PARAM_TYPE_UINT16 => f64::from(bits as u16),
            T::MAV_PARAM_TYPE_INT16 => f64::from(bits as u16 as i16),
            T::MAV_PARAM_TYPE_UINT32 => f64::from(bits),
            _ => f64::from(bits as i32),
        }
    } else {
        f64::from(wire)
    };
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::dialect::PARAM_VALUE_DATA;

    const NAMES: &[&str] = &["WPNAV_SPEED", "RTL_ALT", "COM_LOW_BAT_ACT"];

    fn names(_: AutopilotKind) -> &'static [&'static str] {
        NAMES
    }

    fn from_autopilot() -> MavHeader {
        MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: 0,
        }
    }

    fn value(name: &str, value: f32, kind: MavParamType) -> MavMessage {
        MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
            param_value: value,
            param_count: 900,
            param_index: 3,
            param_id: name.into(),
            param_type: kind,
        })
    }

    fn drain(r: &mut ParamReader, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| r.poll_transmit(now))
            .map(|m| match m {
                MavMessage::PARAM_REQUEST_READ(p) => {
                    assert_eq!(
                        (p.target_system, p.target_component, p.param_index),
                        (1, 1, -1)
                    );
                    p.param_id.to_str().unwrap().to_owned()
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn reads_each_name_retries_and_gives_up_on_silence() {
        let t0 = Instant::now();
        let mut r = ParamReader::new(names);
        assert_eq!(r.state(), ReadState::NotStarted);
        assert!(r.poll_transmit(t0).is_none());
        r.start(t0, AutopilotKind::Ardupilot, 1, 1);
        assert_eq!(drain(&mut r, t0), NAMES);
        assert_eq!(r.state(), ReadState::Reading);
        r.handle_message(
            t0,
            &from_autopilot(),
            &value("WPNAV_SPEED", 1000.0, MavParamType::MAV_PARAM_TYPE_REAL32),
        );
        r.handle_message(
            t0,
            &from_autopilot(),
            &value("RTL_ALT", 1500.0, MavParamType::MAV_PARAM_TYPE_INT32),
        );
        assert_eq!(r.value("WPNAV_SPEED"), Some(1000.0));
        assert_eq!(r.value("RTL_ALT"), Some(1500.0));
        // The third is asked again, twice, then given up.
        assert!(drain(&mut r, t0 + Duration::from_millis(100)).is_empty());
        let mut t = t0;
        let mut resent = 0;
        for _ in 0..4 {
            t += RETRY_AFTER;
            resent += drain(&mut r, t).len();
        }
        assert_eq!(resent, 2);
        assert_eq!(r.state(), ReadState::Done);
        assert_eq!(r.missing(), ["COM_LOW_BAT_ACT"]);
        // Someone else's value, another name, another sender: ignored.
        let gcs = MavHeader {
            system_id: 255,
            ..from_autopilot()
        };
        r.handle_message(
            t,
            &gcs,
            &value("RTL_ALT", 1.0, MavParamType::MAV_PARAM_TYPE_INT32),
        );
        r.handle_message(
            t,
            &from_autopilot(),
            &value("SERIAL0_BAUD", 57.0, MavParamType::MAV_PARAM_TYPE_INT32),
        );
        assert_eq!(r.value("RTL_ALT"), Some(1500.0));
        assert_eq!(r.value("SERIAL0_BAUD"), None);
        // A broadcast change is taken unasked.
        let generation = r.generation();
        r.handle_message(
            t,
            &from_autopilot(),
            &value("RTL_ALT", 3000.0, MavParamType::MAV_PARAM_TYPE_INT32),
        );
        assert_eq!(r.value("RTL_ALT"), Some(3000.0));
        assert!(r.generation() > generation);
    }

    #[test]
    fn px4_integers_are_bytewise_and_ardupilot_integers_are_cast() {
        let t0 = Instant::now();
        let mut r = ParamReader::new(names);
        r.start(t0, AutopilotKind::Px4, 1, 1);
        r.handle_message(
            t0,
            &from_autopilot(),
            &value(
                "COM_LOW_BAT_ACT",
                f32::from_bits(3),
                MavParamType::MAV_PARAM_TYPE_INT32,
            ),
        );
        assert_eq!(r.value("COM_LOW_BAT_ACT"), Some(3.0));
        r.handle_message(
            t0,
            &from_autopilot(),
            &value(
                "RTL_ALT",
                f32::from_bits(-2i32 as u32),
                MavParamType::MAV_PARAM_TYPE_INT32,
            ),
        );
        assert_eq!(r.value("RTL_ALT"), Some(-2.0));
        let mut r = ParamReader::new(names);
        r.start(t0, AutopilotKind::Ardupilot, 1, 1);
        r.handle_message(
            t0,
            &from_autopilot(),
            &value("RTL_ALT", 1500.0, MavParamType::MAV_PARAM_TYPE_INT32),
        );
        assert_eq!(r.value("RTL_ALT"), Some(1500.0));
        // A NaN is not a value.
        r.handle_message(
            t0,
            &from_autopilot(),
            &value("WPNAV_SPEED", f32::NAN, MavParamType::MAV_PARAM_TYPE_REAL32),
        );
        assert_eq!(r.value("WPNAV_SPEED"), None);
        // A different autopilot forgets the old values.
        r.start(t0, AutopilotKind::Px4, 1, 1);
        assert_eq!(r.value("RTL_ALT"), None);
    }
}
