//! The link against an independent MAVLink implementation: pymavlink (pinned in the venv)
//! sends frames our decoder must accept and checks the CRC of the frames our encoder makes.

use std::process::Command;

use flight_companion::link::MavMessage;
use flight_companion::link::dialect::*;
use flight_companion::link::transport::Link;
use tokio_util::sync::CancellationToken;

use crate::link_net::{EVENT_TIMEOUT, expect_connected, expect_frame, options};
use crate::support::{Proc, python};

/// pymavlink as the autopilot: heartbeat and a COMMAND_ACK with extension fields, then it
/// waits for our COMMAND_LONG and prints it (pymavlink refuses frames with a bad CRC).
const PEER: &str = r#"
import os, sys
os.environ["MAVLINK20"] = "1"
from pymavlink import mavutil
port = int(sys.argv[1])
m = mavutil.mavlink_connection(f"udpout:127.0.0.1:{port}", source_system=1, source_component=1, dialect="ardupilotmega")
m.mav.heartbeat_send(2, 3, 81, 4, 3)
m.mav.command_ack_send(400, 5, 40, -7, 255, 190)
msg = m.recv_match(type="COMMAND_LONG", blocking=True, timeout=10)
if msg is None:
    print("NO COMMAND_LONG", flush=True)
    sys.exit(1)
print(f"GOT COMMAND_LONG command={msg.command} param7={msg.param7} confirmation={msg.confirmation} "
      f"src={msg.get_srcSystem()}/{msg.get_srcComponent()}", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_interop_with_pymavlink_both_ways() {
    let shutdown = CancellationToken::new();
    let (link, mut events) = Link::open(
        &"udpin:127.0.0.1:0".parse().unwrap(),
        options(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let port = link.local_addr().unwrap().port();
    let mut command = Command::new(python());
    command.args(["-c", PEER, &port.to_string()]);
    let mut peer = Proc::spawn("pymavlink", command);

    expect_connected(&mut events).await;
    let (system_id, message) = expect_frame(&mut events).await;
    assert_eq!(system_id, 1);
    let MavMessage::HEARTBEAT(hb) = message else {
        panic!("expected a heartbeat, got {message:?}");
    };
    assert_eq!(hb.mavtype, MavType::MAV_TYPE_QUADROTOR);
    assert_eq!(hb.autopilot, MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA);
    assert_eq!(hb.custom_mode, 4);
    assert_eq!(
        expect_frame(&mut events).await.1,
        MavMessage::COMMAND_ACK(COMMAND_ACK_DATA {
            command: MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
            result: MavResult::MAV_RESULT_IN_PROGRESS,
            progress: 40,
            result_param2: -7,
            target_system: 255,
            target_component: 190,
        })
    );

    link.send(&MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
        target_system: 1,
        target_component: 1,
        command: MavCmd::MAV_CMD_NAV_TAKEOFF,
        confirmation: 2,
        param7: 10.0,
        ..Default::default()
    }))
    .unwrap();
    let line = peer.wait_for_line("GOT COMMAND_LONG", EVENT_TIMEOUT);
    assert!(
        line.contains("command=22 param7=10.0 confirmation=2 src=1/191"),
        "{line}"
    );
    assert_eq!(link.counters().0.crc_errors, 0);
    shutdown.cancel();
}
