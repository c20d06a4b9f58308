//! The fence mirror's procedure, sans-IO (issue 18): upload a [`FencePlan`] as the
//! autopilot's fence list and fence parameters, read both back and compare; or only read back
//! and compare (the re-check at link-up, which shows a ground station's change).
//!
//! # API
//! `FenceSync::new(MissionOptions)`, `set_target(target)` at link-up (`None` at link loss),
//! `mirror(now, plan)` or `check(now, plan)`; feed every decoded message to
//! `handle_message`, send what `poll_transmit` returns, call it again at `poll_timeout`;
//! `poll_event` gives one [`FenceSyncEvent::Finished`] per run; `status()` is what
//! `get_status` shows.
//!
//! Order of a mirror: the fence list (mission type FENCE; an empty plan clears it), then the
//! parameters one by one, each confirmed by the autopilot's `PARAM_VALUE` (ArduPilot's
//! `FENCE_ENABLE` last, so the fence is on only once what it enforces is in place), then the
//! fence list downloaded and every parameter read again, then [`fence_mirror::compare`].
//! Verified only when nothing differs.
//! A fence parameter the autopilot broadcasts outside a run with a value other than the one
//! last read (a ground station changed it) asks for a re-check (`take_recheck`); a changed
//! fence list is not broadcast by either firmware and is found at the next check.
//!
//! The writes go out only disarmed on the ground (the whitelist's `mission_authority` and
//! `Whitelist::check_fence_mirror`): PX4 drops a new polygon that does not contain the
//! vehicle when it flies with a fence action (`Geofence::checkCurrentPositionRequirementsForGeofence`,
//! `navigator/geofence.cpp`), and ArduPilot's `AC_PolyFence_loader::write_fence` rewrites
//! the stored fence and reloads it, leaving a moment with no polygon loaded; neither is a
//! moment to be in the air.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::link::dialect::{MavParamType, PARAM_REQUEST_READ_DATA, PARAM_SET_DATA};
use crate::link::{MavHeader, MavMessage};
use crate::safety::fence_mirror::{self, FenceCounts, FencePlan};

use super::mission::{
    MavMissionType, MissionEvent, MissionItem, MissionOptions, MissionOutcome, MissionProtocol,
    MissionTarget, Operation,
};

/// Each parameter write or read waits this long for its `PARAM_VALUE` before it is sent again.
const PARAM_TIMEOUT: Duration = Duration::from_millis(1000);
/// Sends of one parameter before the run fails.
const PARAM_ATTEMPTS: u8 = 4;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FenceJob {
    /// Upload, then read back and compare.
    Mirror,
    /// Read back and compare only.
    Check,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum FenceSyncEvent {
    Finished {
        job: FenceJob,
        /// The plan that was uploaded (mirror) or compared against (check).
        plan: FencePlan,
        /// `Some(true)` verified, `Some(false)` read back and different, `None` unknown (the
        /// run failed before the comparison: see `error`).
        matches: Option<bool>,
        differences: Vec<String>,
        error: Option<String>,
    },
}

/// What the status shows of the autopilot's fence.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FenceStatus {
    /// `None` until a read-back was compared (or after a failed one).
    pub matches_envelope: Option<bool>,
    /// When the autopilot's fence was last found equal to the envelope.
    pub verified_at: Option<Instant>,
    /// When it was last compared, equal or not.
    pub checked_at: Option<Instant>,
    pub differences: Vec<String>,
    /// The zones of the fence list last downloaded.
    pub autopilot_zones: Option<FenceCounts>,
    /// The run in progress.
    pub running: Option<FenceJob>,
    /// Why the last run ended without a comparison.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    Uploading,
    Writing { index: usize },
    Downloading,
    Reading { index: usize },
}

/// The procedure; see the module doc.
#[derive(Debug)]
pub struct FenceSync {
    protocol: MissionProtocol,
    target: Option<MissionTarget>,
    stage: Stage,
    job: FenceJob,
    plan: Option<FencePlan>,
    attempts: u8,
    param_deadline: Option<Instant>,
    downloaded: Vec<MissionItem>,
    read: BTreeMap<&'static str, f64>,
    outbox: VecDeque<MavMessage>,
    events: VecDeque<FenceSyncEvent>,
    status: FenceStatus,
    recheck_wanted: bool,
}

/// The wire type of each mirrored parameter: ArduPilot's `AC_Fence` table (`AP_Int8`
/// enable, type and action; floats for the distances), PX4's `geofence_params.c` (INT32
/// action, floats for the distances).
fn param_type(name: &str) -> MavParamType {
    match name {
        "FENCE_ENABLE" | "FENCE_TYPE" | "FENCE_ACTION" => MavParamType::MAV_PARAM_TYPE_INT8,
        "GF_ACTION" => MavParamType::MAV_PARAM_TYPE_INT32,
        _ => MavParamType::MAV_PARAM_TYPE_REAL32,
    }
}

