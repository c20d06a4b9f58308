//! The supervisor's part of the fence mirror (issue 18): when to check and mirror the
//! autopilot's fence, and the one path its messages leave by (`Path::FenceMirror`,
//! `Whitelist::check_fence_mirror`).

use std::time::{Duration, Instant};

use super::Supervisor;
use crate::link::MavMessage;
use crate::safety::fence_mirror::{self, FencePlan};
use crate::vehicle::fence_sync::{FenceJob, FenceStatus, FenceSyncEvent};
use crate::vehicle::mission::{MissionOptions, MissionTarget};
use crate::vehicle::snapshot::AutopilotKind;

/// The mission protocol's timing for the fence list: the command protocol's, with at least
/// 1.5 s per item (as `MissionOptions::from_config`).
pub(super) fn mission_options(options: &super::SupervisorOptions) -> MissionOptions {
    MissionOptions {
        item_timeout: options.command_ack_timeout.max(Duration::from_millis(1500)),
        retries_max: options.command_retries_max.max(3),
        source_system: options.system_id,
        source_component: options.component_id,
    }
}

impl Supervisor {
    /// At link-up: the autopilot to mirror into, and a check of its fence due.
    pub(super) fn fence_link_up(&mut self, system: u8, component: u8, kind: AutopilotKind) {
        self.fence.set_target(Some(MissionTarget {
            system,
            component,
            autopilot: kind,
        }));
        // The daemon checks; `probe` (which downloads no parameter table either) only looks.
        self.fence_check_due = self.options.download_parameters
            && matches!(kind, AutopilotKind::Ardupilot | AutopilotKind::Px4);
    }

    /// The fence the envelope in force makes for the connected autopilot.
    pub fn fence_plan(&self) -> Result<FencePlan, String> {
        let config = self
            .envelope
            .as_ref()
            .map_or(&self.options.envelope, |e| e.config());
        let Some(kind) = self.vehicle.autopilot().map(|a| a.autopilot) else {
            return Err("no autopilot is connected".into());
        };
        fence_mirror::plan(config, kind, self.options.envelope.mirror_fence_action)
    }

    /// Starts mirroring the envelope into the autopilot's fence (ADMIN's `mirror_fence`):
    /// refused unless disarmed on the ground, with the reason. The outcome comes as a
    /// [`FenceSyncEvent`] (`poll_fence_event`).
    pub fn mirror_fence(&mut self, now: Instant) -> Result<FencePlan, String> {
        let view = self.vehicle.view(now);
        if view.armed || !view.landed.on_ground() {
            return Err(
                "the autopilot's fence is written only disarmed on the ground: \
                 PX4 drops a polygon that does not contain the flying vehicle and ArduPilot \
                 reloads its fence while it is written; land and disarm first"
                    .into(),
            );
        }
        let plan = self.fence_plan()?;
        self.fence.mirror(now, plan.clone())?;
        self.fence_check_due = false;
        Ok(plan)
    }

    /// Starts reading the autopilot's fence back and comparing it with the envelope.
    pub fn check_fence(&mut self, now: Instant) -> Result<(), String> {
        let plan = self.fence_plan()?;
        self.fence.check(now, plan)
    }

    /// `[envelope] mirror_to_autopilot`.
    pub fn mirrors_to_autopilot(&self) -> bool {
        self.options.envelope.mirror_to_autopilot
    }

    /// What the status shows of the autopilot's fence.
    pub fn fence_status(&self) -> &FenceStatus {
        self.fence.status()
    }

    /// The end of a mirror or a check, for the audit and the tool's answer. A check that
    /// found a difference starts a mirror when `[envelope] mirror_to_autopilot` is set and the
    /// vehicle is disarmed on the ground.
    pub fn poll_fence_event(&mut self) -> Option<FenceSyncEvent> {
        let event = self.fence.poll_event()?;
        let FenceSyncEvent::Finished { job, matches, .. } = &event;
        if *job == FenceJob::Check
            && *matches == Some(false)
            && self.options.envelope.mirror_to_autopilot
        {
            self.fence_mirror_due = true;
        }
        Some(event)
    }

    /// The fence mirror's next message; starts the check due at link-up once the pre-flight
    /// parameters are read.
    pub(super) fn next_fence_message(&mut self, now: Instant) -> Option<MavMessage> {
        if self.link_down.is_some() {
            return None;
        }
        if self.fence_mirror_due && !self.fence.is_busy() {
            self.fence_mirror_due = false;
            // Refused in the air: the status keeps showing the mismatch.
            let _ = self.mirror_fence(now);
        }
        if self.fence.take_recheck() {
            self.fence_check_due = true;
        }
        if self.fence_check_due
            && !self.fence.is_busy()
            && self.params.state() != crate::vehicle::params::ReadState::Reading
        {
            self.fence_check_due = false;
            // Refused only without an autopilot kind to plan for: the status stays unknown.
            let _ = self.check_fence(now);
        }
        self.fence.poll_transmit(now)
    }

    pub(super) fn fence_poll_timeout(&self) -> Option<Instant> {
        self.fence.poll_timeout()
    }
}
