#!/usr/bin/env python3
"""The official MCP Python SDK's stdio client against `flight-companion ground --fleet`.

Launches `BINARY ground --config CONFIG --fleet PATTERN`, waits until `list_drones` shows
every expected drone online, flies two drones at once (takeoff, then goto, concurrently, each
with its own progress token), calls `emergency_stop_all` and checks that every drone latched
within one second of the call (from the call's result and from each drone's own get_status
read through list_drones), then kills one drone's daemon with SIGKILL and checks that it shows
offline in `list_drones` and that its tools say so.
Prints one line per check ("ok: ..."); exits 1 on the first failure with details.

Usage: fleet_sdk_client.py BINARY CONFIG --fleet PATTERN --drone NAME ... --fly A --fly B
       --kill NAME=PID
"""

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import anyio
import mcp.types as mt
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

HOME_LAT_DEG = 47.397742
HOME_LON_DEG = 8.545594


class Failure(Exception):
    pass


def ok(message):
    print(f"ok: {message}", flush=True)


def offset(north_m, east_m):
    lat = HOME_LAT_DEG + north_m / 111_320.0
    lon = HOME_LON_DEG + east_m / (111_320.0 * math.cos(math.radians(HOME_LAT_DEG)))
    return lat, lon


def structured(result):
    if result.structuredContent is not None:
        return result.structuredContent
    try:
        return json.loads(result.content[0].text)
    except (ValueError, IndexError, AttributeError):
        return {}