impl FenceSync {
    pub fn new(options: MissionOptions) -> FenceSync {
        FenceSync {
            protocol: MissionProtocol::new(options),
            target: None,
            stage: Stage::Idle,
            job: FenceJob::Check,
            plan: None,
            attempts: 0,
            param_deadline: None,
            downloaded: Vec::new(),
            read: BTreeMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            status: FenceStatus::default(),
            recheck_wanted: false,
        }
    }

    /// The autopilot to talk to; `None` at link loss ends a run (its result unknown).
    pub fn set_target(&mut self, target: Option<MissionTarget>) {
        if target.is_none() && self.stage != Stage::Idle {
            self.protocol.abort(super::mission::AbortReason::LinkLost);
            self.finish(None, Vec::new(), Some("the autopilot link was lost".into()));
        }
        if target.is_none() {
            self.status.matches_envelope = None;
        }
        self.target = target;
    }

    pub fn status(&self) -> &FenceStatus {
        &self.status
    }

    pub fn is_busy(&self) -> bool {
        self.stage != Stage::Idle
    }

    /// Starts uploading `plan`, then verifying it.
    pub fn mirror(&mut self, now: Instant, plan: FencePlan) -> Result<(), String> {
        self.begin(now, FenceJob::Mirror, plan)
    }

    /// Starts reading the autopilot's fence back and comparing it with `plan`.
    pub fn check(&mut self, now: Instant, plan: FencePlan) -> Result<(), String> {
        self.begin(now, FenceJob::Check, plan)
    }

    fn begin(&mut self, now: Instant, job: FenceJob, plan: FencePlan) -> Result<(), String> {
        if self.is_busy() {
            return Err(format!(
                "a fence {} is already running; wait for it to finish",
                match self.job {
                    FenceJob::Mirror => "mirror",
                    FenceJob::Check => "check",
                }
            ));
        }
        let Some(target) = self.target else {
            return Err("no autopilot is connected".into());
        };
        let operation = match job {
            FenceJob::Check => Operation::Download,
            FenceJob::Mirror if plan.items.is_empty() => Operation::Clear,
            FenceJob::Mirror => Operation::Upload {
                items: plan.items.clone(),
                home: None,
            },
        };
        self.protocol
            .start(
                now,
                target,
                MavMissionType::MAV_MISSION_TYPE_FENCE,
                operation,
            )
            .map_err(|e| e.to_string())?;
        self.stage = match job {
            FenceJob::Mirror => Stage::Uploading,
            FenceJob::Check => Stage::Downloading,
        };
        self.job = job;
        self.plan = Some(plan);
        self.downloaded.clear();
        self.read.clear();
        self.status.running = Some(job);
        Ok(())
    }

    pub fn handle_message(&mut self, now: Instant, header: &MavHeader, msg: &MavMessage) {
        self.protocol.handle_message(now, header, msg);
        self.drain_protocol(now);
        let MavMessage::PARAM_VALUE(v) = msg else {
            return;
        };
        if self.stage == Stage::Idle {
            self.note_change(header, v);
            return;
        }
        let (Some(target), Some(plan)) = (self.target, &self.plan) else {
            return;
        };
        if header.system_id != u32::from(target.system) {
            return;
        }
        let index = match self.stage {
            Stage::Writing { index } | Stage::Reading { index } => index,
            _ => return,
        };
        let Some(param) = plan.params.get(index) else {
            return;
        };
        let name = v.param_id.to_str().unwrap_or("").trim_end_matches('\0');
        if name != param.name {
            return;
        }
        let Some(value) =
            super::params::decode(Some(target.autopilot), v.param_type, v.param_value)
        else {
            return;
        };
        // A write the autopilot clamped or refused echoes the value it kept; the comparison
        // names it. Reads are taken as they come.
        self.read.insert(param.name, value);
        self.attempts = 0;
        self.param_deadline = None;
        let next = index + 1;
        self.stage = match (self.stage, next < plan.params.len()) {
            (Stage::Writing { .. }, true) => Stage::Writing { index: next },
            (Stage::Writing { .. }, false) => {
                self.read.clear();
                if let Err(e) = self.protocol.start(
                    now,
                    target,
                    MavMissionType::MAV_MISSION_TYPE_FENCE,
                    Operation::Download,
                ) {
                    self.finish(None, Vec::new(), Some(e.to_string()));
                    return;
                }
                Stage::Downloading
            }
            (Stage::Reading { .. }, true) => Stage::Reading { index: next },
            _ => {
                self.compare(now);
                return;
            }
        };
        self.send_param(now);
    }

    /// A fence parameter the autopilot broadcast outside a run (a ground station wrote it):
    /// a re-check is wanted when it differs from what was last read.
    fn note_change(&mut self, header: &MavHeader, v: &crate::link::dialect::PARAM_VALUE_DATA) {
        let Some(target) = self.target else {
            return;
        };
        if header.system_id != u32::from(target.system) {
            return;
        }
        let name = v.param_id.to_str().unwrap_or("").trim_end_matches('\0');
        let Some(known) = fence_mirror::MIRROR_PARAMS.iter().find(|n| **n == name) else {
            return;
        };
        let value = super::params::decode(Some(target.autopilot), v.param_type, v.param_value);
        if value.is_some() && value != self.read.get(known).copied() {
            self.recheck_wanted = true;
        }
    }

