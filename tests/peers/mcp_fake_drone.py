#!/usr/bin/env python3
"""A minimal MCP-over-MQTT *server* written from the EMQX transport spec with paho-mqtt: an
independent stand-in for the drone, so the ground bridge is tested against a server that is
not our own code.

It publishes retained presence (Will: empty retained presence), answers `initialize` on its
control topic, `tools/list`, `tools/call get_status`, `resources/read`/`subscribe` of
vehicle://status (then `notifications/resources/updated` on its capability topic every
0.2 s), and `ping`. `tools/call slow` never answers (to test what the bridge does with
requests in flight when the drone goes away or stays silent). Prints `fake drone: online`
once ready, and `fake drone: notification METHOD PARAMS` for every notification it receives.

Usage: mcp_fake_drone.py --config DIR/drone.toml [--server-id ID] [--server-name NAME]
"""

import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time
import tomllib

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--server-id", default="drone-1")
    parser.add_argument("--server-name", default="flight-companion/drone")
    args = parser.parse_args()
    with open(args.config, "rb") as f:
        mqtt = tomllib.load(f)["mqtt"]
    base = os.path.dirname(os.path.abspath(args.config))
    sid, name = args.server_id, args.server_name
    presence = f"$mcp-server/presence/{sid}/{name}"
    control = f"$mcp-server/{sid}/{name}"
    capability = f"$mcp-server/capability/{sid}/{name}"
    sessions = {}  # client id -> rpc topic
    subscribed = set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=sid, protocol=paho.MQTTv5)
    c.tls_set(
        ca_certs=os.path.join(base, mqtt["ca_cert_path"]),
        certfile=os.path.join(base, mqtt["client_cert_path"]),
        keyfile=os.path.join(base, mqtt["client_key_path"]),
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    c.on_socket_open = lambda cl, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.will_set(presence, b"", qos=1, retain=True)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("MCP-COMPONENT-TYPE", "mcp-server"), ("MCP-MQTT-CLIENT-ID", sid)]

    def send(topic, obj, retain=False):
        c.publish(topic, json.dumps(obj) if obj is not None else b"", qos=1, retain=retain, properties=props)

    status = {"armed": False, "mode": "GUIDED", "altitude_m": 0.0}

    def on_connect(client, userdata, flags, rc, properties):
        client.subscribe([(control, paho.SubscribeOptions(qos=1))])
        send(presence, {"jsonrpc": "2.0", "method": "notifications/server/online",
                        "params": {"server_name": name, "description": "fake drone", "meta": {}}}, retain=True)
        print("fake drone: online", flush=True)

    def on_message(client, userdata, m):
        cid = dict(m.properties.UserProperty or []).get("MCP-MQTT-CLIENT-ID") if m.properties else None
        try:
            msg = json.loads(m.payload)
        except ValueError:
            return
        method, rid = msg.get("method"), msg.get("id")
        if m.topic == control and method == "initialize" and cid:
            rpc = f"$mcp-rpc/{cid}/{sid}/{name}"
            sessions[cid] = rpc
            client.subscribe([(rpc, paho.SubscribeOptions(qos=1, noLocal=True))])
            time.sleep(0.05)  # let the SUBACK arrive before answering
            send(rpc, {"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": msg["params"].get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}, "resources": {"subscribe": True}},
                "serverInfo": {"name": "fake-drone", "version": "0"}}})
            return
        rpc = m.topic
        if rid is None and method is not None:
            # Printed so the tests can tell what the bridge sent on its own (e.g. a cancel).
            print(f"fake drone: notification {method} {json.dumps(msg.get('params'))}", flush=True)
            return
        if rid is None or method is None:
            return
        if method == "tools/list":
            result = {"tools": [
                {"name": "get_status", "inputSchema": {"type": "object"}},
                {"name": "slow", "inputSchema": {"type": "object"}},
            ]}
        elif method == "tools/call" and msg["params"]["name"] == "get_status":
            result = {"content": [{"type": "text", "text": json.dumps(status)}], "structuredContent": status}
        elif method == "tools/call" and msg["params"]["name"] == "slow":
            print("fake drone: holding tools/call slow", flush=True)
            return
        elif method == "resources/read":
            result = {"contents": [{"uri": "vehicle://status", "mimeType": "application/json", "text": json.dumps(status)}]}
        elif method == "resources/subscribe":
            subscribed.add(msg["params"]["uri"])
            result = {}
        elif method == "ping":
            result = {}
        else:
            send(rpc, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"unknown method {method}"}})
            return
        send(rpc, {"jsonrpc": "2.0", "id": rid, "result": result})

    c.on_connect = on_connect
    c.on_message = on_message
    conn_props = Properties(PacketTypes.CONNECT)
    conn_props.SessionExpiryInterval = 0
    conn_props.UserProperty = [("MCP-COMPONENT-TYPE", "mcp-server"), ("MCP-META", "{}")]
    c.connect(mqtt.get("host", "localhost"), int(mqtt["port"]), keepalive=30, clean_start=True, properties=conn_props)
    c.loop_start()
    while True:
        time.sleep(0.2)
        if subscribed:
            send(capability, {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                              "params": {"uri": "vehicle://status"}})


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
