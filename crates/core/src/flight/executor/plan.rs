//! Planning: an [`Action`] turned into the steps for this autopilot, or a [`Refusal`] that
//! says why it cannot be done, before anything is sent (sans-IO).
//!
//! [`Executor::plan`] checks what every action needs (an autopilot it knows, heard now) and
//! hands the action to one function per family; each one checks the vehicle's state and
//! writes the steps in each firmware's terms (see the executor's module doc for PX4's
//! frames).

use std::time::Instant;

use crate::link::MavMessage;
use crate::link::dialect::{
    MavCmd, MavFrame, PositionTargetTypemask, SET_POSITION_TARGET_GLOBAL_INT_DATA,
};
use crate::refusal::{Refusal, RefusalKind};
use crate::vehicle::command::CommandRequest;
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;
use crate::vehicle::state::{Position, VehicleState};

use super::super::action::{Action, Goal};
use super::{Condition, Executor, Plan, Step, degrees_e7, geo, reposition, stationary_goal};

/// The vehicle as one plan sees it.
struct Planning<'a> {
    now: Instant,
    action: Action,
    vehicle: &'a VehicleState,
    kind: AutopilotKind,
    armed: bool,
    in_air: bool,
}

fn state(message: impl Into<String>) -> Refusal {
    Refusal::new(RefusalKind::VehicleState, message)
}

impl<'a> Planning<'a> {
    /// What every action needs: an autopilot the daemon knows the modes of, heard now.
    fn new(now: Instant, action: Action, vehicle: &'a VehicleState) -> Result<Self, Refusal> {
        let Some(autopilot) = vehicle.autopilot() else {
            return Err(Refusal::new(
                RefusalKind::NoAutopilot,
                "no autopilot has been heard yet; nothing can be commanded",
            ));
        };
        if vehicle.heartbeat_lost(now) {
            return Err(Refusal::new(
                RefusalKind::NoAutopilot,
                "the autopilot's heartbeat is lost; nothing can be commanded until it is back",
            ));
        }
        let kind = autopilot.autopilot;
        if kind == AutopilotKind::Other {
            return Err(Refusal::new(
                RefusalKind::UnsupportedAutopilot,
                "this autopilot is neither ArduPilot nor PX4; the daemon does not know its modes",
            ));
        }
        Ok(Planning {
            now,
            action,
            vehicle,
            kind,
            armed: vehicle.is_armed(),
            in_air: vehicle.in_air(),
        })
    }

    fn altitude_now(&self) -> Option<f64> {
        self.vehicle.position().map(|p| p.altitude_relative_m)
    }

    /// The trusted position the action starts from.
    fn needs_position(&self) -> Result<Position, Refusal> {
        if !self.vehicle.position_valid(self.now) {
            return Err(Refusal::new(
                RefusalKind::Position,
                format!(
                    "{} needs a trusted position and the autopilot does not report one \
                     (GPS fix or estimator not good); hold, land or return_home are still possible",
                    self.action.name()
                ),
            ));
        }
        self.vehicle
            .position()
            .copied()
            .ok_or_else(|| Refusal::new(RefusalKind::Position, "no position has been reported yet"))
    }

    /// Armed and in the air, or the refusal that says to take off first.
    fn flying(&self) -> Result<(), Refusal> {
        if self.armed && self.in_air {
            return Ok(());
        }
        Err(state(format!(
            "{} needs the vehicle in the air and it is on the ground{}; take off first",
            self.action.name(),
            if self.armed { "" } else { " and disarmed" }
        )))
    }

    /// PX4 reads `DO_REPOSITION`'s altitude above mean sea level whatever the frame says:
    /// home's altitude, or a refusal to wait for it; nothing for ArduPilot.
    fn home_msl_m(&self) -> Result<Option<f64>, Refusal> {
        match self.kind {
            AutopilotKind::Px4 => self
                .vehicle
                .home()
                .map(|h| Some(h.altitude_msl_m))
                .ok_or_else(|| {
                    state(format!(
                        "the autopilot has not reported its home position yet; PX4 takes {}'s \
                         altitude above sea level, so wait for it",
                        self.action.name()
                    ))
                }),
            _ => Ok(None),
        }
    }

    fn plan(&self, goal: Option<Goal>, steps: Vec<Step>, modes_expected: Vec<FlightMode>) -> Plan {
        Plan {
            action: self.action,
            goal,
            steps,
            modes_expected,
        }
    }

