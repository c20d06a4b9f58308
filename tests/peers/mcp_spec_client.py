#!/usr/bin/env python3
"""An independent MCP-over-MQTT client, written only from the EMQX transport specification
with paho-mqtt (MQTT 5, mutual TLS, TCP_NODELAY), that checks the drone's MCP server.

It discovers the drone from retained presence, initializes, lists tools, calls get_status,
reads and subscribes vehicle://status, pings, and sends bad inputs, checking each answer.
Every message the daemon sends is validated against the official MCP schema types of the
`mcp` package (pydantic models); any mismatch fails the run.

Then the conformance points of issue 14, on the wire: the size of `tools/list`, the tools'
annotations, no camera tools without a camera, -32002 for an unknown resource, an unknown
tool's error listing only what this caller (an OPERATOR) may call, and, for each protocol
version from 2024-11-05 to 2025-11-25, that every answer carries only the fields that
version defines (the table below, written from `schema/<version>/schema.ts` of the
specification).

Prints one line per check ("ok: ..."); exits 1 on the first failure with details.

Usage: mcp_spec_client.py --config DIR/ground.toml [--server-name NAME] [--timeout S]
"""

import argparse
import json
import os
import queue
import socket
import ssl
import sys
import time
import tomllib
import uuid

import mcp.types as mt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

PROTOCOL_VERSION = "2025-11-25"
VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]

