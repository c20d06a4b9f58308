#!/usr/bin/env python3
"""A ground station written with pymavlink, flying `flight-companion sim` as it would a real
ArduCopter or PX4: an independent implementation of MAVLink 2 framing, mode mapping and the
command protocol.

Scenarios:
  flight  wait for a heartbeat, set GUIDED (PX4: AUTO.LOITER), arm, take off to 10 m (PX4:
          param7 AMSL, through AUTO.TAKEOFF), see relative_alt reach 10 m, land, see it disarm.
  nogps   inject SIM_GPS_DISABLE=1 with PARAM_SET, see arming refused with the STATUSTEXT
          reason and a FAILED/DENIED ACK.

Prints one line per step; exits 0 on success, 1 with `FAIL: reason` on the first failure.
"""

import argparse
import os
import sys
import time

os.environ["MAVLINK20"] = "1"  # before importing mavutil: the simulator speaks MAVLink 2

from pymavlink import mavutil  # noqa: E402

mavlink = mavutil.mavlink

PX4_TAKEOFF = (4 << 16) | (2 << 24)
PX4_LOITER = (4 << 16) | (3 << 24)
ARDUCOPTER_GUIDED = 4


class Failure(Exception):
    pass


def log(text):
    print(text, flush=True)


def recv(conn, types, timeout_s, condition=lambda m: True, what=None):
    """The next message of `types` that satisfies `condition`, or Failure after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("no %s within %.0f s" % (what or "/".join(types), timeout_s))
        msg = conn.recv_match(type=types, blocking=True, timeout=min(left, 0.5))
        if msg is None:
            continue
        if msg.get_type() == "STATUSTEXT":
            log("statustext: %s" % msg.text)
        if msg.get_type() in types and condition(msg):
            return msg


def command(conn, cmd, params, timeout_s=5.0):
    """Sends a COMMAND_LONG and returns the result of its ACK (addressed to us)."""
    p = list(params) + [0.0] * (7 - len(params))
    conn.mav.command_long_send(conn.target_system, conn.target_component, cmd, 0, *p)
    ack = recv(
        conn,
        ["COMMAND_ACK", "STATUSTEXT"],
        timeout_s,
        lambda m: m.get_type() == "COMMAND_ACK" and m.command == cmd,
        what="COMMAND_ACK for command %d" % cmd,
    )
    if ack.target_system != conn.mav.srcSystem or ack.target_component != conn.mav.srcComponent:
        raise Failure(
            "ACK of %d addressed to %d/%d, not to us (%d/%d)"
            % (cmd, ack.target_system, ack.target_component, conn.mav.srcSystem, conn.mav.srcComponent)
        )
    return ack.result


def expect_accepted(conn, name, cmd, params, timeout_s=5.0):
    result = command(conn, cmd, params, timeout_s)
    if result != mavlink.MAV_RESULT_ACCEPTED:
        raise Failure("%s refused with result %d" % (name, result))
    log("%s: accepted" % name)


def wait_heartbeat_where(conn, condition, timeout_s, what):
    return recv(conn, ["HEARTBEAT"], timeout_s, lambda m: m.get_srcComponent() == 1 and condition(m), what=what)


def armed(hb):
    return bool(hb.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED)


def connect(args):
    conn = mavutil.mavlink_connection(
        "tcp:127.0.0.1:%d" % args.port, source_system=255, source_component=190, autoreconnect=False
    )
    hb = recv(conn, ["HEARTBEAT"], args.timeout, what="a heartbeat")
    conn.target_system = hb.get_srcSystem()
    conn.target_component = hb.get_srcComponent()
    want = mavlink.MAV_AUTOPILOT_PX4 if args.autopilot == "px4" else mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA
    if hb.autopilot != want:
        raise Failure("heartbeat says autopilot %d, expected %d" % (hb.autopilot, want))
    if hb.type != mavlink.MAV_TYPE_QUADROTOR:
        raise Failure("heartbeat says type %d, expected a quadrotor" % hb.type)
    log("heartbeat: system %d component %d mode %s" % (conn.target_system, conn.target_component, conn.flightmode))
    return conn


def relative_alt_m(conn, timeout_s):
    msg = recv(conn, ["GLOBAL_POSITION_INT"], timeout_s)
    return msg.relative_alt / 1000.0, msg.alt / 1000.0


def flight(conn, args):
    px4 = args.autopilot == "px4"
    # Mode first, by pymavlink's own mode mapping of each firmware.
    if px4:
        conn.set_mode("LOITER")
        wait_heartbeat_where(conn, lambda m: m.custom_mode == PX4_LOITER, 5, "AUTO.LOITER in the heartbeat")
    else:
        conn.set_mode("GUIDED")
        wait_heartbeat_where(conn, lambda m: m.custom_mode == ARDUCOPTER_GUIDED, 5, "GUIDED in the heartbeat")
    log("mode: %s" % conn.flightmode)

    expect_accepted(conn, "arm", mavlink.MAV_CMD_COMPONENT_ARM_DISARM, [1])
    wait_heartbeat_where(conn, armed, 5, "an armed heartbeat")
    log("armed")

    rel_m, amsl_m = relative_alt_m(conn, 5)
    if px4:
        # PX4 takes the takeoff altitude above mean sea level.
        home_amsl_m = amsl_m - rel_m
        expect_accepted(
            conn, "takeoff", mavlink.MAV_CMD_NAV_TAKEOFF, [0, 0, 0, float("nan"), float("nan"), float("nan"), home_amsl_m + 10]
        )
        wait_heartbeat_where(conn, lambda m: m.custom_mode == PX4_TAKEOFF, 5, "AUTO.TAKEOFF in the heartbeat")
        log("mode: %s" % conn.flightmode)
    else:
        expect_accepted(conn, "takeoff", mavlink.MAV_CMD_NAV_TAKEOFF, [0, 0, 0, 0, 0, 0, 10])

    recv(conn, ["GLOBAL_POSITION_INT"], args.timeout, lambda m: m.relative_alt >= 9500, what="relative_alt >= 9.5 m")
    rel_m, _ = relative_alt_m(conn, 5)
    log("altitude: %.1f m" % rel_m)
    if rel_m > 11.0:
        raise Failure("overshot to %.1f m" % rel_m)
    if px4:
        wait_heartbeat_where(conn, lambda m: m.custom_mode == PX4_LOITER, 10, "AUTO.LOITER after takeoff")
        log("mode: %s" % conn.flightmode)

    expect_accepted(conn, "land", mavlink.MAV_CMD_NAV_LAND, [])
    wait_heartbeat_where(conn, lambda m: not armed(m), args.timeout, "a disarmed heartbeat after landing")
    rel_m, _ = relative_alt_m(conn, 5)
    if rel_m > 0.2:
        raise Failure("disarmed at %.1f m, not on the ground" % rel_m)
    log("landed and disarmed")


def nogps(conn, args):
    conn.mav.param_set_send(
        conn.target_system, conn.target_component, b"SIM_GPS_DISABLE", 1, mavlink.MAV_PARAM_TYPE_INT8
    )
    recv(
        conn,
        ["PARAM_VALUE"],
        5,
        lambda m: m.param_id == "SIM_GPS_DISABLE" and m.param_value == 1,
        what="PARAM_VALUE SIM_GPS_DISABLE = 1",
    )
    recv(conn, ["GPS_RAW_INT"], 5, lambda m: m.fix_type < 3, what="GPS_RAW_INT without a 3D fix")
    log("gps disabled")
    want_text = "Preflight Fail" if args.autopilot == "px4" else "PreArm: Need 3D Fix"
    conn.mav.command_long_send(
        conn.target_system, conn.target_component, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0, 1, 0, 0, 0, 0, 0, 0
    )
    seen_text = None
    ack = None
    deadline = time.monotonic() + 5
    while (ack is None or seen_text is None) and time.monotonic() < deadline:
        msg = conn.recv_match(type=["COMMAND_ACK", "STATUSTEXT"], blocking=True, timeout=0.5)
        if msg is None:
            continue
        if msg.get_type() == "STATUSTEXT" and want_text in msg.text:
            seen_text = msg.text
        elif msg.get_type() == "COMMAND_ACK" and msg.command == mavlink.MAV_CMD_COMPONENT_ARM_DISARM:
            ack = msg.result
    if seen_text is None:
        raise Failure("no STATUSTEXT containing %r" % want_text)
    if ack not in (mavlink.MAV_RESULT_FAILED, mavlink.MAV_RESULT_DENIED):
        raise Failure("arming without GPS answered %r, expected FAILED or DENIED" % ack)
    hb = wait_heartbeat_where(conn, lambda m: True, 3, "a heartbeat")
    if armed(hb):
        raise Failure("armed without GPS")
    log("arming refused: %s (result %d)" % (seen_text, ack))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="the simulator's tcpin port on 127.0.0.1")
    parser.add_argument("--autopilot", choices=["ardupilot", "px4"], default="ardupilot")
    parser.add_argument("--scenario", choices=["flight", "nogps"], default="flight")
    parser.add_argument("--timeout", type=float, default=30.0, help="wall-clock seconds per long wait")
    args = parser.parse_args()
    try:
        conn = connect(args)
        {"flight": flight, "nogps": nogps}[args.scenario](conn, args)
    except Failure as e:
        log("FAIL: %s" % e)
        return 1
    except (OSError, ConnectionError) as e:
        log("FAIL: connection: %s" % e)
        return 1
    log("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
