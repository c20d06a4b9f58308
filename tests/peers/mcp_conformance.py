#!/usr/bin/env python3
"""Every tool of the drone through the official MCP Python SDK and `flight-companion ground`,
each structured result checked against the tool's outputSchema with a JSON Schema validator.

Two stdio sessions through two bridges: an OPERATOR (ground.toml's token) and an ADMIN
(`--token tokens/admin.jwt`), each with its own certificate (`--admin-config`: a broker that
binds client ids to certificates, as dev-setup's does, lets one certificate hold one
connection). Together they call every tool either of them is listed, so a
tool added later is checked too (the run fails if a listed tool was never called):
- every inputSchema and outputSchema is a valid JSON Schema 2020-12 (Draft202012Validator
  .check_schema) using only the formats JSON Schema defines (the official TypeScript SDK warns
  about each other one), and no `type` array (the MCP Inspector's portability check warns
  about each: single-type dialects such as Gemini's function declarations drop them);
- every result with structuredContent, errors included (a refused goto), validates against
  the tool's outputSchema (jsonschema, with format checking);
- with --camera the camera's four tools are listed and called; without, none is listed.

The vehicle (the simulator behind the daemon) takes off, turns, moves, lands; the emergency
stop is triggered on the ground at the end and reset by the ADMIN.

Prints one line per check ("ok: ..."); exits 1 on the first failure with details.

Usage: mcp_conformance.py BINARY DIR/ground.toml [--admin-config FILE] [--camera]
"""

import argparse
import os
import sys
from datetime import timedelta

import anyio
import jsonschema
from jsonschema import Draft202012Validator, FormatChecker
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

# JSON Schema 2020-12, validation vocabulary, section 7.3.
STANDARD_FORMATS = {
    "date-time", "date", "time", "duration", "email", "idn-email", "hostname",
    "idn-hostname", "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid",
    "uri-template", "json-pointer", "relative-json-pointer", "regex",
}
CAMERA_TOOLS = {"capture_image", "camera_status", "list_captures", "get_capture"}


class Failure(Exception):
    pass


def ok(message):
    print(f"ok: {message}", flush=True)


def formats_in(schema):
    found = set()
    if isinstance(schema, dict):
        if isinstance(schema.get("format"), str):
            found.add(schema["format"])
        for v in schema.values():
            found |= formats_in(v)
    elif isinstance(schema, list):
        for v in schema:
            found |= formats_in(v)
    return found


