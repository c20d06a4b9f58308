#!/usr/bin/env python3
"""A raw stdio MCP client (newline-delimited JSON-RPC, no SDK) of `flight-companion ground`,
speaking either MCP 2026-07-28 (stateless: server/discover, the `_meta` envelope on every
request, subscriptions/listen, resultType) or an older revision (initialize first).

Written from the specification pages (modelcontextprotocol.io/specification/2026-07-28:
changelog, basic/versioning, server/discover), not from the bridge's code.
Prints one line per check ("ok: ..."); exits 1 on the first failure with details.

Usage: stdio_era_client.py BINARY CONFIG --version 2026-07-28|2025-06-18|...
"""

import argparse
import json
import queue
import subprocess
import sys
import threading
import time

MODERN = "2026-07-28"
VERSION = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"


class Failure(Exception):
    pass


def ok(message):
    print(f"ok: {message}", flush=True)


class Stdio:
    def __init__(self, binary, config):
        self.proc = subprocess.Popen(
            [binary, "ground", "--config", config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.next_id = 0
        self.notifications = []

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def receive(self, predicate, what, timeout_s=15):
        deadline = time.monotonic() + timeout_s
        while True:
            for n in self.notifications:
                if predicate(n):
                    self.notifications.remove(n)
                    return n
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"no {what} within {timeout_s} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise Failure(f"the bridge closed stdout while waiting for {what}")
            message = json.loads(line)
            if predicate(message):
                return message
            self.notifications.append(message)

    def request(self, method, params=None, envelope=True):
        self.next_id += 1
        rid = self.next_id
        params = dict(params or {})
        if envelope:
            params["_meta"] = {
                VERSION: MODERN,
                CAPABILITIES: {},
                CLIENT_INFO: {"name": "stdio-era-client", "version": "1"},
            }
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return rid, self.receive(lambda m: m.get("id") == rid and "method" not in m, f"answer to {method}")

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def modern(io):
    _, discover = io.request("server/discover")
    result = discover.get("result")
    if not result or result.get("resultType") != "complete" or MODERN not in result.get("supportedVersions", []):
        raise Failure(f"server/discover: {discover}")
    if "tools" not in result.get("capabilities", {}):
        raise Failure(f"server/discover without tools: {result}")
    ok(f"server/discover -> supportedVersions {result['supportedVersions']}, capabilities {sorted(result['capabilities'])}")

    _, tools = io.request("tools/list")
    names = [t["name"] for t in tools.get("result", {}).get("tools", [])]
    if "get_status" not in names or tools["result"].get("resultType", "complete") != "complete":
        raise Failure(f"tools/list: {tools}")
    ok(f"tools/list -> {', '.join(names)}")

    _, status = io.request("tools/call", {"name": "get_status", "arguments": {}})
    if "result" not in status or status["result"].get("isError"):
        raise Failure(f"tools/call get_status: {status}")
    ok("tools/call get_status -> resultType " + status["result"].get("resultType", "(absent = complete)"))

    _, ping = io.request("ping")
    if ping.get("error", {}).get("code") != -32601:
        raise Failure(f"ping is removed in {MODERN}, got {ping}")
    ok("ping -> -32601 (removed in 2026-07-28)")

    _, stale = io.request("tools/list", envelope=False)
    if "error" not in stale:
        raise Failure(f"a request without the envelope was answered: {stale}")
    ok("a request without the _meta envelope -> " + stale["error"]["message"][:60])

    io.next_id += 1
    listen_id = io.next_id
    io.send({"jsonrpc": "2.0", "id": listen_id, "method": "subscriptions/listen", "params": {
        "_meta": {VERSION: MODERN, CAPABILITIES: {}},
        "notifications": {"resourceSubscriptions": ["vehicle://status"]},
    }})
    ack = io.receive(lambda m: m.get("method") == "notifications/subscriptions/acknowledged", "the acknowledgement")
    if ack["params"]["_meta"].get(SUBSCRIPTION) != listen_id:
        raise Failure(f"acknowledgement not tagged with the listen id: {ack}")
    ok("subscriptions/listen -> notifications/subscriptions/acknowledged")
    updated = io.receive(lambda m: m.get("method") == "notifications/resources/updated", "resources/updated")
    if updated["params"].get("_meta", {}).get(SUBSCRIPTION) != listen_id:
        raise Failure(f"update not tagged: {updated}")
    ok("notifications/resources/updated on the listen stream, tagged with its id")
    io.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": listen_id}})


def legacy(io, version):
    io.next_id += 1
    io.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "stdio-era-client", "version": "1"}}})
    init = io.receive(lambda m: m.get("id") == 0, "initialize answer")
    if init.get("result", {}).get("protocolVersion") != version:
        raise Failure(f"initialize {version}: {init}")
    io.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    ok(f"initialize -> {version}")
    _, tools = io.request("tools/list", envelope=False)
    if "get_status" not in [t["name"] for t in tools.get("result", {}).get("tools", [])]:
        raise Failure(f"tools/list: {tools}")
    ok("tools/list")
    _, status = io.request("tools/call", {"name": "get_status", "arguments": {}}, envelope=False)
    if "result" not in status:
        raise Failure(f"get_status: {status}")
    ok("tools/call get_status")
    _, ping = io.request("ping", envelope=False)
    if ping.get("result") != {}:
        raise Failure(f"ping: {ping}")
    ok("ping")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("config")
    parser.add_argument("--version", required=True)
    args = parser.parse_args()
    io = Stdio(args.binary, args.config)
    try:
        if args.version == MODERN:
            modern(io)
        else:
            legacy(io, args.version)
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        io.close()
        sys.exit(1)
    io.close()
    ok(f"all checks passed ({args.version})")


if __name__ == "__main__":
    main()
