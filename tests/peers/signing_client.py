#!/usr/bin/env python3
"""pymavlink as a ground station on one of the simulator's links, signed or not.

`--tcp HOST:PORT` connects as system 255 component 190; with `--key HEX` it signs every
frame (pymavlink's signing) and accepts only frames signed with that key. It performs
`--actions` (comma-separated: `radio_status` a RADIO_STATUS, `arm` an arming command,
`request_version` a REQUEST_MESSAGE for AUTOPILOT_VERSION), then listens for two seconds and
prints `client: summary {...}`: the COMMAND_ACK results by command id and pymavlink's
signature counters.
"""
import argparse
import json
import os
import sys
import time

# MAVLink 2 from the first frame: otherwise mavutil starts in MAVLink 1 and, at the first
# MAVLink 2 frame it receives, replaces its encoder with a new one, signing setup and all.
os.environ["MAVLINK20"] = "1"

from pymavlink import mavutil  # noqa: E402
from pymavlink.dialects.v20 import ardupilotmega as mav  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tcp", required=True)
    parser.add_argument("--key")
    parser.add_argument("--actions", required=True)
    args = parser.parse_args()
    conn = mavutil.mavlink_connection(
        f"tcp:{args.tcp}", source_system=255, source_component=190, dialect="ardupilotmega")
    if args.key:
        conn.setup_signing(bytes.fromhex(args.key), sign_outgoing=True,
                           allow_unsigned_callback=None, link_id=0)
    # Listen first, as ground stations do: a signed heartbeat brings this side's timestamp
    # up to the vehicle's (ArduPilot restarts a minute ahead of its stored timestamp), so
    # the first command is not refused as an old stream.
    conn.recv_match(type="HEARTBEAT", blocking=True, timeout=3.0)
    for action in args.actions.split(","):
        if action == "radio_status":
            conn.mav.radio_status_send(200, 190, 100, 90, 80, 0, 0)
        elif action == "arm":
            conn.mav.command_long_send(1, 1, mav.MAV_CMD_COMPONENT_ARM_DISARM, 0,
                                       1, 2989, 0, 0, 0, 0, 0)
        elif action == "request_version":
            conn.mav.command_long_send(1, 1, mav.MAV_CMD_REQUEST_MESSAGE, 0,
                                       148, 0, 0, 0, 0, 0, 0)
        else:
            raise SystemExit(f"unknown action {action}")
        time.sleep(0.1)
    acks = {}
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        message = conn.recv_match(type="COMMAND_ACK", blocking=True, timeout=0.1)
        if message is not None and message.target_system == 255:
            acks[str(message.command)] = message.result
    signing = conn.mav.signing
    summary = {
        "acks": acks,
        "goodsig": signing.goodsig_count,
        "badsig": signing.badsig_count,
        "rejected": signing.reject_count,
    }
    print("client: summary " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