# The fields each version defines (schema/<version>/schema.ts of the MCP specification).
_TOOL = {"name", "description", "inputSchema"}
_RESOURCE = {"uri", "name", "description", "mimeType", "size", "annotations"}
_CAPS = {"experimental", "logging", "prompts", "resources", "tools"}
FIELDS = {
    "2024-11-05": {
        "Tool": _TOOL,
        "CallToolResult": {"content", "isError", "_meta"},
        "content": {"text", "image", "resource"},
        "TextContent": {"type", "text", "annotations"},
        "Progress": {"progressToken", "progress", "total"},
        "Resource": _RESOURCE,
        "Implementation": {"name", "version"},
        "ServerCapabilities": _CAPS,
    },
    "2025-03-26": {
        "Tool": _TOOL | {"annotations"},
        "CallToolResult": {"content", "isError", "_meta"},
        "content": {"text", "image", "audio", "resource"},
        "TextContent": {"type", "text", "annotations"},
        "Progress": {"progressToken", "progress", "total", "message"},
        "Resource": _RESOURCE,
        "Implementation": {"name", "version"},
        "ServerCapabilities": _CAPS | {"completions"},
    },
    "2025-06-18": {
        "Tool": _TOOL | {"annotations", "title", "outputSchema", "_meta"},
        "CallToolResult": {"content", "isError", "_meta", "structuredContent"},
        "content": {"text", "image", "audio", "resource", "resource_link"},
        "TextContent": {"type", "text", "annotations", "_meta"},
        "Progress": {"progressToken", "progress", "total", "message", "_meta"},
        "Resource": _RESOURCE | {"title", "_meta"},
        "Implementation": {"name", "version", "title"},
        "ServerCapabilities": _CAPS | {"completions"},
    },
}
FIELDS["2025-11-25"] = {
    **FIELDS["2025-06-18"],
    "Tool": FIELDS["2025-06-18"]["Tool"] | {"icons", "execution"},
    "Resource": FIELDS["2025-06-18"]["Resource"] | {"icons"},
    "Implementation": FIELDS["2025-06-18"]["Implementation"] | {"description", "icons", "websiteUrl"},
    "ServerCapabilities": FIELDS["2025-06-18"]["ServerCapabilities"] | {"tasks"},
}
ANNOTATIONS = {"title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}
MOTION_TOOLS = {"arm", "disarm", "takeoff", "goto", "move_relative", "set_heading", "set_speed",
                "hold", "land", "return_home", "emergency_stop"}
READ_TOOLS = {"get_status", "wait_for_mode_change", "get_envelope"}
CAMERA_TOOLS = {"capture_image", "camera_status", "list_captures", "get_capture"}
ADMIN_TOOLS = {"reset_emergency_stop", "revoke_token", "set_envelope"}
# Bound on `tools/list` as an OPERATOR sees it without a camera (bytes on the wire). It was
# about 100 KB (output schemas repeating get_status's 23 KB status and the e-stop's status,
# non-standard formats, titles); it was about 57 KB, and 66 KB with the two parameter reading
# tools and the status' new keys, and 81 KB with the seven mission tools (15 KB, bounded by
# `mcp::tools::mission`'s own test). The bound leaves room for a few more tools and fails if a
# copy of the 20 KB status schema comes back into another tool's outputSchema.
TOOLS_LIST_BYTES_MAX = 84_000


class Failure(Exception):
    pass


def fail(message):
    raise Failure(message)


def ok(message):
    print(f"ok: {message}", flush=True)


def certificate_cn(path):
    """The CN of a PEM certificate: the identity the broker authenticates. With the
    dev-setup broker (use_username_as_clientid) it is the client id whatever id is asked for,
    and the ACL binds every client's topics to it."""
    subject = ssl._ssl._test_decode_cert(path)["subject"]  # noqa: SLF001 (stdlib, no extra package)
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return value
    fail(f"{path}: the certificate has no CN")


def user_props(props):
    return dict(getattr(props, "UserProperty", None) or [])


class SpecClient:
    def __init__(self, config_path, server_name, timeout_s):
        with open(config_path, "rb") as f:
            config = tomllib.load(f)
        base = os.path.dirname(os.path.abspath(config_path))
        mqtt = config.get("mqtt", {})
        ground = config.get("ground", {})
        path = lambda key: os.path.join(base, mqtt[key])  # noqa: E731 (absolute paths join as is)
        self.host = mqtt.get("host", "localhost")
        self.port = int(mqtt.get("port", 8883))
        self.server_root = ground.get("server_topic_root", "$mcp-server")
        self.client_root = ground.get("client_topic_root", "$mcp-client")
        self.rpc_root = ground.get("rpc_topic_root", "$mcp-rpc")
        self.server_name = server_name or ground.get("server_name")
        # The drone's auth: a JWT in params._meta["flight-companion/token"] of initialize.
        self.token = None
        if ground.get("token_path"):
            with open(os.path.join(base, ground["token_path"])) as f:
                self.token = f.read().strip()
        self.timeout_s = timeout_s
        self.cid = certificate_cn(path("client_cert_path"))
        self.inbox = queue.Queue()
        self.validation_errors = []
        self.next_id = 0
        self.pending_kinds = {}  # request id -> result model
        self.connack = None

        c = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=self.cid,
            protocol=paho.MQTTv5,
        )
        c.tls_set(
            ca_certs=path("ca_cert_path"),
            certfile=path("client_cert_path"),
            keyfile=path("client_key_path"),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        # Nagle would add ~40 ms to every request/response round trip.
        c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        will_props = Properties(PacketTypes.WILLMESSAGE)
        c.will_set(
            f"{self.client_root}/presence/{self.cid}",
            json.dumps({"jsonrpc": "2.0", "method": "notifications/disconnected"}),
            qos=1,
            retain=False,
            properties=will_props,
        )
        self.client = c

    # --- MQTT plumbing ---

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = (reason_code, properties)

    def _on_message(self, client, userdata, message):
        self.inbox.put((message.topic, bytes(message.payload), user_props(message.properties)))

    def connect(self):
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        props.UserProperty = [
            ("MCP-COMPONENT-TYPE", "mcp-client"),
            ("MCP-META", json.dumps({"implementation": "mcp_spec_client.py", "version": "1"})),
        ]
        self.client.connect(self.host, self.port, keepalive=30, clean_start=True, properties=props)
        self.client.loop_start()
        deadline = time.monotonic() + self.timeout_s
        while self.connack is None:
            if time.monotonic() > deadline:
                fail(f"no CONNACK from {self.host}:{self.port} within {self.timeout_s} s")
            time.sleep(0.01)
        code, props = self.connack
        if code.is_failure:
            fail(f"broker refused the connection: {code}")
        filters = user_props(props).get("MCP-SERVER-NAME-FILTERS")
        self.name_filters = json.loads(filters) if filters else [self.server_name or "#"]
        ok(f"connected with mTLS as {self.cid} (MQTT 5, clean start, session expiry 0)")

    def subscribe(self, topic, no_local=False):
        options = paho.SubscribeOptions(qos=1, noLocal=no_local)
        result, _ = self.client.subscribe([(topic, options)])
        if result != paho.MQTT_ERR_SUCCESS:
            fail(f"cannot subscribe {topic}: {result}")

    def publish(self, topic, payload, client_id=None):
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [
            ("MCP-COMPONENT-TYPE", "mcp-client"),
            ("MCP-MQTT-CLIENT-ID", client_id or self.cid),
        ]
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=1, retain=False, properties=props)
        info.wait_for_publish(self.timeout_s)

    # --- validation of everything the daemon sends ---

    def validate(self, topic, obj):
        """Validates one message from the daemon; records mismatches."""
        try:
            if "error" in obj and obj.get("id") is None:
                # JSON-RPC 2.0 section 5 answers a message whose id cannot be read (invalid
                # JSON, a batch) with `"id": null`; mcp 1.30's JSONRPCError requires a str or
                # int id, so such errors are checked by hand plus the ErrorData model.
                if obj.get("jsonrpc") != "2.0" or set(obj) - {"jsonrpc", "id", "error"}:
                    raise ValueError(f"malformed JSON-RPC error envelope: {obj}")
                mt.ErrorData.model_validate(obj["error"])
                return
            mt.JSONRPCMessage.model_validate(obj)
            if "method" in obj and "id" not in obj:
                if obj["method"] != "notifications/disconnected":
                    mt.ServerNotification.model_validate(
                        {"method": obj["method"], "params": obj.get("params")}
                    )
            elif "result" in obj:
                model = self.pending_kinds.get(json.dumps(obj["id"]))
                if model is not None:
                    model.model_validate(obj["result"])
            elif "method" in obj:
                mt.ServerRequest.model_validate({"method": obj["method"], "params": obj.get("params")})
        except (ValidationError, ValueError) as e:
            self.validation_errors.append(f"{topic}: {json.dumps(obj)[:300]}: {e}")

    def receive(self, timeout_s, want):
        """Receives until `want(topic, obj)` is true; validates everything on the way."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                topic, payload, props = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            self.last_payload_bytes = len(payload)
            if topic.startswith(f"{self.server_root}/presence/"):
                self.check_presence(topic, payload)
                obj = None if not payload else json.loads(payload)
            else:
                if props.get("MCP-COMPONENT-TYPE") != "mcp-server":
                    self.validation_errors.append(
                        f"{topic}: PUBLISH without MCP-COMPONENT-TYPE=mcp-server: {props}"
                    )
                if not props.get("MCP-MQTT-CLIENT-ID"):
                    self.validation_errors.append(f"{topic}: PUBLISH without MCP-MQTT-CLIENT-ID")
                try:
                    obj = json.loads(payload)
                except ValueError:
                    self.validation_errors.append(f"{topic}: not JSON: {payload[:200]!r}")
                    continue
                self.validate(topic, obj)
            if self.validation_errors:
                fail("the daemon sent a message that is not valid MCP:\n  " + "\n  ".join(self.validation_errors))
            if want(topic, obj):
                return topic, obj

    def check_presence(self, topic, payload):
        if not payload:
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            self.validation_errors.append(f"{topic}: presence is not JSON")
            return
        p = obj.get("params") or {}
        if not (
            obj.get("jsonrpc") == "2.0"
            and obj.get("method") == "notifications/server/online"
            and isinstance(p.get("server_name"), str)
            and isinstance(p.get("description"), str)
            and isinstance(p.get("meta"), dict)
        ):
            self.validation_errors.append(
                f"{topic}: presence must be notifications/server/online with params.server_name, "
                f"description (strings) and meta (object): {obj}"
            )

    # --- MCP helpers ---

    def rpc_topic(self, cid=None):
        return f"{self.rpc_root}/{cid or self.cid}/{self.sid}/{self.name}"

    def request(self, method, params=None, model=None, topic=None, raw=None):
        self.next_id += 1
        rid = self.next_id
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        if model is not None:
            self.pending_kinds[json.dumps(rid)] = model
        self.publish(topic or self.rpc_topic(), raw if raw is not None else msg)
        return rid

    def answer(self, rid, timeout_s=None):
        got = self.receive(
            timeout_s or self.timeout_s,
            lambda t, o: t == self.rpc_topic() and o is not None and o.get("id") == rid and "method" not in o,
        )
        if got is None:
            fail(f"no answer to request {rid} within {timeout_s or self.timeout_s} s")
        return got[1]

    def expect_error(self, what, rid, code):
        obj = self.answer(rid)
        if "error" not in obj:
            fail(f"{what}: expected error {code}, got {obj}")
        if obj["error"].get("code") != code:
            fail(f"{what}: expected error code {code}, got {obj['error']}")
        ok(f"{what} -> {code} ({obj['error'].get('message')})")

    def expect_null_id_error(self, what, codes):
        got = self.receive(
            self.timeout_s,
            lambda t, o: t == self.rpc_topic() and o is not None and "error" in o and o.get("id") is None,
        )
        if got is None:
            fail(f"{what}: no error answer (id null) within {self.timeout_s} s")
        err = got[1]["error"]
        if err.get("code") not in codes:
            fail(f"{what}: expected error code in {codes}, got {err}")
        ok(f"{what} -> {err.get('code')} ({err.get('message')})")

    def still_alive(self, after):
        rid = self.request("ping", model=mt.EmptyResult)
        obj = self.answer(rid)
        if obj.get("result") != {}:
            fail(f"ping after {after}: expected result {{}}, got {obj}")

    # --- the run ---

    def run(self):
        self.connect()
        for f in self.name_filters:
            self.subscribe(f"{self.server_root}/presence/+/{f}")
        got = self.receive(
            self.timeout_s,
            lambda t, o: o is not None and t.startswith(f"{self.server_root}/presence/"),
        )
        if got is None:
            fail(f"no drone presence under {self.server_root}/presence/+/{self.name_filters} within {self.timeout_s} s")
        rest = got[0][len(f"{self.server_root}/presence/"):]
        self.sid, self.name = rest.split("/", 1)
        ok(f"discovered drone {self.name} (server id {self.sid}) from retained presence")

        self.subscribe(self.rpc_topic(), no_local=True)
        self.subscribe(f"{self.server_root}/capability/{self.sid}/{self.name}")
        control = f"{self.server_root}/{self.sid}/{self.name}"

        # A tool call before initialize: never a success.
        self.next_id += 1
        early = self.next_id
        self.publish(control, {"jsonrpc": "2.0", "id": early, "method": "tools/call",
                               "params": {"name": "get_status", "arguments": {}}})
        got = self.receive(2.0, lambda t, o: o is not None and o.get("id") == early)
        if got is not None and "error" not in got[1]:
            fail(f"tools/call before initialize was answered with a result: {got[1]}")
        ok("tools/call before initialize -> " + ("error " + str(got[1]["error"].get("code")) if got else "ignored"))

        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp_spec_client", "version": "1"},
        }
        if self.token:
            params["_meta"] = {"flight-companion/token": self.token}
        rid = self.request("initialize", params, model=mt.InitializeResult, topic=control)
        init = self.answer(rid)
        if "result" not in init:
            fail(f"initialize failed: {init}")
        if init["result"].get("protocolVersion") != PROTOCOL_VERSION:
            fail(f"initialize: expected protocolVersion {PROTOCOL_VERSION}, got {init['result']}")
        self.publish(self.rpc_topic(), {"jsonrpc": "2.0", "method": "notifications/initialized"})
        info = init["result"].get("serverInfo", {})
        ok(f"initialize on the control topic -> {info.get('name')} {info.get('version')}, protocol {PROTOCOL_VERSION}")

        tools = self.answer(self.request("tools/list", {}, model=mt.ListToolsResult))
        names = [t["name"] for t in tools.get("result", {}).get("tools", [])]
        if "get_status" not in names:
            fail(f"tools/list has no get_status: {tools}")
        ok(f"tools/list -> {len(names)} tools: {', '.join(names)}")

        status = self.answer(self.request("tools/call", {"name": "get_status", "arguments": {}},
                                          model=mt.CallToolResult))
        result = status.get("result")
        if not result or result.get("isError"):
            fail(f"get_status failed: {status}")
        ok("tools/call get_status -> " + ("structuredContent" if "structuredContent" in result else "content"))

        read = self.answer(self.request("resources/read", {"uri": "vehicle://status"},
                                        model=mt.ReadResourceResult))
        if "result" not in read or not read["result"].get("contents"):
            fail(f"resources/read vehicle://status failed: {read}")
        ok("resources/read vehicle://status")

        sub = self.answer(self.request("resources/subscribe", {"uri": "vehicle://status"},
                                       model=mt.EmptyResult))
        if "result" not in sub:
            fail(f"resources/subscribe failed: {sub}")
        cap = f"{self.server_root}/capability/{self.sid}/{self.name}"
        got = self.receive(self.timeout_s, lambda t, o: t == cap and o is not None
                           and o.get("method") == "notifications/resources/updated"
                           and (o.get("params") or {}).get("uri") == "vehicle://status")
        if got is None:
            fail(f"no notifications/resources/updated for vehicle://status on {cap} within {self.timeout_s} s")
        ok("resources/subscribe vehicle://status -> notifications/resources/updated on the capability topic")

        started = time.monotonic()
        self.still_alive("subscribe")
        ok(f"ping -> {{}} in {(time.monotonic() - started) * 1000:.1f} ms")

        # Bad inputs.
        self.publish(self.rpc_topic(), b"{this is not json")
        self.expect_null_id_error("invalid JSON", (-32700,))
        self.still_alive("invalid JSON")

        self.publish(self.rpc_topic(), [{"jsonrpc": "2.0", "id": 900, "method": "ping"}])
        self.expect_null_id_error("a JSON-RPC batch", (-32600,))
        self.still_alive("a batch")

        self.expect_error("unknown method", self.request("no/such_method", {}), -32601)
        self.expect_error("tools/call with wrong params", self.request("tools/call", {"name": 5}), -32602)
        self.expect_error("tools/call of an unknown tool",
                          self.request("tools/call", {"name": "no_such_tool", "arguments": {}}), -32602)

        # Over the daemon's mcp.message_bytes_max (256 KiB) but within the broker's
        # max_packet_size (dev-setup: the daemon's limit plus 16 KiB for headers): the broker
        # passes it and the daemon answers with an error. Larger packets the broker refuses.
        self.next_id += 1
        big_id = self.next_id
        big = {"jsonrpc": "2.0", "id": big_id, "method": "tools/call",
               "params": {"name": "get_status", "arguments": {}, "_meta": {"pad": "x" * 264_000}}}
        self.publish(self.rpc_topic(), big)
        got = self.receive(self.timeout_s, lambda t, o: t == self.rpc_topic() and o is not None
                           and o.get("id") in (big_id, None) and "method" not in o)
        if got is None or "error" not in got[1]:
            fail(f"oversize payload (264 kB): expected an error answer, got {got}")
        ok(f"oversize payload (264 kB) -> {got[1]['error'].get('code')} ({got[1]['error'].get('message')})")
        self.still_alive("an oversize payload")

        stranger = f"stranger-{uuid.uuid4().hex[:8]}"
        self.subscribe(self.rpc_topic(stranger), no_local=True)
        self.publish(self.rpc_topic(stranger), {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                     client_id=stranger)
        got = self.receive(1.5, lambda t, o: t == self.rpc_topic(stranger))
        if got is not None:
            fail(f"another client's RPC topic was readable or answered: {got}")
        self.still_alive("a message to another client's RPC topic")
        ok("another client's RPC topic -> neither readable nor answered (the broker binds it to that identity)")

        for bad in ("bad/id", "bad+id", "bad#id"):
            self.next_id += 1
            self.publish(control, {"jsonrpc": "2.0", "id": self.next_id, "method": "initialize",
                                   "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                              "clientInfo": {"name": "bad", "version": "1"}}},
                         client_id=bad)
            self.still_alive(f"an initialize from client id {bad!r}")
        ok("initialize from client ids with '/', '+', '#' -> refused, server still answers")

        self.conformance(control, params)

        self.publish(f"{self.client_root}/presence/{self.cid}",
                     {"jsonrpc": "2.0", "method": "notifications/disconnected"})
        self.client.disconnect()
        self.client.loop_stop()
        ok(f"all checks passed; every message from the daemon validated against mcp {mcp_version()} types")


    # --- issue 14's conformance points ---

    def only(self, what, obj, allowed, version):
        extra = set(obj) - allowed
        if extra:
            fail(f"{version}: {what} carries {sorted(extra)}, which MCP {version} does not define: "
                 f"{json.dumps(obj)[:300]}")

    def conformance(self, control, params):
        rid = self.request("tools/list", {}, model=mt.ListToolsResult)
        listed = self.answer(rid)
        size = self.last_payload_bytes
        tools = {t["name"]: t for t in listed["result"]["tools"]}
        if size > TOOLS_LIST_BYTES_MAX:
            fail(f"tools/list is {size} bytes; the bound is {TOOLS_LIST_BYTES_MAX}")
        ok(f"tools/list is {size} bytes on the wire (bound {TOOLS_LIST_BYTES_MAX})")
        if CAMERA_TOOLS & set(tools) or ADMIN_TOOLS & set(tools):
            fail(f"an OPERATOR without a camera is listed {sorted((CAMERA_TOOLS | ADMIN_TOOLS) & set(tools))}")
        ok("no camera tools without a camera, no ADMIN tools for an OPERATOR")
        for name in MOTION_TOOLS:
            a = tools[name].get("annotations", {})
            if a.get("destructiveHint") is not True or a.get("openWorldHint") is not True \
                    or a.get("readOnlyHint") is not False:
                fail(f"{name}: a motion tool must be destructiveHint and openWorldHint: {a}")
        for name in READ_TOOLS:
            if tools[name].get("annotations", {}).get("readOnlyHint") is not True:
                fail(f"{name}: readOnlyHint must be true: {tools[name].get('annotations')}")
        ok(f"annotations: {len(MOTION_TOOLS)} motion tools destructive and open-world, "
           f"{len(READ_TOOLS)} reads read-only")

        err = self.answer(self.request("resources/read", {"uri": "vehicle://nowhere"}))
        e = err.get("error") or {}
        if e.get("code") != -32002 or (e.get("data") or {}).get("uri") != "vehicle://nowhere":
            fail(f"unknown resource: expected -32002 with data.uri, got {err}")
        if "vehicle://status" not in e.get("message", "") or "audit://recent" in e.get("message", ""):
            fail(f"unknown resource: the message must list what an OPERATOR may read: {e}")
        ok(f"unknown resource -> -32002 ({e.get('message')})")
        err = self.answer(self.request("tools/call", {"name": "fly_to_moon", "arguments": {}}))
        e = err.get("error") or {}
        message = e.get("message", "")
        hidden = [n for n in ADMIN_TOOLS | CAMERA_TOOLS if n in message]
        if e.get("code") != -32602 or "get_status" not in message or hidden:
            fail(f"unknown tool: expected -32602 listing the OPERATOR's tools only, got {err}")
        ok("unknown tool -> -32602, listing only the tools this caller may call")

        for version in VERSIONS:
            self.check_version(control, params, version)

    def check_version(self, control, params, version):
        fields = FIELDS[version]
        p = dict(params, protocolVersion=version)
        init = self.answer(self.request("initialize", p, model=mt.InitializeResult, topic=control))
        result = init.get("result") or fail(f"initialize {version}: {init}")
        if result.get("protocolVersion") != version:
            fail(f"initialize {version}: negotiated {result.get('protocolVersion')}")
        self.publish(self.rpc_topic(), {"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.only("serverInfo", result["serverInfo"], fields["Implementation"], version)
        self.only("capabilities", result["capabilities"], fields["ServerCapabilities"], version)

        tools = self.answer(self.request("tools/list", {}, model=mt.ListToolsResult))["result"]["tools"]
        for tool in tools:
            self.only(f"tool {tool['name']}", tool, fields["Tool"], version)
            if "annotations" in tool:
                self.only(f"tool {tool['name']} annotations", tool["annotations"], ANNOTATIONS, version)
        with_output = version >= "2025-06-18"
        if with_output != all("outputSchema" in t for t in tools):
            fail(f"{version}: outputSchema {'missing' if with_output else 'present'}")

        called = self.answer(self.request("tools/call", {"name": "get_status", "arguments": {}},
                                          model=mt.CallToolResult))["result"]
        self.only("get_status result", called, fields["CallToolResult"], version)
        for block in called["content"]:
            if block.get("type") not in fields["content"]:
                fail(f"{version}: content of type {block.get('type')}")
            if block.get("type") == "text":
                self.only("text content", block, fields["TextContent"], version)
        if with_output != ("structuredContent" in called):
            fail(f"{version}: structuredContent {'missing' if with_output else 'present'}")
        if json.loads(called["content"][0]["text"]).get("vehicle") is None:
            fail(f"{version}: the status must stay readable as text: {called['content'][0]}")

        resources = self.answer(self.request("resources/list", {}, model=mt.ListResourcesResult))
        for r in resources["result"]["resources"]:
            self.only(f"resource {r['uri']}", r, fields["Resource"], version)

        # Progress: a short wait reports once a second.
        rid = self.request("tools/call", {"name": "wait_for_mode_change", "arguments": {"timeout_s": 1.5},
                                          "_meta": {"progressToken": f"v{version}"}})
        progress = []
        got = self.receive(self.timeout_s, lambda t, o: t == self.rpc_topic() and o is not None and (
            o.get("id") == rid or (o.get("method") == "notifications/progress" and progress.append(o))))
        if got is None:
            fail(f"{version}: no answer to wait_for_mode_change")
        if not progress:
            fail(f"{version}: no progress during a 1.5 s wait")
        for note in progress:
            self.only("progress", note["params"], fields["Progress"], version)
        if (version >= "2025-03-26") != ("message" in progress[0]["params"]):
            fail(f"{version}: progress message {progress[0]['params']}")
        ok(f"{version}: initialize, tools/list ({len(tools)} tools), tools/call, resources/list and "
           f"progress carry only the fields MCP {version} defines"
           + (" (outputSchema and structuredContent included)" if with_output else ""))


def mcp_version():
    try:
        from importlib.metadata import version
        return version("mcp")
    except Exception:  # noqa: BLE001 (only for the printout)
        return "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="ground.toml (mqtt keys and topic roots)")
    parser.add_argument("--server-name")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    client = SpecClient(args.config, args.server_name, args.timeout)
    try:
        client.run()
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
