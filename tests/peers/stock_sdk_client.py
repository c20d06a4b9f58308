#!/usr/bin/env python3
"""A client that behaves exactly as the stock EMQX MCP-over-MQTT SDKs do on the wire, written
with paho-mqtt from the EMQX Python SDK's transport (emqx/mcp-python-sdk,
src/mcp/client/mqtt.py and src/mcp/shared/mqtt.py), so CI can check that such a client gets
its role from the identity the broker authenticated, with no token anywhere.

What it mirrors:
- CONNECT: MQTT 5, clean start, user property MCP-COMPONENT-TYPE=mcp-client only (no
  MCP-META), a Will on $mcp-client/presence/{client_id} carrying
  notifications/disconnected (QoS 0, not retained);
- QoS 0 for every publish and subscription; every PUBLISH carries MCP-COMPONENT-TYPE and
  MCP-MQTT-CLIENT-ID;
- discovery on $mcp-server/presence/+/{filter} (the SDK's default filter is '#'); then one
  SUBSCRIBE of the server's capability topic and its RPC topic (No Local);
- initialize on the control topic with no _meta at all; notifications/initialized on the RPC
  topic; integer request ids from 0;
- on exit, notifications/disconnected on its presence topic.
The client id is the certificate's CN (with the dev-setup broker the CN is the client id
whatever is asked for, as the README says to configure the SDK).

Prints one JSON object per line: {"step": ..., ...}; the last line is {"step": "done"}.
Exits 1 with {"step": "failed", "why": ...} on the first failure.

Usage: stock_sdk_client.py --config DIR/ground.toml [--cert C --key K] [--call TOOL]...
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

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

QOS = 0  # the Python SDK's constant


def say(**fields):
    print(json.dumps(fields), flush=True)


def fail(why):
    say(step="failed", why=why)
    sys.exit(1)


def certificate_cn(path):
    subject = ssl._ssl._test_decode_cert(path)["subject"]  # noqa: SLF001 (stdlib only)
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return value
    fail(f"{path}: no CN")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--call", action="append", default=[],
                        help="a tool to call with {} after tools/list (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    with open(args.config, "rb") as f:
        config = tomllib.load(f)
    base = os.path.dirname(os.path.abspath(args.config))
    mqtt = config["mqtt"]
    path = lambda p: os.path.join(base, p)  # noqa: E731
    cert = args.cert or path(mqtt["client_cert_path"])
    key = args.key or path(mqtt["client_key_path"])
    client_id = certificate_cn(cert)
    inbox = queue.Queue()
    connack = queue.Queue()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.tls_set(ca_certs=path(mqtt["ca_cert_path"]), certfile=cert, keyfile=key,
              tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def publish_properties():
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("MCP-COMPONENT-TYPE", "mcp-client"), ("MCP-MQTT-CLIENT-ID", client_id)]
        return props

    disconnected = json.dumps({"jsonrpc": "2.0", "method": "notifications/disconnected"})
    presence_topic = f"$mcp-client/presence/{client_id}"
    c.will_set(presence_topic, disconnected, qos=QOS, retain=False, properties=publish_properties())
    c.on_connect = lambda client, userdata, flags, rc, props: connack.put(rc)
    c.on_message = lambda client, userdata, m: inbox.put((m.topic, bytes(m.payload)))
    props = Properties(PacketTypes.CONNECT)
    props.UserProperty = [("MCP-COMPONENT-TYPE", "mcp-client")]
    c.connect(mqtt.get("host", "localhost"), int(mqtt["port"]), keepalive=60, clean_start=True,
              properties=props)
    c.loop_start()
    try:
        rc = connack.get(timeout=args.timeout)
    except queue.Empty:
        fail("no CONNACK")
    if rc.is_failure:
        fail(f"connection refused: {rc}")
    say(step="connected", client_id=client_id)

    def publish(topic, message):
        c.publish(topic, json.dumps(message), qos=QOS, retain=False, properties=publish_properties())

    def receive(pred, timeout=args.timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                topic, payload = inbox.get(timeout=left)
            except queue.Empty:
                return None
            try:
                obj = json.loads(payload) if payload else None
            except ValueError:
                obj = None
            if pred(topic, obj):
                return topic, obj

    c.subscribe("$mcp-server/presence/+/#", qos=QOS)
    got = receive(lambda t, o: t.startswith("$mcp-server/presence/") and o is not None
                  and o.get("method") == "notifications/server/online")
    if got is None:
        fail("no server presence")
    topic, online = got
    words = topic.split("/")
    server_id, server_name = words[2], "/".join(words[3:])
    params = online["params"]
    # The SDK's ServerDefinition requires `description` (and keeps `meta`).
    if not isinstance(params.get("description"), str):
        fail(f"presence without a description: {online}")
    say(step="discovered", server_id=server_id, server_name=server_name,
        rbac_roles=[r.get("name") for r in params.get("meta", {}).get("rbac", {}).get("roles", [])])

    rpc = f"$mcp-rpc/{client_id}/{server_id}/{server_name}"
    c.subscribe([(f"$mcp-server/capability/{server_id}/{server_name}", SubscribeOptions(qos=QOS)),
                 (rpc, SubscribeOptions(qos=QOS, noLocal=True))])
    time.sleep(0.2)  # the SDK initializes from its on_subscribe callback
    publish(f"$mcp-server/{server_id}/{server_name}",
            {"jsonrpc": "2.0", "id": 0, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "mcp", "version": "0.1.0"}}})
    got = receive(lambda t, o: t == rpc and o is not None and o.get("id") == 0)
    if got is None:
        fail("no answer to initialize")
    answer = got[1]
    if "error" in answer:
        say(step="initialize", ok=False, error=answer["error"])
        publish(presence_topic, json.loads(disconnected))
        c.disconnect()
        c.loop_stop()
        say(step="done")
        return
    say(step="initialize", ok=True, server=answer["result"].get("serverInfo"),
        protocol=answer["result"].get("protocolVersion"))
    publish(rpc, {"jsonrpc": "2.0", "method": "notifications/initialized"})

    next_id = 1

    def request(method, params):
        nonlocal next_id
        rid = next_id
        next_id += 1
        publish(rpc, {"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        got = receive(lambda t, o: t == rpc and o is not None and o.get("id") == rid
                      and "method" not in o)
        if got is None:
            fail(f"no answer to {method}")
        return got[1]

    listed = request("tools/list", {})
    if "error" in listed:
        fail(f"tools/list: {listed['error']}")
    say(step="tools/list", tools=[t["name"] for t in listed["result"]["tools"]])
    for tool in args.call:
        answer = request("tools/call", {"name": tool, "arguments": {}})
        if "error" in answer:
            say(step="call", tool=tool, ok=False, error=answer["error"])
        else:
            result = answer["result"]
            say(step="call", tool=tool, ok=not result.get("isError", False),
                structured=result.get("structuredContent"))
    publish(presence_topic, json.loads(disconnected))
    c.disconnect()
    c.loop_stop()
    say(step="done")


if __name__ == "__main__":
    main()
