#!/usr/bin/env python3
"""A pymavlink ground station on one of the daemon's `[[gcs_endpoint]]`s (issue 19): it sees
the vehicle through the daemon as if directly connected, and is judged by what it is told.

Scenarios:
  fly      wait for the vehicle's heartbeat; read a parameter by name and the whole list;
           arm, take off to 10 m, go to --lat/--lon at 15 m (DO_REPOSITION as COMMAND_INT)
           and see the vehicle get there; then a goto to --out-lat/--out-lon (outside the
           envelope): DENIED, with the reason as STATUSTEXT.
  denied   send a goto to --lat/--lon and expect DENIED with a STATUSTEXT containing --expect
           (the e-stop latched, a monitor endpoint, the control lease held over MCP).
  tlog     read --path with pymavlink's own log reader and count the frames by type.

Prints one line per step and `summary {json}` at the end; exits 0 on success, 1 with
`FAIL: reason` on the first failure.
"""

import argparse
import json
import os
import sys
import time

os.environ["MAVLINK20"] = "1"  # before importing mavutil

from pymavlink import mavutil  # noqa: E402

mavlink = mavutil.mavlink


class Failure(Exception):
    pass


def log(text):
    print(text, flush=True)


class Station:
    def __init__(self, port, timeout):
        # udpout: the daemon's endpoint listens (udpin) and answers whoever sent last.
        self.conn = mavutil.mavlink_connection(
            "udpout:127.0.0.1:%d" % port, source_system=255, source_component=190
        )
        self.timeout = timeout
        self.last_heartbeat = 0.0
        self.texts = []

    def heartbeat(self):
        now = time.monotonic()
        if now - self.last_heartbeat >= 1.0:
            self.conn.mav.heartbeat_send(mavlink.MAV_TYPE_GCS, mavlink.MAV_AUTOPILOT_INVALID, 0, 0, 0)
            self.last_heartbeat = now

    def recv(self, types, timeout_s, condition=lambda m: True, what=None):
        deadline = time.monotonic() + timeout_s
        while True:
            self.heartbeat()
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("no %s within %.0f s" % (what or "/".join(types), timeout_s))
            msg = self.conn.recv_match(blocking=True, timeout=min(left, 0.3))
            if msg is None:
                continue
            if msg.get_type() == "STATUSTEXT":
                self.texts.append(msg.text)
                log("statustext: %s" % msg.text)
            if msg.get_type() in types and condition(msg):
                return msg

    def vehicle(self):
        hb = self.recv(
            ["HEARTBEAT"],
            self.timeout,
            lambda m: m.get_srcComponent() == 1 and m.autopilot != mavlink.MAV_AUTOPILOT_INVALID,
            what="the vehicle's heartbeat",
        )
        self.conn.target_system = hb.get_srcSystem()
        self.conn.target_component = hb.get_srcComponent()
        log("vehicle: system %d component %d autopilot %d" % (hb.get_srcSystem(), hb.get_srcComponent(), hb.autopilot))
        return hb

    def ack(self, cmd, timeout_s=5.0):
        ack = self.recv(["COMMAND_ACK"], timeout_s, lambda m: m.command == cmd, what="COMMAND_ACK of %d" % cmd)
        if (ack.target_system, ack.target_component) != (255, 190):
            raise Failure("ACK addressed to %d/%d, not to us" % (ack.target_system, ack.target_component))
        return ack.result

    def command(self, cmd, params):
        p = list(params) + [0.0] * (7 - len(params))
        self.conn.mav.command_long_send(self.conn.target_system, self.conn.target_component, cmd, 0, *p)
        return self.ack(cmd)

    def goto(self, lat, lon, alt_m):
        self.conn.mav.command_int_send(
            self.conn.target_system,
            self.conn.target_component,
            mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            mavlink.MAV_CMD_DO_REPOSITION,
            0,
            0,
            -1,
            mavlink.MAV_DO_REPOSITION_FLAGS_CHANGE_MODE,
            0,
            0,
            int(lat * 1e7),
            int(lon * 1e7),
            alt_m,
        )
        return self.ack(mavlink.MAV_CMD_DO_REPOSITION)

    def text_after(self, seconds):
        """Every STATUSTEXT chunk seen so far and within `seconds` more, joined."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.heartbeat()
            msg = self.conn.recv_match(blocking=True, timeout=0.2)
            if msg is not None and msg.get_type() == "STATUSTEXT":
                self.texts.append(msg.text)
                log("statustext: %s" % msg.text)
        return "".join(self.texts)


def expect(result, want, name):
    if result != want:
        raise Failure("%s: result %d, expected %d" % (name, result, want))
    log("%s: %s" % (name, "accepted" if want == mavlink.MAV_RESULT_ACCEPTED else "denied"))


def fly(st, args):
    summary = {}
    st.vehicle()
    # A parameter by name (one the whitelist lets a ground station read).
    st.conn.mav.param_request_read_send(st.conn.target_system, st.conn.target_component, b"WPNAV_SPEED", -1)
    pv = st.recv(["PARAM_VALUE"], 10, lambda m: m.param_id == "WPNAV_SPEED", what="PARAM_VALUE WPNAV_SPEED")
    summary["WPNAV_SPEED"] = pv.param_value
    log("param WPNAV_SPEED = %s" % pv.param_value)
    # The whole list.
    st.conn.mav.param_request_list_send(st.conn.target_system, st.conn.target_component)
    seen, count = set(), None
    deadline = time.monotonic() + 20
    while count is None or len(seen) < count:
        if time.monotonic() > deadline:
            raise Failure("parameter list: %d of %s" % (len(seen), count))
        m = st.recv(["PARAM_VALUE"], 20)
        count = m.param_count
        seen.add(m.param_index)
    summary["params"] = len(seen)
    log("params: %d of %d" % (len(seen), count))

    expect(st.command(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, [1]), mavlink.MAV_RESULT_ACCEPTED, "arm")
    st.recv(["HEARTBEAT"], 10, lambda m: m.get_srcComponent() == 1 and m.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED, what="armed")
    log("armed")
    expect(st.command(mavlink.MAV_CMD_NAV_TAKEOFF, [0, 0, 0, 0, 0, 0, 10]), mavlink.MAV_RESULT_ACCEPTED, "takeoff")
    st.recv(["GLOBAL_POSITION_INT"], 60, lambda m: m.relative_alt >= 9500, what="10 m")
    log("airborne")
    expect(st.goto(args.lat, args.lon, 15), mavlink.MAV_RESULT_ACCEPTED, "goto")

    def near(m):
        d_lat = (m.lat / 1e7 - args.lat) * 111_320
        d_lon = (m.lon / 1e7 - args.lon) * 111_320 * 0.68
        return (d_lat**2 + d_lon**2) ** 0.5 < 3 and abs(m.relative_alt / 1000 - 15) < 2

    st.recv(["GLOBAL_POSITION_INT"], 90, near, what="the goto's target")
    log("reached")
    st.texts = []
    expect(st.goto(args.out_lat, args.out_lon, 15), mavlink.MAV_RESULT_DENIED, "goto outside")
    summary["refusal"] = st.text_after(1.0)
    return summary


def denied(st, args):
    st.vehicle()
    st.texts = []
    expect(st.goto(args.lat, args.lon, 15), mavlink.MAV_RESULT_DENIED, "goto")
    expect(st.command(mavlink.MAV_CMD_NAV_TAKEOFF, [0, 0, 0, 0, 0, 0, 10]), mavlink.MAV_RESULT_DENIED, "takeoff")
    text = st.text_after(1.0)
    if args.expect not in text:
        raise Failure("the refusal does not say %r: %r" % (args.expect, text))
    return {"refusal": text}


def tlog(args):
    mlog = mavutil.mavlink_connection(args.path, notimestamps=False)
    counts, first, last = {}, None, None
    while True:
        m = mlog.recv_match()
        if m is None:
            break
        counts[m.get_type()] = counts.get(m.get_type(), 0) + 1
        t = getattr(m, "_timestamp", None)
        first = t if first is None else first
        last = t
    return {"counts": counts, "first": first, "last": last}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["fly", "denied", "tlog"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--lat", type=float)
    ap.add_argument("--lon", type=float)
    ap.add_argument("--out-lat", type=float)
    ap.add_argument("--out-lon", type=float)
    ap.add_argument("--expect", default="")
    ap.add_argument("--path")
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    try:
        if args.scenario == "tlog":
            summary = tlog(args)
        else:
            st = Station(args.port, args.timeout)
            summary = fly(st, args) if args.scenario == "fly" else denied(st, args)
    except Failure as e:
        log("FAIL: %s" % e)
        sys.exit(1)
    log("summary %s" % json.dumps(summary))


if __name__ == "__main__":
    main()
