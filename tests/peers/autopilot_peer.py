#!/usr/bin/env python3
"""pymavlink acting as an ArduCopter autopilot, to check what flight-companion sends.

An independent MAVLink implementation on the other end of the daemon's link: it serves
tcpin on an ephemeral loopback port (printed as `peer: listening on PORT`), heartbeats as
an ArduPilot quadrotor, streams a fixed position, battery and GPS, answers every command
with COMMAND_ACK(ACCEPTED), and parses every frame it receives. After --seconds it prints
one JSON line `peer: summary {...}` with what it saw and exits 0.
"""
import argparse
import json
import sys
import time

from pymavlink import mavutil
from pymavlink.dialects.v20 import ardupilotmega as mav

LAT_DEG = 47.3977420
LON_DEG = 8.5455940
ALT_MSL_M = 488.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    conn = mavutil.mavlink_connection(
        "tcpin:127.0.0.1:0", source_system=1, source_component=1, dialect="ardupilotmega"
    )
    conn.robust_parsing = True
    conn.mav.robust_parsing = True
    print(f"peer: listening on {conn.listen.getsockname()[1]}", flush=True)

    received = {}
    bad_frames = 0
    heartbeats_from = set()
    heartbeat_times = []
    commands = []
    start = time.monotonic()
    next_heartbeat = 0.0
    next_telemetry = 0.0
    boot_ms = lambda: int((time.monotonic() - start) * 1000)
    while time.monotonic() - start < args.seconds:
        now = time.monotonic() - start
        if conn.port is not None:
            if now >= next_heartbeat:
                next_heartbeat = now + 1.0
                conn.mav.heartbeat_send(
                    mav.MAV_TYPE_QUADROTOR,
                    mav.MAV_AUTOPILOT_ARDUPILOTMEGA,
                    mav.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
                    5,  # LOITER
                    mav.MAV_STATE_STANDBY,
                )
            if now >= next_telemetry:
                next_telemetry = now + 0.1
                conn.mav.global_position_int_send(
                    boot_ms(), int(LAT_DEG * 1e7), int(LON_DEG * 1e7),
                    int(ALT_MSL_M * 1000), 0, 0, 0, 0, 9000,
                )
                conn.mav.sys_status_send(0, 0, 0, 500, 12600, 1500, 87, 0, 0, 0, 0, 0, 0)
                conn.mav.gps_raw_int_send(
                    boot_ms() * 1000, 3, int(LAT_DEG * 1e7), int(LON_DEG * 1e7),
                    int(ALT_MSL_M * 1000), 80, 65535, 0, 65535, 12,
                )
                conn.mav.attitude_send(boot_ms(), 0.0, 0.0, 1.5708, 0.0, 0.0, 0.0)
        message = conn.recv_match(blocking=True, timeout=0.02)
        if message is None:
            continue
        kind = message.get_type()
        if kind == "BAD_DATA":
            bad_frames += 1
            continue
        received[kind] = received.get(kind, 0) + 1
        src = (message.get_srcSystem(), message.get_srcComponent())
        if kind == "HEARTBEAT":
            heartbeats_from.add((src[0], src[1], message.type, message.autopilot))
            heartbeat_times.append(time.monotonic() - start)
        elif kind in ("COMMAND_LONG", "COMMAND_INT"):
            commands.append({"command": message.command, "param1": message.param1,
                             "param2": message.param2, "from": list(src)})
            conn.mav.command_ack_send(message.command, mav.MAV_RESULT_ACCEPTED, 0, 0, src[0], src[1])

    summary = {
        "received": received,
        "bad_frames": bad_frames,
        "receive_errors": conn.mav.total_receive_errors,
        "heartbeats_from": [list(h) for h in sorted(heartbeats_from)],
        "heartbeat_times_s": heartbeat_times,
        "commands": commands,
    }
    print("peer: summary " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
