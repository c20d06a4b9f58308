#!/usr/bin/env python3
"""Round trips through `flight-companion ground --fleet` with the official MCP Python SDK:
N `get_status` calls to one drone, then N `emergency_stop` calls (each followed by an
untimed `reset_emergency_stop`, so the token must be ADMIN's), one at a time. For each phase:
p50/p99/max of the call's round trip as the client sees it, and the CPU time per call of
each process given with --pid (from /proc/PID/stat utime+stime; the ground process is found
as this script's child). Prints one line `bench: {JSON}`.

Usage: fleet_bench.py BINARY CONFIG --fleet PATTERN --drone NAME -n 100 [--pid NAME=PID ...]
"""

import argparse
import json
import os
import sys
import time
from datetime import timedelta

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line; 12 and 13 after the command name.
    return int(fields[11]) + int(fields[12])


def children_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))]


async def phase(name, n, pids, call):
    before = {k: cpu_ticks(p) for k, p in pids.items()}
    times_ms = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times_ms.append((time.perf_counter() - started) * 1000)
    after = {k: cpu_ticks(p) for k, p in pids.items()}
    t = sorted(times_ms)
    return {
        "calls": n,
        "p50_ms": round(percentile(t, 50), 2),
        "p99_ms": round(percentile(t, 99), 2),
        "max_ms": round(t[-1], 2),
        "cpu_us_per_call": {k: round((after[k] - before[k]) / CLOCK_TICKS_PER_S * 1e6 / n) for k in pids},
    }


async def run(args):
    pids = dict((k, int(v)) for k, v in (p.split("=", 1) for p in args.pid))
    params = StdioServerParameters(command=args.binary, args=["ground", "--config", args.config, "--fleet", args.fleet])
    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=30)) as session:
            await session.initialize()
            ground = [c for c in children_of(os.getpid())]
            if ground:
                pids["ground"] = ground[0]
            deadline = time.monotonic() + 30
            while True:
                r = await session.call_tool("get_status", {"drone": args.drone})
                if not r.isError:
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"FAIL: {args.drone} never answered: {r}")
                await anyio.sleep(0.2)

            async def status():
                r = await session.call_tool("get_status", {"drone": args.drone})
                if r.isError:
                    raise RuntimeError(f"get_status: {r}")

            results = {"get_status": await phase("get_status", args.n, pids, status)}
            # Each e-stop is timed alone: the reset after it is not part of its round trip.
            stop_times = []
            before = {k: cpu_ticks(p) for k, p in pids.items()}
            for _ in range(args.n):
                started = time.perf_counter()
                r = await session.call_tool("emergency_stop", {"drone": args.drone, "reason": "bench"})
                stop_times.append((time.perf_counter() - started) * 1000)
                if r.isError:
                    sys.exit(f"FAIL: emergency_stop: {r}")
                reset = await session.call_tool("reset_emergency_stop", {"drone": args.drone})
                if reset.isError:
                    sys.exit(f"FAIL: reset_emergency_stop: {reset}")
            after = {k: cpu_ticks(p) for k, p in pids.items()}
            t = sorted(stop_times)
            results["emergency_stop"] = {
                "calls": args.n,
                "p50_ms": round(percentile(t, 50), 2),
                "p99_ms": round(percentile(t, 99), 2),
                "max_ms": round(t[-1], 2),
                "cpu_us_per_stop_and_reset": {k: round((after[k] - before[k]) / CLOCK_TICKS_PER_S * 1e6 / args.n) for k in pids},
            }
            print("bench: " + json.dumps(results), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("config")
    ap.add_argument("--fleet", required=True)
    ap.add_argument("--drone", required=True)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--pid", action="append", default=[])
    anyio.run(run, ap.parse_args())


if __name__ == "__main__":
    main()