def type_arrays_in(schema, path="#"):
    found = []
    if isinstance(schema, dict):
        if isinstance(schema.get("type"), list):
            found.append(path)
        for k, v in schema.items():
            found += type_arrays_in(v, f"{path}/{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            found += type_arrays_in(v, f"{path}/{i}")
    return found


class Checker:
    def __init__(self):
        self.schemas = {}  # tool -> outputSchema
        self.listed = set()
        self.called = set()
        self.validated = 0

    def check_list(self, who, tools):
        for tool in tools:
            self.listed.add(tool.name)
            for key, schema in (("inputSchema", tool.inputSchema), ("outputSchema", tool.outputSchema)):
                if schema is None:
                    raise Failure(f"{who}: {tool.name} has no {key}")
                try:
                    Draft202012Validator.check_schema(schema)
                except jsonschema.SchemaError as e:
                    raise Failure(f"{tool.name} {key} is not a valid JSON Schema 2020-12: {e.message}")
                odd = formats_in(schema) - STANDARD_FORMATS
                if odd:
                    raise Failure(f"{tool.name} {key} uses formats JSON Schema does not define: {sorted(odd)}")
                if type_arrays_in(schema):
                    raise Failure(f"{tool.name} {key} has a `type` array (not portable to "
                                  f"single-type dialects): {type_arrays_in(schema)[:3]}")
            self.schemas[tool.name] = tool.outputSchema

    def check_result(self, name, result):
        self.called.add(name)
        if result.structuredContent is None:
            if not result.isError:
                raise Failure(f"{name}: a success without structuredContent: {result}")
            return
        validator = Draft202012Validator(self.schemas[name], format_checker=FormatChecker())
        errors = sorted(validator.iter_errors(result.structuredContent), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            raise Failure(
                f"{name}: structuredContent does not validate against its outputSchema at "
                f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
            )
        self.validated += 1


async def call(session, checker, name, arguments, want_outcome=None):
    for _ in range(20):
        try:
            result = await session.call_tool(name, arguments, read_timeout_seconds=timedelta(seconds=90))
            break
        except McpError as e:
            # The drone's motion rate limit: wait as long as it says.
            if e.error.code != -32029:
                raise
            await anyio.sleep((e.error.data or {}).get("retry_after_ms", 500) / 1000 + 0.05)
    else:
        raise Failure(f"{name}: still rate limited after 20 tries")
    checker.check_result(name, result)
    text = result.content[0].text if result.content and hasattr(result.content[0], "text") else ""
    if want_outcome is not None:
        outcome = (result.structuredContent or {}).get("outcome")
        if outcome != want_outcome:
            raise Failure(f"{name} {arguments}: outcome {outcome}, expected {want_outcome}: {text}")
    ok(f"{name} -> {'error' if result.isError else 'ok'}"
       + (" (structuredContent valid)" if result.structuredContent is not None else ""))
    return result


def north_of(lat, lon, metres):
    return lat + metres / 111_195.0, lon


async def run(binary, config, admin_config, camera):
    base = os.path.dirname(os.path.abspath(config))
    checker = Checker()
    operator = StdioServerParameters(command=binary, args=["ground", "--config", config])
    admin = StdioServerParameters(
        command=binary,
        args=["ground", "--config", admin_config, "--token", os.path.join(base, "tokens", "admin.jwt")],
    )
    async with stdio_client(operator, errlog=sys.stderr) as (read, write), \
            ClientSession(read, write, read_timeout_seconds=timedelta(seconds=30)) as op:
        await op.initialize()
        tools = (await op.list_tools()).tools
        checker.check_list("OPERATOR", tools)
        names = {t.name for t in tools}
        if camera and not CAMERA_TOOLS <= names:
            raise Failure(f"camera configured, but camera tools missing: {sorted(CAMERA_TOOLS - names)}")
        if not camera and CAMERA_TOOLS & names:
            raise Failure(f"no camera configured, but listed: {sorted(CAMERA_TOOLS & names)}")
        ok(f"OPERATOR tools/list: {len(tools)} tools, every schema valid JSON Schema 2020-12 "
           f"with standard formats only; camera tools {'listed' if camera else 'not listed'}")

        await call(op, checker, "get_status", {})
        await call(op, checker, "wait_for_mode_change", {"timeout_s": 1})
        with anyio.fail_after(30):
            while (await op.call_tool("get_envelope", {})).isError:
                await anyio.sleep(0.3)
        await call(op, checker, "get_envelope", {})
        await call(op, checker, "preflight_check", {})
        await call(op, checker, "list_parameters", {"prefix": "WPNAV", "limit": 5})
        await call(op, checker, "get_parameter", {"name": "WPNAV_SPEED"})
        if camera:
            await call(op, checker, "camera_status", {})
            await call(op, checker, "capture_image", {"save": True, "max_width_px": 160})
            listed = await call(op, checker, "list_captures", {"limit": 5})
            captures = listed.structuredContent["captures"]
            if not captures:
                raise Failure("list_captures: the saved capture is not listed")
            await call(op, checker, "get_capture", {"id": captures[0]["id"], "max_width_px": 160})

        await call(op, checker, "request_control", {})
        await call(op, checker, "arm", {}, "completed")
        await call(op, checker, "disarm", {}, "completed")
        took = await call(op, checker, "takeoff", {"altitude_m": 8.0}, "completed")
        v = took.structuredContent["vehicle"]
        lat, lon = v["latitude_deg"], v["longitude_deg"]
        await call(op, checker, "set_heading", {"heading_deg": 90}, "completed")
        await call(op, checker, "set_speed", {"speed_m_s": 4.0}, "completed")
        t_lat, t_lon = north_of(lat, lon, 6.0)
        await call(op, checker, "goto", {"latitude_deg": t_lat, "longitude_deg": t_lon, "altitude_m": 9.0},
                   "completed")
        await call(op, checker, "move_relative", {"forward_m": 2.0}, "completed")
        await call(op, checker, "hold", {}, "completed")
        # The mission tools: a survey planned for review, a one-waypoint mission uploaded,
        # read back, flown from its current item (resume) and from its first (start), paused.
        s_lat, s_lon = north_of(lat, lon, 8.0)
        e_lat, e_lon = north_of(lat, lon, 14.0)
        field = [[s_lat, s_lon - 0.0001], [s_lat, s_lon + 0.0001], [e_lat, e_lon + 0.0001],
                 [e_lat, e_lon - 0.0001]]
        await call(op, checker, "plan_survey", {"polygon": field, "altitude_m": 9.0})
        m_lat, m_lon = north_of(lat, lon, 4.0)
        await call(op, checker, "upload_mission",
                   {"steps": [{"type": "waypoint", "latitude_deg": m_lat, "longitude_deg": m_lon,
                               "altitude_m": 9.0, "photo": True}]})
        await call(op, checker, "get_mission", {})
        await call(op, checker, "resume_mission", {}, "completed")
        await call(op, checker, "start_mission", {}, "completed")
        await call(op, checker, "pause_mission", {}, "completed")
        await call(op, checker, "clear_mission", {})
        # Refused (2 km away): an error whose structuredContent must validate too.
        f_lat, f_lon = north_of(lat, lon, 2000.0)
        refused = await call(op, checker, "goto",
                             {"latitude_deg": f_lat, "longitude_deg": f_lon, "altitude_m": 9.0}, "refused")
        if not refused.isError:
            raise Failure(f"a refused goto must be a tool error: {refused}")
        await call(op, checker, "land", {}, "completed")
        await call(op, checker, "return_home", {})
        await call(op, checker, "emergency_stop", {"reason": "conformance run, on the ground"})
        await call(op, checker, "release_control", {})

        async with stdio_client(admin, errlog=sys.stderr) as (aread, awrite), \
                ClientSession(aread, awrite, read_timeout_seconds=timedelta(seconds=30)) as ad:
            await ad.initialize()
            admin_tools = (await ad.list_tools()).tools
            checker.check_list("ADMIN", admin_tools)
            ok(f"ADMIN tools/list: {len(admin_tools)} tools, every schema valid")
            reset = await call(ad, checker, "reset_emergency_stop", {})
            if reset.isError:
                raise Failure(f"reset_emergency_stop as ADMIN failed: {reset}")
            await call(ad, checker, "revoke_token", {"jti": "conformance-unused-jti"})
            await call(ad, checker, "set_envelope", {})
            # The envelope into the autopilot's fence: verified (or refused in the air), and
            # its result validates either way.
            await call(ad, checker, "mirror_fence", {})
            # Not in the conformance drone's allowlist: a refusal whose result must validate too.
            await call(ad, checker, "set_parameter", {"name": "WPNAV_SPEED", "value": 500})

    missing = checker.listed - checker.called
    if missing:
        raise Failure(f"listed but never called (add them to this run): {sorted(missing)}")
    ok(f"every listed tool called ({len(checker.called)}); {checker.validated} structured results "
       f"validated against their outputSchema with jsonschema {jsonschema_version()}")


def jsonschema_version():
    from importlib.metadata import version
    return version("jsonschema")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("config")
    parser.add_argument("--admin-config", help="the ADMIN bridge's file (default: config)")
    parser.add_argument("--camera", action="store_true")
    args = parser.parse_args()
    try:
        anyio.run(run, args.binary, args.config, args.admin_config or args.config, args.camera)
    except Exception as e:  # noqa: BLE001 (any failure is reported and fails the run)
        detail = e
        while isinstance(detail, BaseExceptionGroup) and detail.exceptions:
            detail = detail.exceptions[0]
        print(f"FAIL: {type(detail).__name__}: {detail}", flush=True)
        sys.exit(1)
    ok("all checks passed")


if __name__ == "__main__":
    main()