    fn hold_mode(&self) -> FlightMode {
        match self.kind {
            AutopilotKind::Px4 => FlightMode::Loiter,
            _ => FlightMode::Brake,
        }
    }

    fn arm(&self) -> Result<Plan, Refusal> {
        if self.armed {
            return Err(state("the vehicle is already armed"));
        }
        Ok(self.plan(None, vec![Step::Arm], vec![]))
    }

    fn disarm(&self) -> Result<Plan, Refusal> {
        if self.in_air {
            return Err(state(format!(
                "refused: the vehicle is flying{}; disarming in the air stops the motors \
                 and it falls. Use land or return_home; it disarms by itself on the ground",
                self.altitude_now()
                    .map_or(String::new(), |a| format!(" at {a:.1} m above home"))
            )));
        }
        if !self.armed {
            return Err(state("the vehicle is already disarmed"));
        }
        Ok(self.plan(None, vec![Step::Disarm], vec![]))
    }

    fn takeoff(&self, altitude_m: f64) -> Result<Plan, Refusal> {
        if self.armed && self.in_air {
            return Err(state(format!(
                "the vehicle is already flying{}; use goto or move_relative to change altitude",
                self.altitude_now()
                    .map_or(String::new(), |a| format!(" at {a:.1} m"))
            )));
        }
        let here = self.needs_position()?;
        let goal = Goal {
            from_latitude_deg: here.latitude_deg,
            from_longitude_deg: here.longitude_deg,
            from_altitude_m: here.altitude_relative_m,
            to_latitude_deg: here.latitude_deg,
            to_longitude_deg: here.longitude_deg,
            to_altitude_m: altitude_m,
            speed_m_s: None,
        };
        let until = Step::Until(Condition::Altitude { altitude_m });
        if self.kind != AutopilotKind::Px4 {
            let takeoff = Step::Command(CommandRequest::Long {
                command: MavCmd::MAV_CMD_NAV_TAKEOFF,
                params: [0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0, altitude_m as f32],
            });
            return Ok(self.plan(
                Some(goal),
                vec![Step::Mode(FlightMode::Guided), Step::Arm, takeoff, until],
                vec![FlightMode::Guided],
            ));
        }
        // PX4 takes the takeoff altitude above mean sea level.
        let Some(home) = self.vehicle.home() else {
            return Err(state(
                "the autopilot has not reported its home position yet; PX4 takes off to an \
                 altitude above sea level, so wait for it",
            ));
        };
        let amsl = home.altitude_msl_m + altitude_m;
        let takeoff = Step::Command(CommandRequest::Long {
            command: MavCmd::MAV_CMD_NAV_TAKEOFF,
            params: [-1.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, amsl as f32],
        });
        Ok(self.plan(
            Some(goal),
            vec![Step::Arm, takeoff, until],
            vec![FlightMode::Takeoff, FlightMode::Loiter],
        ))
    }

    fn land(&self) -> Result<Plan, Refusal> {
        if !self.armed && !self.in_air {
            return Err(state("the vehicle is already on the ground and disarmed"));
        }
        Ok(self.plan(
            None,
            vec![
                Step::Mode(FlightMode::Land),
                Step::Until(Condition::LandedDisarmed { home: None }),
            ],
            vec![FlightMode::Land],
        ))
    }
}

impl Executor {
    /// Turns `action` into a plan for this vehicle as it is now, or says why it cannot be
    /// done (before anything is sent).
    pub fn plan(
        &self,
        now: Instant,
        action: Action,
        vehicle: &VehicleState,
    ) -> Result<Plan, Refusal> {
        action
            .validate()
            .map_err(|e| Refusal::new(RefusalKind::InvalidArgument, e))?;
        let p = Planning::new(now, action, vehicle)?;
        match action {
            Action::Arm => p.arm(),
            Action::Disarm => p.disarm(),
            Action::Takeoff { altitude_m } => p.takeoff(altitude_m),
            Action::Goto {
                latitude_deg,
                longitude_deg,
                altitude_m,
                speed_m_s,
            } => {
                p.flying()?;
                let here = p.needs_position()?;
                let home = p.home_msl_m()?;
                let target = (latitude_deg, longitude_deg, altitude_m);
                Ok(self.reposition_plan(&p, &here, home, target, speed_m_s))
            }
            Action::MoveRelative {
                forward_m,
                right_m,
                up_m,
            } => self.move_relative(&p, forward_m, right_m, up_m),
            Action::SetHeading { heading_deg } => self.set_heading(&p, heading_deg),
            Action::SetSpeed { speed_m_s } => Ok(p.plan(
                Some(Goal {
                    speed_m_s: Some(speed_m_s),
                    ..stationary_goal(vehicle)
                }),
                vec![Step::SetSpeed(speed_m_s)],
                vec![],
            )),
            Action::Hold | Action::PauseMission => {
                Ok(p.plan(None, vec![Step::Mode(p.hold_mode())], vec![]))
            }
            Action::Land => p.land(),
            Action::ReturnHome => self.return_home(&p),
            Action::RunMission { .. } => self.run_mission(&p),
        }
    }