    /// True once after a fence parameter changed outside a run.
    pub fn take_recheck(&mut self) -> bool {
        std::mem::take(&mut self.recheck_wanted)
    }

    fn drain_protocol(&mut self, now: Instant) {
        while let Some(event) = self.protocol.poll_event() {
            let MissionEvent::Finished { outcome, .. } = event else {
                continue;
            };
            match (self.stage, outcome) {
                (
                    Stage::Uploading,
                    MissionOutcome::Uploaded { .. }
                    | MissionOutcome::Cleared
                    | MissionOutcome::Unconfirmed { .. },
                ) => {
                    self.stage = Stage::Writing { index: 0 };
                    self.start_params(now);
                }
                (Stage::Downloading, MissionOutcome::Downloaded { items, .. }) => {
                    self.downloaded = items;
                    self.status.autopilot_zones = Some(fence_mirror::counts(&self.downloaded));
                    self.stage = Stage::Reading { index: 0 };
                    self.start_params(now);
                }
                (Stage::Uploading | Stage::Downloading, outcome) => {
                    let what = if self.stage == Stage::Uploading {
                        "upload"
                    } else {
                        "download"
                    };
                    let why = outcome.describe(MavMissionType::MAV_MISSION_TYPE_FENCE);
                    self.finish(
                        None,
                        Vec::new(),
                        Some(format!("fence {what} failed: {why}")),
                    );
                }
                _ => {}
            }
        }
    }

    fn start_params(&mut self, now: Instant) {
        if self.plan.as_ref().is_some_and(|p| p.params.is_empty()) {
            self.compare(now);
            return;
        }
        self.attempts = 0;
        self.send_param(now);
    }

    fn send_param(&mut self, now: Instant) {
        let (Some(target), Some(plan)) = (self.target, &self.plan) else {
            return;
        };
        let (index, write) = match self.stage {
            Stage::Writing { index } => (index, true),
            Stage::Reading { index } => (index, false),
            _ => return,
        };
        let Some(param) = plan.params.get(index) else {
            return;
        };
        let kind = param_type(param.name);
        let message = if write {
            MavMessage::PARAM_SET(PARAM_SET_DATA {
                param_value: super::params::encode(Some(target.autopilot), kind, param.value),
                target_system: target.system,
                target_component: target.component,
                param_id: param.name.into(),
                param_type: kind,
            })
        } else {
            MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
                param_index: -1,
                target_system: target.system,
                target_component: target.component,
                param_id: param.name.into(),
            })
        };
        self.attempts += 1;
        self.param_deadline = Some(now + PARAM_TIMEOUT);
        self.outbox.push_back(message);
    }

    /// The next message to send; also runs the timeouts that are due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<MavMessage> {
        if let Some(message) = self.outbox.pop_front() {
            return Some(message);
        }
        if let Some(message) = self.protocol.poll_transmit(now) {
            self.drain_protocol(now);
            return Some(message);
        }
        self.drain_protocol(now);
        if self.param_deadline.is_some_and(|at| now >= at) {
            if self.attempts >= PARAM_ATTEMPTS {
                let name = match (self.stage, &self.plan) {
                    (Stage::Writing { index } | Stage::Reading { index }, Some(plan)) => {
                        plan.params.get(index).map_or("?", |p| p.name)
                    }
                    _ => "?",
                };
                self.param_deadline = None;
                self.finish(
                    None,
                    Vec::new(),
                    Some(format!(
                        "the autopilot did not answer for {name} after {PARAM_ATTEMPTS} attempts"
                    )),
                );
                return None;
            }
            self.send_param(now);
        }
        self.outbox.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.protocol.poll_timeout(), self.param_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_event(&mut self) -> Option<FenceSyncEvent> {
        self.events.pop_front()
    }

    fn compare(&mut self, now: Instant) {
        let Some(plan) = &self.plan else {
            return;
        };
        let read = &self.read;
        let differences =
            fence_mirror::compare(plan, &self.downloaded, &|name| read.get(name).copied());
        self.status.checked_at = Some(now);
        if differences.is_empty() {
            self.status.verified_at = Some(now);
        }
        let matches = differences.is_empty();
        self.finish(Some(matches), differences, None);
    }

    fn finish(&mut self, matches: Option<bool>, differences: Vec<String>, error: Option<String>) {
        self.stage = Stage::Idle;
        self.param_deadline = None;
        self.outbox.clear();
        self.status.running = None;
        self.status.matches_envelope = matches;
        self.status.differences = differences.clone();
        self.status.error = error.clone();
        let Some(plan) = self.plan.take() else {
            return;
        };
        self.events.push_back(FenceSyncEvent::Finished {
            job: self.job,
            plan,
            matches,
            differences,
            error,
        });
    }
}

#[cfg(test)]
mod tests;