def text_of(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


async def list_drones(session):
    result = await session.call_tool("list_drones", {})
    if result.isError:
        raise Failure(f"list_drones failed: {text_of(result)}")
    return {d["name"]: d for d in structured(result)["drones"]}


async def wait_for(session, what, predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while True:
        drones = await list_drones(session)
        if predicate(drones):
            return drones
        if time.monotonic() > deadline:
            raise Failure(f"{what} not within {timeout_s} s: {json.dumps(drones)}")
        await anyio.sleep(0.3)


async def fly(session, drone, progress_seen, tag):
    """request_control, takeoff (retried while the vehicle is not ready), goto."""
    control = await session.call_tool("request_control", {"drone": drone})
    if control.isError:
        raise Failure(f"{drone}: request_control: {text_of(control)}")

    async def progress(p, total, message):
        progress_seen.setdefault(drone, []).append(p)

    deadline = time.monotonic() + 30
    while True:
        takeoff = await session.call_tool(
            "takeoff", {"drone": drone, "altitude_m": 8.0}, progress_callback=progress
        )
        outcome = structured(takeoff).get("outcome")
        if outcome == "completed":
            break
        if time.monotonic() > deadline:
            raise Failure(f"{drone}: takeoff: {text_of(takeoff)}")
        await anyio.sleep(0.5)
    ok(f"{drone}: takeoff completed")
    lat, lon = offset(*tag)
    goto = await session.call_tool(
        "goto",
        {"drone": drone, "latitude_deg": lat, "longitude_deg": lon, "altitude_m": 10.0},
        progress_callback=progress,
    )
    if structured(goto).get("outcome") != "completed":
        raise Failure(f"{drone}: goto: {text_of(goto)}")
    ok(f"{drone}: goto completed")


async def run(args):
    kill_name, kill_pid = args.kill.split("=", 1)
    params = StdioServerParameters(
        command=args.binary, args=["ground", "--config", args.config, "--fleet", args.fleet]
    )
    list_changed = anyio.Event()

    async def on_message(message):
        if isinstance(message, mt.ServerNotification) and isinstance(
            message.root, mt.ToolListChangedNotification
        ):
            list_changed.set()

    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        async with ClientSession(
            read, write, read_timeout_seconds=timedelta(seconds=60), message_handler=on_message
        ) as session:
            init = await session.initialize()
            ok(f"initialize -> {init.serverInfo.name}, protocol {init.protocolVersion}")

            expected = set(args.drone)
            drones = await wait_for(
                session,
                "every drone online with a session",
                lambda d: expected <= set(d)
                and all(d[n]["online"] and d[n]["session"] == "ready" and "armed" in d[n] for n in expected),
                30,
            )
            ok(f"list_drones -> {', '.join(sorted(drones))}, all online")
            for name in expected:
                d = drones[name]
                for key in ["armed", "mode", "position", "battery", "emergency_stop", "lease_holder"]:
                    if key not in d:
                        raise Failure(f"{name}: no `{key}` in {d}")
            ok("list_drones: armed, mode, position, battery, emergency_stop, lease_holder for each")

            tools = {t.name: t for t in (await session.list_tools()).tools}
            for name in ["list_drones", "emergency_stop_all", "get_status", "takeoff", "goto"]:
                if name not in tools:
                    raise Failure(f"no {name} in {sorted(tools)}")
            if "drone" not in tools["goto"].inputSchema.get("required", []):
                raise Failure(f"goto's drone argument is not required: {tools['goto'].inputSchema}")
            ok("tools/list: the drones' tools with a required `drone` argument, and the fleet tools")

            unknown = await session.call_tool("get_status", {"drone": "fleet/nobody"})
            if not unknown.isError or "unknown drone" not in text_of(unknown):
                raise Failure(f"unknown drone not refused clearly: {unknown}")
            ok("a call to an unknown drone is refused with the reason")

            # Two drones flown at once, each call with its own progress token.
            progress_seen = {}
            async with anyio.create_task_group() as group:
                for i, name in enumerate(args.fly):
                    group.start_soon(fly, session, name, progress_seen, (25.0, -20.0 + 40.0 * i))
            for name in args.fly:
                if not progress_seen.get(name):
                    raise Failure(f"no progress from {name}: {progress_seen}")
            ok(f"flew {' and '.join(args.fly)} at once, progress from both ({', '.join(f'{n}: {len(p)}' for n, p in progress_seen.items())})")

            drones = await list_drones(session)
            holders = {n: drones[n]["lease_holder"] for n in args.fly}
            if any(h is None for h in holders.values()):
                raise Failure(f"list_drones names no lease holder of a drone just flown: {holders}")
            ok(f"list_drones names each flown drone's lease holder: {holders}")

            started = time.monotonic()
            stop = await session.call_tool("emergency_stop_all", {"reason": "fleet test"})
            elapsed_s = time.monotonic() - started
            result = structured(stop)
            print(f"emergency_stop_all answered in {elapsed_s * 1000:.0f} ms: {text_of(stop)}", flush=True)
            if stop.isError or not result["all_online_latched"]:
                raise Failure(f"emergency_stop_all: {result}")
            if elapsed_s > 1.0:
                raise Failure(f"emergency_stop_all took {elapsed_s:.3f} s")
            latched = [d["drone"] for d in result["drones"] if d["latched"] is True]
            if set(latched) != expected:
                raise Failure(f"latched {latched}, expected {sorted(expected)}")
            # Each daemon's own status (published at most every 100 ms), within 1 s of the call.
            while True:
                drones = await list_drones(session)
                waiting = [n for n in expected if drones[n]["emergency_stop"]["latched"] is not True]
                seen_s = time.monotonic() - started
                if not waiting:
                    break
                if seen_s > 1.0:
                    raise Failure(f"{waiting}: get_status does not show the stop latched 1 s after the call: {drones}")
                await anyio.sleep(0.05)
            ok(f"emergency_stop_all latched all {len(expected)} within {elapsed_s * 1000:.0f} ms; each drone's get_status says latched {seen_s * 1000:.0f} ms after the call")

            list_changed = anyio.Event()
            os.kill(int(kill_pid), signal.SIGKILL)
            await wait_for(session, f"{kill_name} offline", lambda d: d[kill_name]["online"] is False, 15)
            ok(f"{kill_name} killed with SIGKILL -> offline in list_drones")
            with anyio.fail_after(5):
                await list_changed.wait()
            ok("notifications/tools/list_changed when it went")
            gone = await session.call_tool("get_status", {"drone": kill_name})
            if not gone.isError or "offline" not in text_of(gone):
                raise Failure(f"{kill_name}'s tool does not say offline: {gone}")
            ok(f"{kill_name}'s tools report it offline: {text_of(gone)}")
            others = await list_drones(session)
            for name in expected - {kill_name}:
                if not others[name]["online"]:
                    raise Failure(f"{name} went offline too: {others[name]}")
            ok("the other drones stay online")
            CHECKS_DONE.set()


# Set once every check has passed: after it, only the SDK's own teardown can still fail.
CHECKS_DONE = threading.Event()


def teardown_race(error):
    """True when `error` holds only the SDK's stdio streams closing behind a finished
    session: a notification the bridge sent while `stdio_client` was closing finds the
    session's stream already closed (the SDK's reader raises BrokenResourceError)."""
    if isinstance(error, BaseExceptionGroup):
        return all(teardown_race(e) for e in error.exceptions)
    return isinstance(error, (anyio.BrokenResourceError, anyio.ClosedResourceError))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("config")
    parser.add_argument("--fleet", required=True)
    parser.add_argument("--drone", action="append", required=True)
    parser.add_argument("--fly", action="append", required=True)
    parser.add_argument("--kill", required=True)
    args = parser.parse_args()
    try:
        anyio.run(run, args)
    except Exception as e:  # noqa: BLE001 (any failure is reported and fails the run)
        if CHECKS_DONE.is_set() and teardown_race(e):
            print(f"note: the SDK's streams closed behind the finished session ({type(e).__name__})", flush=True)
            ok("all checks passed with the official MCP Python SDK")
            return
        detail = e
        while isinstance(detail, BaseExceptionGroup) and detail.exceptions:
            # The client's own failure, not the SDK's streams closing behind it.
            failures = [x for x in detail.exceptions if isinstance(x, (Failure, BaseExceptionGroup))]
            detail = failures[0] if failures else detail.exceptions[0]
        print(f"FAIL: {type(detail).__name__}: {detail}", flush=True)
        sys.exit(1)
    ok("all checks passed with the official MCP Python SDK")


if __name__ == "__main__":
    main()
