#!/usr/bin/env python3
"""Puts `flight-companion sim` (ArduCopter) in the air with pymavlink, for the e-stop tests:
GUIDED, arm, take off to 10 m, print `airborne` once above 5 m, exit 0 (`FAIL: reason` and
exit 1 otherwise). It sends nothing after that: the vehicle hovers in GUIDED."""

import argparse
import os
import sys
import time

os.environ["MAVLINK20"] = "1"

from pymavlink import mavutil  # noqa: E402

mavlink = mavutil.mavlink


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    conn = mavutil.mavlink_connection(
        "tcp:127.0.0.1:%d" % args.port, source_system=255, source_component=190, autoreconnect=False
    )
    deadline = time.monotonic() + args.timeout
    hb = conn.wait_heartbeat(timeout=args.timeout)
    if hb is None:
        print("FAIL: no heartbeat", flush=True)
        return 1
    conn.target_system = hb.get_srcSystem()
    conn.target_component = hb.get_srcComponent()
    conn.set_mode("GUIDED")
    steps = [
        (mavlink.MAV_CMD_COMPONENT_ARM_DISARM, [1, 0, 0, 0, 0, 0, 0]),
        (mavlink.MAV_CMD_NAV_TAKEOFF, [0, 0, 0, 0, 0, 0, 10]),
    ]
    for cmd, params in steps:
        accepted = False
        for _ in range(20):
            conn.mav.command_long_send(conn.target_system, conn.target_component, cmd, 0, *params)
            ack = conn.recv_match(type="COMMAND_ACK", blocking=True, timeout=0.5)
            if ack is not None and ack.command == cmd and ack.result == mavlink.MAV_RESULT_ACCEPTED:
                accepted = True
                break
            time.sleep(0.2)
            conn.set_mode("GUIDED")
        if not accepted:
            print("FAIL: command %d not accepted" % cmd, flush=True)
            return 1
    while time.monotonic() < deadline:
        msg = conn.recv_match(type="GLOBAL_POSITION_INT", blocking=True, timeout=0.5)
        if msg is not None and msg.relative_alt > 5000:
            print("airborne %.1f m" % (msg.relative_alt / 1000.0), flush=True)
            return 0
    print("FAIL: not above 5 m within %.0f s" % args.timeout, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