    /// AUTO (ArduCopter) / AUTO.MISSION (PX4) until the mission's end. In the air only:
    /// ArduCopter refuses AUTO armed on the ground without a takeoff item ("Auto: Missing
    /// Takeoff Cmd"), and the daemon's takeoff is the checked way up. The modes the mission
    /// itself switches to are expected: PX4's AUTO.RTL for a return item and AUTO.LOITER at
    /// the end (`navigator/mission.cpp`); ArduCopter stays in AUTO for both.
    fn run_mission(&self, p: &Planning<'_>) -> Result<Plan, Refusal> {
        p.flying()?;
        if self.mission().is_none() {
            return Err(state(format!(
                "{}: no mission has been downloaded and checked against the envelope; \
                 upload one with upload_mission, or check the autopilot's with get_mission",
                p.action.name()
            )));
        }
        let mut expected = vec![FlightMode::Auto];
        if p.kind == AutopilotKind::Px4 {
            expected.extend([FlightMode::Rtl, FlightMode::Loiter, FlightMode::Land]);
        }
        // AUTO flies at the autopilot's own speed (ArduCopter WPNAV_SPEED) until an item
        // says otherwise: the keeper says the first leg's speed, or the daemon's, once AUTO
        // is confirmed (and again on a mode change), never above the envelope's limit. The
        // mission's own speed items, checked against the limit, take over from there.
        let first_leg = self
            .mission()
            .and_then(|(route, _)| route.points.first().and_then(|p| p.speed_m_s));
        let mut steps = vec![Step::Mode(FlightMode::Auto)];
        steps.extend(self.motion_speed_m_s(first_leg).map(Step::KeepSpeed));
        steps.push(Step::Until(Condition::MissionDone));
        Ok(p.plan(None, steps, expected))
    }

    fn move_relative(
        &self,
        p: &Planning<'_>,
        forward_m: f64,
        right_m: f64,
        up_m: f64,
    ) -> Result<Plan, Refusal> {
        p.flying()?;
        let here = p.needs_position()?;
        let Some(heading_deg) = p.vehicle.heading_deg() else {
            return Err(state(
                "the vehicle has not reported its heading; move_relative needs it to tell \
                 forward from right. Use goto instead",
            ));
        };
        let (north_m, east_m) = geo::body_to_north_east(forward_m, right_m, heading_deg);
        let (latitude_deg, longitude_deg) =
            geo::offset_deg(here.latitude_deg, here.longitude_deg, north_m, east_m);
        let altitude_m = here.altitude_relative_m + up_m;
        let home = p.home_msl_m()?;
        Ok(self.reposition_plan(
            p,
            &here,
            home,
            (latitude_deg, longitude_deg, altitude_m),
            None,
        ))
    }

