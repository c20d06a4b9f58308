#!/usr/bin/env python3
"""The official MCP Python SDK's stdio client against `flight-companion ground`.

Launches `BINARY ground --config CONFIG` (or `BINARY --config CONFIG` with `--standalone`, for
`flight-companion-ground`), initializes (protocol 2025-11-25), lists the tools,
calls get_status, reads and subscribes vehicle://status and waits for one
notifications/resources/updated relayed by the bridge.
Prints one line per check ("ok: ..."); exits 1 on the first failure with details.

Usage: mcp_sdk_client.py BINARY CONFIG [--server-name NAME] [--standalone]
"""

import argparse
import sys
from datetime import timedelta

import anyio
import mcp.types as mt
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


class Failure(Exception):
    pass


def ok(message):
    print(f"ok: {message}", flush=True)


async def run(binary, config, server_name, standalone):
    args = ([] if standalone else ["ground"]) + ["--config", config]
    if server_name:
        args += ["--server-name", server_name]
    params = StdioServerParameters(command=binary, args=args)
    updated = anyio.Event()

    async def on_message(message):
        if isinstance(message, mt.ServerNotification) and isinstance(
            message.root, mt.ResourceUpdatedNotification
        ):
            if str(message.root.params.uri) == "vehicle://status":
                updated.set()

    # The bridge's logs go to stderr; the SDK passes them to ours.
    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        async with ClientSession(
            read, write, read_timeout_seconds=timedelta(seconds=20), message_handler=on_message
        ) as session:
            init = await session.initialize()
            if init.protocolVersion != mt.LATEST_PROTOCOL_VERSION:
                raise Failure(f"protocolVersion {init.protocolVersion}, expected {mt.LATEST_PROTOCOL_VERSION}")
            ok(f"initialize through the bridge -> {init.serverInfo.name} {init.serverInfo.version}, "
               f"protocol {init.protocolVersion}")

            tools = await session.list_tools()
            names = [t.name for t in tools.tools]
            if "get_status" not in names:
                raise Failure(f"no get_status among the tools: {names}")
            ok(f"tools/list -> {len(names)} tools: {', '.join(names)}")

            result = await session.call_tool("get_status", {})
            if result.isError:
                raise Failure(f"get_status returned an error: {result}")
            ok("tools/call get_status -> " + ("structuredContent" if result.structuredContent else "content"))

            read_result = await session.read_resource("vehicle://status")
            if not read_result.contents:
                raise Failure("resources/read vehicle://status returned no contents")
            ok("resources/read vehicle://status")

            await session.subscribe_resource("vehicle://status")
            with anyio.fail_after(10):
                await updated.wait()
            ok("resources/subscribe vehicle://status -> notifications/resources/updated relayed")

            await session.send_ping()
            ok("ping")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("config")
    parser.add_argument("--server-name")
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="BINARY is the bridge itself (flight-companion-ground), not the daemon's binary",
    )
    args = parser.parse_args()
    try:
        anyio.run(run, args.binary, args.config, args.server_name, args.standalone)
    except Exception as e:  # noqa: BLE001 (any failure is reported and fails the run)
        detail = e
        while isinstance(detail, BaseExceptionGroup) and detail.exceptions:
            detail = detail.exceptions[0]
        print(f"FAIL: {type(detail).__name__}: {detail}", flush=True)
        sys.exit(1)
    ok("all checks passed with the official MCP Python SDK")


if __name__ == "__main__":
    main()
