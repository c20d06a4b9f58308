#!/usr/bin/env python3
"""Telemetry ingest side by side (issue 17): the same ArduCopter telemetry, made with
pymavlink, fed at the same time to flight-companion, MAVProxy, mavsdk_server, mavlink-mcp and
the project's own single-thread FrameDecoder (examples/decode_floor.rs, the floor) and the same
decoder read on a single-threaded tokio runtime (decode_floor_tokio), each on a
TCP connection of its own; prints CPU time per message (the process's CPU-time clock, nanoseconds
on a CPU; see benches/proc_cpu.py) and memory (VmRSS of
/proc/PID/status) of each.

The telemetry: 31 message types at ArduCopter's stream rates, about 2,000 messages/s with
every field set (43.5 bytes a frame: about 93 % of a 921,600-baud link), written 10 messages
at a time every 5 ms, as a serial port's driver delivers them. Each consumer connects out to its own port (`tcpout`), as to a
telemetry radio bridged to TCP; the driver counts the messages it wrote to each one.

Run through benches/peers/run.sh, which builds the binaries and the peers' venv.
Usage: drive.py --fc BINARY --floor BINARY --venv VENV [--seconds 30] [--only a,b,...]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from proc_cpu import cpu_delta, cpu_s, wakes  # noqa: E402

os.environ.setdefault("MAVLINK20", "1")
from pymavlink import mavutil  # noqa: E402

mavlink = mavutil.mavlink

# ArduCopter's telemetry at SRx rates that fill ~82 % of a 921,600-baud link: (message,
# rate Hz). The set ArduPilot streams (GCS_MAVLink stream groups) plus the ones it sends on
# change or at 1-2 Hz; 31 types.
MIX = [
    ("HEARTBEAT", 1), ("SYS_STATUS", 2), ("SYSTEM_TIME", 2), ("POWER_STATUS", 2),
    ("MEMINFO", 2), ("MISSION_CURRENT", 2), ("EXTENDED_SYS_STATE", 2), ("HWSTATUS", 2),
    ("BATTERY_STATUS", 2), ("HOME_POSITION", 1), ("GPS_GLOBAL_ORIGIN", 1), ("TERRAIN_REPORT", 2),
    ("EKF_STATUS_REPORT", 10), ("VIBRATION", 10), ("GPS_RAW_INT", 10), ("SCALED_PRESSURE2", 10),
    ("RAW_IMU", 100), ("SCALED_IMU2", 100), ("SCALED_IMU3", 100), ("SCALED_PRESSURE", 50),
    ("ATTITUDE", 200), ("AHRS", 100), ("AHRS2", 100), ("GLOBAL_POSITION_INT", 100),
    ("LOCAL_POSITION_NED", 100), ("VFR_HUD", 100), ("NAV_CONTROLLER_OUTPUT", 100),
    ("SERVO_OUTPUT_RAW", 200), ("RC_CHANNELS", 200), ("ESC_TELEMETRY_1_TO_4", 200),
    ("POSITION_TARGET_GLOBAL_INT", 150),
]
BURST = 10
PERIOD_S = 0.005


def enum_value(enum):
    """The lowest value the dialect defines for `enum` (a value every parser accepts)."""
    entries = mavlink.enums.get(enum, {})
    values = [v for v, e in entries.items() if not e.name.endswith("_ENUM_END")]
    return min(values) if values else 0


def default_message(name, t_ms):
    """A message of type `name` with every field set (MAVLink 2 trims trailing zero bytes
    of a payload, so zeros would make the frames shorter than real ones): enums at a value
    the dialect defines, numbers small and non-zero, text filled."""
    cls = getattr(mavlink, "MAVLink_%s_message" % name.lower())
    enums = getattr(cls, "fieldenums_by_name", {})
    values = []
    for k, (field, length) in enumerate(zip(cls.ordered_fieldnames, cls.array_lengths)):
        ftype = cls.fieldtypes[cls.fieldnames.index(field)]
        if ftype == "char":
            values.append((field, b"flightcompanion!"[: max(1, length)]))
        elif field in enums:
            value = enum_value(enums[field])
            values.append((field, [value] * length if length else value))
        elif ftype in ("float", "double"):
            values.append((field, [0.25 * (k + 1)] * length if length else 0.25 * (k + 1)))
        else:
            values.append((field, [7] * length if length else 7))
    kwargs = dict(values)
    for key in ("time_boot_ms",):
        if key in kwargs:
            kwargs[key] = t_ms
    for key in ("time_usec", "time_unix_usec"):
        if key in kwargs:
            kwargs[key] = t_ms * 1000
    if name == "HEARTBEAT":
        kwargs.update(type=mavlink.MAV_TYPE_QUADROTOR, autopilot=mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA,
                      base_mode=mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, custom_mode=5,
                      system_status=mavlink.MAV_STATE_STANDBY, mavlink_version=3)
    if name in ("GLOBAL_POSITION_INT", "GPS_RAW_INT", "HOME_POSITION", "GPS_GLOBAL_ORIGIN",
                "POSITION_TARGET_GLOBAL_INT", "TERRAIN_REPORT"):
        for key in ("lat", "lat_int", "latitude"):
            if key in kwargs:
                kwargs[key] = 473977420
        for key in ("lon", "lon_int", "longitude"):
            if key in kwargs:
                kwargs[key] = 85455940
        if "fix_type" in kwargs:
            kwargs["fix_type"] = 3
        if "satellites_visible" in kwargs:
            kwargs["satellites_visible"] = 12
    if name == "SYS_STATUS":
        kwargs.update(voltage_battery=12600, current_battery=500, battery_remaining=80)
    if name == "EXTENDED_SYS_STATE":
        kwargs.update(landed_state=mavlink.MAV_LANDED_STATE_ON_GROUND)
    if "q" in kwargs and isinstance(kwargs["q"], list):
        kwargs["q"] = [1.0, 0.0, 0.0, 0.0]
    return cls(*[kwargs[f] for f in cls.fieldnames])


def schedule():
    """One second of telemetry as a list of message names, the rates spread evenly."""
    events = []
    for name, rate in MIX:
        for i in range(rate):
            events.append(((i + 0.5) / rate, name))
    events.sort()
    return [name for _, name in events]


def build_stream(seconds):
    """`seconds` of packed telemetry as writes of BURST messages, sequence numbers running
    on (a multiple of 256 messages, so the ring wraps without a gap)."""
    per_second = schedule()
    total = len(per_second) * seconds
    total -= total % 256
    mav = mavlink.MAVLink(None, srcSystem=1, srcComponent=1)
    writes, burst = [], []
    for i in range(total):
        name = per_second[i % len(per_second)]
        t_ms = 1000 * (i // len(per_second)) + 1000 * (i % len(per_second)) // len(per_second)
        burst.append(default_message(name, t_ms).pack(mav))
        if len(burst) == BURST:
            writes.append(b"".join(burst))
            burst = []
    return writes, len(per_second)


class Feed:
    """One consumer's port: accepts one connection and writes the stream on schedule."""

    def __init__(self, name, writes):
        self.name = name
        self.writes = writes
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.messages = 0
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.listener.accept()
        except OSError as e:
            self.error = str(e)
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connected.set()
        i, next_at = 0, time.monotonic()
        try:
            while not self.stop.is_set():
                conn.sendall(self.writes[i % len(self.writes)])
                self.messages += BURST
                i += 1
                next_at += PERIOD_S
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.5:
                    next_at = time.monotonic()  # far behind (a stalled reader): no burst
        except OSError as e:
            self.error = str(e)
        finally:
            conn.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def callgrind_control(*args):
    subprocess.run(["callgrind_control"] + [str(a) for a in args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def callgrind_instructions(pid, work, name):
    """Dumps the counts since they were zeroed and returns their total of instructions (Ir),
    or None when the dump cannot be read."""
    callgrind_control("-d", pid)
    total = 0
    for entry in os.listdir(work):
        if entry.startswith(name + ".callgrind"):
            with open(os.path.join(work, entry)) as f:
                for line in f:
                    if line.startswith("totals:") or line.startswith("summary:"):
                        total += int(line.split()[1])
                        break
            os.rename(os.path.join(work, entry), os.path.join(work, "dumped-" + entry))
    return total or None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fc", required=True, help="the flight-companion binary")
    parser.add_argument("--floor", required=True, help="the decode_floor example binary")
    parser.add_argument("--venv", required=True, help="the peers' venv (MAVProxy, mavsdk-grpc, mavlink-mcp)")
    parser.add_argument("--seconds", type=int, default=30, help="measurement window")
    parser.add_argument("--settle", type=int, default=10, help="seconds before the window")
    parser.add_argument("--fc-before", default="",
                        help="another flight-companion binary (an older build) fed in the same run, "
                             "as `flight-companion-before`")
    parser.add_argument("--only", default="", help="comma-separated subset of consumers")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--callgrind", action="store_true",
                        help="run the Rust consumers (the daemons and the floors) under valgrind's "
                             "callgrind and print the user-space instructions each executes per "
                             "message in the window (repeatable on a loaded machine; the kernel's "
                             "share is not counted)")
    args = parser.parse_args()
    args.fc, args.floor, args.venv = (os.path.abspath(p) for p in (args.fc, args.floor, args.venv))

    writes, rate = build_stream(13)
    work = tempfile.mkdtemp(prefix="fc-peers-")
    venv_bin = os.path.join(args.venv, "bin")
    site = subprocess.run([os.path.join(venv_bin, "python"), "-c",
                           "import mavsdk_grpc, os; print(os.path.dirname(mavsdk_grpc.__file__))"],
                          capture_output=True, text=True).stdout.strip()
    mavsdk_server = os.path.join(site, "bin", "mavsdk_server")

    def fc_command(port, binary=None, name="fc"):
        config = os.path.join(work, name + ".toml")
        with open(config, "w") as f:
            # The audit key is made beside the log's directory: one directory per daemon, or
            # two started at once race to make the same key.
            f.write('[vehicle]\nlink = "tcpout:127.0.0.1:%d"\n[mqtt]\nenabled = false\n'
                    '[estop]\nsocket_path = ""\n[audit]\ndir = "%s"\n'
                    % (port, os.path.join(work, name, "audit")))
        return [binary or args.fc, "run", "--config", config]

    consumers = {
        "decode_floor": lambda port: [args.floor, "tcp:127.0.0.1:%d" % port],
        # The same decoder on a single-threaded tokio runtime, as the daemon's link task reads.
        "decode_floor_tokio": lambda port: [args.floor, "--tokio", "tcp:127.0.0.1:%d" % port],
        "flight-companion": fc_command,
        "mavsdk_server": lambda port: [mavsdk_server, "-p", "0", "tcpout://127.0.0.1:%d" % port],
        "mavlink-mcp": lambda port: [os.path.join(venv_bin, "mavlink-mcp"), "--conn",
                                     "tcp:127.0.0.1:%d" % port],
        "MAVProxy": lambda port: [os.path.join(venv_bin, "python"), os.path.join(venv_bin, "mavproxy.py"),
                                  "--master=tcp:127.0.0.1:%d" % port, "--daemon",
                                  "--state-basedir=%s" % os.path.join(work, "mavproxy")],
    }
    if args.fc_before:
        before = os.path.abspath(args.fc_before)
        consumers["flight-companion-before"] = lambda port: fc_command(port, before, "fc-before")
    chosen = [c for c in consumers if not args.only or c in args.only.split(",")]
    counted = [c for c in chosen if c.startswith(("flight-companion", "decode_floor"))] \
        if args.callgrind else []
    feeds, procs, logs = {}, {}, {}
    env = dict(os.environ, RUST_LOG="warn")
    for name in chosen:
        feeds[name] = Feed(name, writes)
        logs[name] = open(os.path.join(work, name + ".log"), "w")
        stdin = subprocess.PIPE if name == "mavlink-mcp" else subprocess.DEVNULL
        command = consumers[name](feeds[name].port)
        if name in counted:
            command = ["valgrind", "--tool=callgrind",
                       "--callgrind-out-file=" + os.path.join(work, name + ".callgrind")] + command
        procs[name] = subprocess.Popen(command, stdin=stdin,
                                       stdout=logs[name] if name != "mavlink-mcp" else subprocess.PIPE,
                                       stderr=logs[name], cwd=work, env=env)
    if "mavlink-mcp" in procs:
        # mavlink-mcp opens its link on the first tool call: initialize, then get_status.
        p = procs["mavlink-mcp"]
        for message in (
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "peers-drive", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "get_status", "arguments": {}}},
        ):
            p.stdin.write((json.dumps(message) + "\n").encode())
            p.stdin.flush()
        threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    deadline = time.monotonic() + 30
    for name, feed in feeds.items():
        if not feed.connected.wait(max(0.1, deadline - time.monotonic())):
            print("%s did not connect within 30 s (see %s)" % (name, os.path.join(work, name + ".log")),
                  file=sys.stderr)
    time.sleep(args.settle)
    for name in counted:
        callgrind_control("-z", procs[name].pid)
    start = {n: (cpu_s(p.pid), feeds[n].messages, wakes(p.pid))
             for n, p in procs.items() if p.poll() is None}
    time.sleep(args.seconds)
    ended = {n: feeds[n].messages for n in counted}
    instructions = {n: callgrind_instructions(procs[n].pid, work, n) for n in counted}
    rows = []
    for name, p in procs.items():
        if name not in start or p.poll() is not None:
            rows.append({"consumer": name, "error": "exited (%s)" % p.returncode})
            continue
        cpu = cpu_delta(start[name][0], cpu_s(p.pid))
        messages = feeds[name].messages - start[name][1]
        woken = wakes(p.pid) - start[name][2]
        rows.append({"consumer": name, "messages": messages, "cpu_s": cpu,
                     "wakes_per_write": woken * BURST / max(1, messages),
                     "us_per_message": 1e6 * cpu / max(1, messages),
                     "core_percent": 100 * cpu / args.seconds, "rss_mib": rss_kib(p.pid) / 1024})
        if instructions.get(name):
            rows[-1]["instructions_per_message"] = instructions[name] / max(
                1, ended[name] - start[name][1])
    for feed in feeds.values():
        feed.stop.set()
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
    floor = next((r["us_per_message"] for r in rows if r["consumer"] == "decode_floor"
                  and "us_per_message" in r), None)
    print("telemetry: %d messages/s (%d types), %d per write every %.0f ms; window %d s after %d s"
          % (rate, len(MIX), BURST, PERIOD_S * 1000, args.seconds, args.settle))
    print("%-18s %10s %12s %10s %10s %10s %12s" % ("consumer", "messages", "CPU us/msg", "x floor",
                                                   "% of core", "RSS MiB", "wakes/write"))
    for r in rows:
        if "error" in r:
            print("%-18s %s" % (r["consumer"], r["error"]))
            continue
        ratio = r["us_per_message"] / floor if floor else float("nan")
        print("%-18s %10d %12.2f %10.1f %10.2f %10.1f %12.2f" % (r["consumer"], r["messages"],
              r["us_per_message"], ratio, r["core_percent"], r["rss_mib"], r["wakes_per_write"]))
    if counted:
        base = next((r.get("instructions_per_message") for r in rows
                     if r["consumer"] == "decode_floor"), None)
        print("under callgrind (CPU and wake-ups above are valgrind's): user-space instructions "
              "per message")
        for r in rows:
            if "instructions_per_message" in r:
                ratio = r["instructions_per_message"] / base if base else float("nan")
                print("%-26s %10.0f %8.2fx floor" % (r["consumer"], r["instructions_per_message"],
                                                      ratio))
    if args.json:
        print(json.dumps(rows))
    print("logs in %s" % work, file=sys.stderr)


if __name__ == "__main__":
    main()
