#!/usr/bin/env python3
"""A second machine on the autopilot's network, claiming to be the autopilot (pymavlink).

It talks to the daemon's listening link (`--udp HOST:PORT` or `--tcp HOST:PORT`) from its own
socket, bound to `--source` (another loopback address stands for another machine), and for
`--seconds` it:
- heartbeats as an armed ArduCopter in LAND (custom mode 9) with the autopilot's ids;
- reports a position one degree north of where the vehicle is;
- forges COMMAND_ACKs refusing arming and mode changes, addressed to the daemon (1/191);
- listens for anything the daemon sends it (its heartbeats, commands);
- on TCP, reconnects whenever the daemon closes the connection.
With `--sign-key HEX`, every frame is signed with that key (pymavlink's signing).

Prints `spoofer: summary {...}`: frames sent, frames received by type, TCP connections made
and how many the daemon closed, and how long the longest one lasted.
"""
import argparse
import json
import socket
import sys
import time

from pymavlink.dialects.v20 import ardupilotmega as mav

ARDUCOPTER_LAND = 9


class Sink:
    """pymavlink writes encoded frames here; the loop sends them on the socket."""

    def __init__(self):
        self.frames = []

    def write(self, data):
        self.frames.append(bytes(data))


def main() -> int:
    parser = argparse.ArgumentParser()
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--udp")
    target.add_argument("--tcp")
    parser.add_argument("--source", default="127.0.0.2")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--lat", type=float, required=True)
    parser.add_argument("--lon", type=float, required=True)
    parser.add_argument("--sign-key")
    args = parser.parse_args()
    host, port = (args.udp or args.tcp).rsplit(":", 1)
    peer = (host, int(port))

    sink = Sink()
    link = mav.MAVLink(sink, srcSystem=1, srcComponent=1)
    link.robust_parsing = True
    if args.sign_key:
        link.signing.secret_key = bytes.fromhex(args.sign_key)
        link.signing.sign_outgoing = True
        link.signing.link_id = 0
        link.signing.timestamp = int((time.time() - 1420070400) * 100000)

    summary = {"sent": 0, "received": {}, "connections": 0, "closed_by_daemon": 0,
               "longest_connection_s": 0.0, "send_errors": 0}
    sock = None
    connected_at = None

    def connect():
        nonlocal sock, connected_at
        if args.udp:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((args.source, 0))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((args.source, 0))
            sock.settimeout(2.0)
            sock.connect(peer)
            summary["connections"] += 1
            connected_at = time.monotonic()
        sock.settimeout(0.02)

    def closed():
        nonlocal sock, connected_at
        summary["closed_by_daemon"] += 1
        if connected_at is not None:
            summary["longest_connection_s"] = max(summary["longest_connection_s"],
                                                  time.monotonic() - connected_at)
        sock.close()
        sock = None
        connected_at = None

    start = time.monotonic()
    next_burst = 0.0
    while time.monotonic() - start < args.seconds:
        now = time.monotonic() - start
        if sock is None:
            try:
                connect()
            except OSError:
                time.sleep(0.1)
                continue
        if now >= next_burst:
            next_burst = now + 0.05
            boot_ms = int(now * 1000)
            link.heartbeat_send(
                mav.MAV_TYPE_QUADROTOR, mav.MAV_AUTOPILOT_ARDUPILOTMEGA,
                mav.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | mav.MAV_MODE_FLAG_SAFETY_ARMED,
                ARDUCOPTER_LAND, mav.MAV_STATE_ACTIVE)
            link.global_position_int_send(
                boot_ms, int((args.lat + 1.0) * 1e7), int(args.lon * 1e7),
                500000, 20000, 0, 0, 0, 0)
            for command in (mav.MAV_CMD_COMPONENT_ARM_DISARM, mav.MAV_CMD_DO_SET_MODE):
                link.command_ack_send(command, mav.MAV_RESULT_DENIED, 0, 0, 1, 191)
            frames, sink.frames = sink.frames, []
            for frame in frames:
                try:
                    if args.udp:
                        sock.sendto(frame, peer)
                    else:
                        sock.sendall(frame)
                    summary["sent"] += 1
                except OSError:
                    summary["send_errors"] += 1
                    if args.tcp:
                        closed()
                        break
        if sock is None:
            continue
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            if args.tcp:
                closed()
            continue
        if args.tcp and not data:
            closed()
            continue
        for message in link.parse_buffer(data) or []:
            kind = message.get_type()
            summary["received"][kind] = summary["received"].get(kind, 0) + 1
    if args.tcp and connected_at is not None:
        summary["longest_connection_s"] = max(summary["longest_connection_s"],
                                              time.monotonic() - connected_at)
    print("spoofer: summary " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
