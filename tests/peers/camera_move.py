#!/usr/bin/env python3
"""Moves `flight-companion sim` (ArduCopter) to a second place for the camera test, with
pymavlink: GUIDED, arm, take off to ALT m, fly NORTH m north with
SET_POSITION_TARGET_GLOBAL_INT, and wait until there. The vehicle then holds position.

Usage: camera_move.py --port PORT [--alt 20] [--north 80]
Prints one line per step and `ok: at target LAT LON` at the end; exits 1 with
`FAIL: reason` on the first failure.
"""

import argparse
import os
import sys
import time

os.environ["MAVLINK20"] = "1"  # before importing mavutil: the simulator speaks MAVLink 2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gcs_flight  # noqa: E402  (the same helpers as the flight scenario)
from gcs_flight import Failure, connect, expect_accepted, log, mavlink, recv, wait_heartbeat_where  # noqa: E402

M_PER_DEG = 111320.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alt", type=float, default=20.0)
    parser.add_argument("--north", type=float, default=80.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    args.autopilot = "ardupilot"
    try:
        conn = connect(args)
        # The daemon watching this vehicle holds it when it flies faster than its envelope's
        # 5 m/s: GUIDED flies at WPNAV_SPEED (cm/s), read when GUIDED starts.
        conn.mav.param_set_send(
            conn.target_system, conn.target_component, b"WPNAV_SPEED", 400, mavlink.MAV_PARAM_TYPE_REAL32
        )
        recv(conn, ["PARAM_VALUE"], 5, lambda m: m.param_id == "WPNAV_SPEED", what="PARAM_VALUE WPNAV_SPEED")
        conn.set_mode("GUIDED")
        wait_heartbeat_where(conn, lambda m: m.custom_mode == gcs_flight.ARDUCOPTER_GUIDED, 5, "GUIDED")
        expect_accepted(conn, "arm", mavlink.MAV_CMD_COMPONENT_ARM_DISARM, [1])
        wait_heartbeat_where(conn, gcs_flight.armed, 5, "an armed heartbeat")
        expect_accepted(conn, "takeoff", mavlink.MAV_CMD_NAV_TAKEOFF, [0, 0, 0, 0, 0, 0, args.alt])
        start = recv(
            conn,
            ["GLOBAL_POSITION_INT"],
            args.timeout,
            lambda m: m.relative_alt >= (args.alt - 0.5) * 1000,
            what="the takeoff altitude",
        )
        log("altitude reached: %.1f m" % (start.relative_alt / 1000.0))
        target_lat = start.lat / 1e7 + args.north / M_PER_DEG
        target_lon = start.lon / 1e7
        mask = 0b0000_1111_1111_1000  # position only
        deadline = time.monotonic() + args.timeout
        at = None
        while at is None:
            # Re-sent every second: a target sent while the takeoff is still finishing is
            # ignored, as ArduCopter does.
            conn.mav.set_position_target_global_int_send(
                0,
                conn.target_system,
                conn.target_component,
                mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
                mask,
                int(target_lat * 1e7),
                int(target_lon * 1e7),
                args.alt,
                0, 0, 0, 0, 0, 0, 0, 0,
            )
            if time.monotonic() > deadline:
                raise Failure("no arrival at the target within %.0f s" % args.timeout)
            try:
                at = recv(
                    conn,
                    ["GLOBAL_POSITION_INT"],
                    1.0,
                    lambda m: abs(m.lat / 1e7 - target_lat) * M_PER_DEG < 1.0 and abs(m.vx) + abs(m.vy) < 30,
                    what="arrival at the target",
                )
            except Failure:
                pass
        log("ok: at target %.7f %.7f" % (at.lat / 1e7, at.lon / 1e7))
    except Failure as e:
        log("FAIL: %s" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
