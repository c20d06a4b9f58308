#!/usr/bin/env python3
"""pymavlink as an autopilot that signs (MAVLink 2 signing), and then as its attacker.

It serves tcpin on an ephemeral loopback port (`peer: listening on PORT`), signs every frame
with `--key HEX` and refuses unsigned ones (pymavlink with a secret key and no
allow_unsigned_callback), heartbeats as a disarmed ArduCopter in STABILIZE, streams a position
and answers commands. After `--attack-at` seconds it writes, on the same connection, frames
claiming its own ids (armed, in LAND), one per attack, each followed by a genuine frame:
- `unsigned`: no signature;
- `bad_signature`: signed with another key;
- `replayed`: the exact bytes of a signed heartbeat it sent a moment before;
- `old_timestamp`: signed with the key on a new link id, two minutes in the past;
- `truncated`: a signed frame cut inside its signature.
At `--seconds` it prints `peer: summary {...}`: what it received, and pymavlink's own
signature counters for the frames from the daemon (good, bad, rejected).
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

LAT_DEG = 47.3977420
LON_DEG = 8.5455940
STABILIZE = 0
LAND = 9
EPOCH = 1420070400


def now_ts() -> int:
    return int((time.time() - EPOCH) * 100000)


class Capture:
    def __init__(self):
        self.frames = []

    def write(self, data):
        self.frames.append(bytes(data))


def forged_heartbeat(key, link_id, timestamp, sign=True) -> bytes:
    """An armed LAND heartbeat from (1, 1), encoded by a MAVLink object of its own."""
    capture = Capture()
    forger = mav.MAVLink(capture, srcSystem=1, srcComponent=1)
    if sign:
        forger.signing.secret_key = key
        forger.signing.sign_outgoing = True
        forger.signing.link_id = link_id
        forger.signing.timestamp = timestamp
    forger.heartbeat_send(
        mav.MAV_TYPE_QUADROTOR, mav.MAV_AUTOPILOT_ARDUPILOTMEGA,
        mav.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | mav.MAV_MODE_FLAG_SAFETY_ARMED,
        LAND, mav.MAV_STATE_ACTIVE)
    return capture.frames[-1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--attack-at", type=float, default=4.0)
    args = parser.parse_args()
    key = bytes.fromhex(args.key)

    conn = mavutil.mavlink_connection(
        "tcpin:127.0.0.1:0", source_system=1, source_component=1, dialect="ardupilotmega")
    conn.setup_signing(key, sign_outgoing=True, allow_unsigned_callback=None, link_id=0)
    print(f"peer: listening on {conn.listen.getsockname()[1]}", flush=True)

    received = {}
    commands = []
    bad_data = 0
    attacks = []
    captured = None
    start = time.monotonic()
    next_heartbeat = 0.0
    next_telemetry = 0.0
    attacked = False
    boot_ms = lambda: int((time.monotonic() - start) * 1000)

    def heartbeat() -> bytes:
        message = conn.mav.heartbeat_encode(
            mav.MAV_TYPE_QUADROTOR, mav.MAV_AUTOPILOT_ARDUPILOTMEGA,
            mav.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, STABILIZE, mav.MAV_STATE_STANDBY)
        conn.mav.send(message)
        return bytes(message.get_msgbuf())

    while time.monotonic() - start < args.seconds:
        now = time.monotonic() - start
        if conn.port is not None:
            if now >= next_heartbeat:
                next_heartbeat = now + 0.5
                sent = heartbeat()
                if captured is None:
                    # The bytes of the first signed heartbeat, to replay later.
                    captured = sent
            if now >= next_telemetry:
                next_telemetry = now + 0.1
                conn.mav.global_position_int_send(
                    boot_ms(), int(LAT_DEG * 1e7), int(LON_DEG * 1e7), 488000, 0, 0, 0, 0, 0)
            if not attacked and now >= args.attack_at and captured is not None:
                attacked = True
                wrong = bytes(reversed(key))
                frames = [
                    ("unsigned", forged_heartbeat(None, 0, 0, sign=False)),
                    ("bad_signature", forged_heartbeat(wrong, 0, now_ts())),
                    ("replayed", captured),
                    ("old_timestamp", forged_heartbeat(key, 9, now_ts() - 120 * 100000)),
                    ("truncated", forged_heartbeat(key, 0, now_ts() + 1000)[:-5]),
                ]
                for name, frame in frames:
                    conn.write(frame)
                    attacks.append(name)
                    # A genuine frame after each: the truncated one swallows its head.
                    heartbeat()
        message = conn.recv_match(blocking=True, timeout=0.02)
        if message is None:
            continue
        kind = message.get_type()
        if kind == "BAD_DATA":
            bad_data += 1
            continue
        received[kind] = received.get(kind, 0) + 1
        if kind in ("COMMAND_LONG", "COMMAND_INT"):
            src = (message.get_srcSystem(), message.get_srcComponent())
            commands.append(message.command)
            conn.mav.command_ack_send(message.command, mav.MAV_RESULT_ACCEPTED, 0, 0, src[0], src[1])

    signing = conn.mav.signing
    summary = {
        "received": received,
        "commands": commands,
        "bad_data": bad_data,
        "attacks": attacks,
        "goodsig": signing.goodsig_count,
        "badsig": signing.badsig_count,
        "rejected": signing.reject_count,
        "unsigned_accepted": signing.unsigned_count,
    }
    print("peer: summary " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
