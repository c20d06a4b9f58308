"""pymavlink's mavwp as a ground station's mission list, against the simulator.

Uploads a mission held in a ``mavwp.MAVWPLoader`` (answering the vehicle's MISSION_REQUEST or
MISSION_REQUEST_INT, whichever it sends, as MAVProxy's wp module does), downloads it back into
another loader, saves both in the QGC WPL 110 file format and compares them. ArduPilot keeps
home at index 0 of the list; PX4 has no home slot (``--autopilot``).
Prints ``mission round trip ok N`` and exits 0 on success.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("MAVLINK20", "1")

from pymavlink import mavutil, mavwp  # noqa: E402

MISSION = mavutil.mavlink.MAV_MISSION_TYPE_MISSION


def item(mav, seq, command, lat, lon, alt, params=(0, 0, 0, 0), frame=None):
    if frame is None:
        frame = mavutil.mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
    return mav.mav.mission_item_int_encode(
        mav.target_system, mav.target_component, seq, frame, command, 0, 1,
        params[0], params[1], params[2], params[3],
        int(round(lat * 1e7)), int(round(lon * 1e7)), alt, MISSION)


def plan(mav, autopilot):
    loader = mavwp.MAVWPLoader(target_system=mav.target_system, target_component=mav.target_component)
    lat, lon = 47.397742, 8.545594
    cmds = []
    if autopilot == "ardupilot":
        # Home (the vehicle overwrites it with its own).
        cmds.append((mavutil.mavlink.MAV_CMD_NAV_WAYPOINT, lat, lon, 488.0, (0, 0, 0, 0),
                     mavutil.mavlink.MAV_FRAME_GLOBAL))
    cmds += [
        (mavutil.mavlink.MAV_CMD_NAV_TAKEOFF, 0, 0, 10.0, (0, 0, 0, 0), None),
        (mavutil.mavlink.MAV_CMD_DO_CHANGE_SPEED, 0, 0, 0.0, (1, 4.0, -1, 0), None),
        (mavutil.mavlink.MAV_CMD_NAV_WAYPOINT, lat + 0.0002, lon, 15.0, (0, 0, 0, 0), None),
        (mavutil.mavlink.MAV_CMD_NAV_LOITER_TIME, lat + 0.0002, lon + 0.0003, 15.0, (3, 0, 0, 0), None),
        (mavutil.mavlink.MAV_CMD_DO_DIGICAM_CONTROL, 0, 0, 0.0, (0, 0, 0, 0), None),
        (mavutil.mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, 0, 0, 0.0, (0, 0, 0, 0), None),
    ]
    for seq, (command, la, lo, alt, params, frame) in enumerate(cmds):
        loader.add(item(mav, seq, command, la, lo, alt, params, frame))
    return loader


def upload(mav, loader, timeout):
    mav.mav.mission_count_send(mav.target_system, mav.target_component, loader.count(), MISSION)
    deadline = time.time() + timeout
    asked = set()
    while time.time() < deadline:
        m = mav.recv_match(type=["MISSION_REQUEST", "MISSION_REQUEST_INT", "MISSION_ACK"],
                           blocking=True, timeout=1)
        if m is None:
            continue
        if m.get_type() == "MISSION_ACK":
            if m.type != mavutil.mavlink.MAV_MISSION_ACCEPTED:
                sys.exit(f"upload refused: MISSION_ACK {m.type}")
            return asked
        w = loader.wp(m.seq)
        w.seq = m.seq
        mav.mav.send(w)
        asked.add((m.get_type(), m.seq))
    sys.exit("upload timed out")


def download(mav, timeout):
    mav.mav.mission_request_list_send(mav.target_system, mav.target_component, MISSION)
    m = mav.recv_match(type="MISSION_COUNT", blocking=True, timeout=timeout)
    if m is None:
        sys.exit("no MISSION_COUNT")
    loader = mavwp.MAVWPLoader(target_system=mav.target_system, target_component=mav.target_component)
    for seq in range(m.count):
        for _attempt in range(5):
            mav.mav.mission_request_int_send(mav.target_system, mav.target_component, seq, MISSION)
            w = mav.recv_match(type="MISSION_ITEM_INT", blocking=True, timeout=2)
            if w is not None and w.seq == seq:
                loader.add(w)
                break
        else:
            sys.exit(f"item {seq} never came")
    mav.mav.mission_ack_send(mav.target_system, mav.target_component,
                             mavutil.mavlink.MAV_MISSION_ACCEPTED, MISSION)
    return loader


def saved(loader):
    with tempfile.NamedTemporaryFile("r", suffix=".txt", delete=False) as f:
        path = f.name
    loader.save(path)
    with open(path) as f:
        lines = f.read().splitlines()
    os.unlink(path)
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--autopilot", choices=["ardupilot", "px4"], required=True)
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    mav = mavutil.mavlink_connection(f"tcp:127.0.0.1:{args.port}", source_system=255,
                                     source_component=190)
    if mav.wait_heartbeat(timeout=args.timeout) is None:
        sys.exit("no heartbeat")
    sent = plan(mav, args.autopilot)
    asked = upload(mav, sent, args.timeout)
    kinds = sorted({k for k, _ in asked})
    print(f"requests: {kinds}")
    got = download(mav, args.timeout)
    if got.count() != sent.count():
        sys.exit(f"downloaded {got.count()} items, uploaded {sent.count()}")
    a, b = saved(sent), saved(got)
    # Compare every item but ArduPilot's home (index 0), which the vehicle fills itself.
    skip = 2 if args.autopilot == "ardupilot" else 1
    for i, (x, y) in enumerate(zip(a[skip:], b[skip:])):
        xs, ys = x.split("\t"), y.split("\t")
        # Columns: seq, current, frame, command, p1..p4, lat, lon, alt, autocontinue.
        same = xs[2:4] == ys[2:4] and all(
            abs(float(p) - float(q)) < 1e-6 for p, q in zip(xs[4:11], ys[4:11]))
        if not same:
            sys.exit(f"item {i + skip - 1} differs:\n  sent {x}\n  got  {y}")
    print(f"mission round trip ok {got.count()}")


if __name__ == "__main__":
    main()