    fn set_heading(&self, p: &Planning<'_>, heading_deg: f64) -> Result<Plan, Refusal> {
        p.flying()?;
        let here = p.needs_position()?;
        let heading_deg = heading_deg % 360.0;
        let until = Step::Until(Condition::Heading { heading_deg });
        let speed = self.motion_speed_m_s(None);
        let keep = speed.map(Step::KeepSpeed);
        if p.kind == AutopilotKind::Px4 {
            let home = p.home_msl_m()?;
            let turn = Step::Command(reposition(
                p.kind,
                here.latitude_deg,
                here.longitude_deg,
                here.altitude_relative_m,
                home,
                speed,
                Some(heading_deg),
            ));
            let steps = [Some(turn), keep, Some(until)];
            return Ok(p.plan(
                None,
                steps.into_iter().flatten().collect(),
                vec![FlightMode::Loiter],
            ));
        }
        // ArduCopter turns to a yaw given with a position target in GUIDED.
        let target = SET_POSITION_TARGET_GLOBAL_INT_DATA {
            coordinate_frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
            type_mask: PositionTargetTypemask::POSITION_TARGET_TYPEMASK_VX_IGNORE
                | PositionTargetTypemask::POSITION_TARGET_TYPEMASK_VY_IGNORE
                | PositionTargetTypemask::POSITION_TARGET_TYPEMASK_VZ_IGNORE
                | PositionTargetTypemask::POSITION_TARGET_TYPEMASK_AX_IGNORE
                | PositionTargetTypemask::POSITION_TARGET_TYPEMASK_AY_IGNORE
                | PositionTargetTypemask::POSITION_TARGET_TYPEMASK_AZ_IGNORE
                | PositionTargetTypemask::POSITION_TARGET_TYPEMASK_YAW_RATE_IGNORE,
            lat_int: degrees_e7(here.latitude_deg),
            lon_int: degrees_e7(here.longitude_deg),
            alt: here.altitude_relative_m as f32,
            yaw: (heading_deg as f32).to_radians(),
            ..SET_POSITION_TARGET_GLOBAL_INT_DATA::DEFAULT
        };
        let send = Step::Send(Box::new(MavMessage::SET_POSITION_TARGET_GLOBAL_INT(target)));
        let steps = [
            Some(Step::Mode(FlightMode::Guided)),
            Some(send),
            keep,
            Some(until),
        ];
        Ok(p.plan(
            None,
            steps.into_iter().flatten().collect(),
            vec![FlightMode::Guided],
        ))
    }

    fn return_home(&self, p: &Planning<'_>) -> Result<Plan, Refusal> {
        if !p.armed && !p.in_air {
            return Err(state(
                "the vehicle is on the ground and disarmed; nothing to return",
            ));
        }
        let home = p.vehicle.home().map(|h| (h.latitude_deg, h.longitude_deg));
        // RTL cruises at RTL_SPEED (ArduCopter) / MPC_XY_CRUISE (PX4) unless told; both
        // take a speed change in RTL (the keeper says it once the mode shows).
        let keep = self.motion_speed_m_s(None).map(Step::KeepSpeed);
        let steps = [
            Some(Step::Mode(FlightMode::Rtl)),
            keep,
            Some(Step::Until(Condition::LandedDisarmed { home })),
        ];
        Ok(p.plan(
            None,
            steps.into_iter().flatten().collect(),
            vec![FlightMode::Rtl, FlightMode::Land],
        ))
    }

    fn reposition_plan(
        &self,
        p: &Planning<'_>,
        here: &Position,
        home_msl_m: Option<f64>,
        (latitude_deg, longitude_deg, altitude_m): (f64, f64, f64),
        speed_m_s: Option<f64>,
    ) -> Plan {
        let speed = self.motion_speed_m_s(speed_m_s);
        let mut steps = Vec::new();
        // DO_REPOSITION as COMMAND_INT: acknowledged (unlike a setpoint), understood by
        // both firmwares (ArduPilot flies it in GUIDED, PX4 in Hold), latitude/longitude
        // as 1e-7° integers. PX4 takes the speed with it; ArduCopter ignores it and restarts
        // at WPNAV_SPEED, so the speed follows the accepted target (KeepSpeed).
        steps.push(Step::Command(reposition(
            p.kind,
            latitude_deg,
            longitude_deg,
            altitude_m,
            home_msl_m,
            speed,
            None,
        )));
        if let Some(speed) = speed {
            steps.push(Step::KeepSpeed(speed));
        }
        steps.push(Step::Until(Condition::Arrived {
            latitude_deg,
            longitude_deg,
            altitude_m,
        }));
        let goal = Goal {
            from_latitude_deg: here.latitude_deg,
            from_longitude_deg: here.longitude_deg,
            from_altitude_m: here.altitude_relative_m,
            to_latitude_deg: latitude_deg,
            to_longitude_deg: longitude_deg,
            to_altitude_m: altitude_m,
            speed_m_s,
        };
        // PX4 flies DO_REPOSITION in Hold (AUTO.LOITER); ArduCopter flies it in GUIDED,
        // and a switch to LOITER there is someone else's doing (the pilot's, usually),
        // which must end the job rather than leave it waiting for an arrival that the
        // loitering vehicle will never make.
        let modes_expected = match p.kind {
            AutopilotKind::Px4 => vec![FlightMode::Guided, FlightMode::Loiter],
            _ => vec![FlightMode::Guided],
        };
        p.plan(Some(goal), steps, modes_expected)
    }
}
