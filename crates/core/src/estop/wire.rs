//! Stop commands as MAVLink (pure functions). The stop machine sees the vehicle as every
//! safety check does, through `VehicleState::view`.
//!
//! Stop commands are built here and handed straight to the link writer by the e-stop branch
//! of the daemon loop: they do not go through the command protocol's one-per-kind queue
//! (a pending `DO_SET_MODE` of a tool must not delay a stop), and their re-sending is the
//! stop machine's (until the heartbeat shows the mode), not the protocol's.

use crate::link::MavMessage;
use crate::link::dialect::{COMMAND_LONG_DATA, MavCmd};
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;

use super::core::StopCommand;

/// `COMPONENT_ARM_DISARM` param2 that forces a disarm in the air (both firmwares).
pub const FORCE_DISARM_MAGIC: f32 = 21196.0;

/// The message for `command` to the autopilot `(system, component)`; `None` when the
/// autopilot has no such mode (an unknown firmware).
pub fn to_message(
    command: StopCommand,
    autopilot: AutopilotKind,
    target_system: u8,
    target_component: u8,
) -> Option<MavMessage> {
    let mut params = [0.0f32; 7];
    let command_id = match command {
        StopCommand::SetMode(mode) => {
            params = FlightMode::set_mode_params(autopilot, mode)?;
            MavCmd::MAV_CMD_DO_SET_MODE
        }
        StopCommand::Disarm => MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
        StopCommand::ForceDisarm => {
            params[1] = FORCE_DISARM_MAGIC;
            MavCmd::MAV_CMD_COMPONENT_ARM_DISARM
        }
        StopCommand::Terminate => {
            params[0] = 1.0;
            MavCmd::MAV_CMD_DO_FLIGHTTERMINATION
        }
    };
    let [param1, param2, param3, param4, param5, param6, param7] = params;
    Some(MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
        param1,
        param2,
        param3,
        param4,
        param5,
        param6,
        param7,
        command: command_id,
        target_system,
        target_component,
        confirmation: 0,
    }))
}

/// True for the `COMMAND_ACK`s that answer stop commands.
pub fn is_stop_ack(command: MavCmd) -> bool {
    matches!(
        command,
        MavCmd::MAV_CMD_DO_SET_MODE
            | MavCmd::MAV_CMD_COMPONENT_ARM_DISARM
            | MavCmd::MAV_CMD_DO_FLIGHTTERMINATION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(m: Option<MavMessage>) -> COMMAND_LONG_DATA {
        match m {
            Some(MavMessage::COMMAND_LONG(c)) => c,
            other => panic!("not a COMMAND_LONG: {other:?}"),
        }
    }

    #[test]
    fn stop_commands_encode_for_each_autopilot() {
        let brake = long(to_message(
            StopCommand::SetMode(FlightMode::Brake),
            AutopilotKind::Ardupilot,
            1,
            1,
        ));
        assert_eq!(brake.command, MavCmd::MAV_CMD_DO_SET_MODE);
        assert_eq!((brake.param1, brake.param2), (1.0, 17.0));
        let hold = long(to_message(
            StopCommand::SetMode(FlightMode::Loiter),
            AutopilotKind::Px4,
            1,
            1,
        ));
        assert_eq!((hold.param1, hold.param2, hold.param3), (1.0, 4.0, 3.0));
        // PX4 has no BRAKE: nothing rather than a wrong mode.
        assert!(
            to_message(
                StopCommand::SetMode(FlightMode::Brake),
                AutopilotKind::Px4,
                1,
                1
            )
            .is_none()
        );
        let disarm = long(to_message(
            StopCommand::Disarm,
            AutopilotKind::Ardupilot,
            1,
            1,
        ));
        assert_eq!((disarm.param1, disarm.param2), (0.0, 0.0));
        let force = long(to_message(
            StopCommand::ForceDisarm,
            AutopilotKind::Ardupilot,
            1,
            1,
        ));
        assert_eq!(force.param2, FORCE_DISARM_MAGIC);
        let term = long(to_message(StopCommand::Terminate, AutopilotKind::Px4, 1, 1));
        assert_eq!(term.command, MavCmd::MAV_CMD_DO_FLIGHTTERMINATION);
        assert_eq!(term.param1, 1.0);
    }
}
