#!/usr/bin/env python3
"""Benchmark (not a test): the MCP `tools/call get_status` round trip through the broker
(mutual TLS MQTT 5, TCP_NODELAY on every client), with 1 and 10 concurrent MCP clients, next
to a bare MQTT publish -> echo -> reply round trip on the same broker.

Needs a running broker and drone daemon (see BENCHMARKS.md for the exact commands).
Prints one line per scenario: p50/p99/max in milliseconds and calls per second.

Usage: bench_mcp.py --config DIR/ground.toml [--drone-config DIR/drone.toml] [--calls 1000]
"""

import argparse
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import tomllib
import uuid

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT_S = 10.0


class Settings:
    def __init__(self, path, server_name):
        with open(path, "rb") as f:
            config = tomllib.load(f)
        base = os.path.dirname(os.path.abspath(path))
        mqtt, ground = config.get("mqtt", {}), config.get("ground", {})
        self.path = path
        self.host = mqtt.get("host", "localhost")
        self.port = int(mqtt.get("port", 8883))
        self.ca, self.cert, self.key = (
            os.path.join(base, mqtt[k]) for k in ("ca_cert_path", "client_cert_path", "client_key_path")
        )
        self.server_root = ground.get("server_topic_root", "$mcp-server")
        self.rpc_root = ground.get("rpc_topic_root", "$mcp-rpc")
        self.server_name = server_name or ground.get("server_name")


class Conn:
    """One MQTT 5 mTLS connection with TCP_NODELAY; calls `on_message(topic, payload)`."""

    def __init__(self, s, component, on_message):
        self.cid = f"bench-{uuid.uuid4().hex[:10]}"
        self.connected = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.cid, protocol=paho.MQTTv5)
        c.tls_set(ca_certs=s.ca, certfile=s.cert, keyfile=s.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_socket_open = lambda cl, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.on_connect = lambda cl, u, f, rc, p: self.connected.set()
        c.on_message = lambda cl, u, m: on_message(m.topic, m.payload)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        props.UserProperty = [("MCP-COMPONENT-TYPE", component), ("MCP-META", "{}")]
        c.connect(s.host, s.port, keepalive=30, clean_start=True, properties=props)
        c.loop_start()
        if not self.connected.wait(TIMEOUT_S):
            sys.exit(f"bench: no CONNACK from {s.host}:{s.port}")
        self.pub_props = Properties(PacketTypes.PUBLISH)
        self.pub_props.UserProperty = [("MCP-COMPONENT-TYPE", component), ("MCP-MQTT-CLIENT-ID", self.cid)]
        self.client = c

    def subscribe(self, topic, no_local=False):
        self.client.subscribe([(topic, paho.SubscribeOptions(qos=1, noLocal=no_local))])

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1, properties=self.pub_props)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def discover(s):
    found = {}
    ready = threading.Event()

    def on_message(topic, payload):
        if payload and not found:
            found["sid"], found["name"] = topic[len(f"{s.server_root}/presence/"):].split("/", 1)
            ready.set()

    conn = Conn(s, "mcp-client", on_message)
    conn.subscribe(f"{s.server_root}/presence/+/{s.server_name or '#'}")
    if not ready.wait(TIMEOUT_S):
        sys.exit("bench: no drone presence on the broker; is the daemon running?")
    conn.close()
    return found["sid"], found["name"]


class McpWorker:
    """One MCP session doing sequential `tools/call get_status`."""

    def __init__(self, s, sid, name):
        self.answers = {}
        self.cond = threading.Condition()
        self.conn = Conn(s, "mcp-client", self._on_message)
        self.rpc = f"{s.rpc_root}/{self.conn.cid}/{sid}/{name}"
        self.conn.subscribe(self.rpc, no_local=True)
        time.sleep(0.2)  # SUBACK before initialize; setup only, not measured
        self.next_id = 0
        init = {"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "bench_mcp", "version": "1"}}
        self.call("initialize", init, topic=f"{s.server_root}/{sid}/{name}")
        self.conn.publish(self.rpc, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    def _on_message(self, topic, payload):
        obj = json.loads(payload)
        if "id" in obj and "method" not in obj:
            with self.cond:
                self.answers[obj["id"]] = obj
                self.cond.notify_all()

    def call(self, method, params, topic=None):
        self.next_id += 1
        rid = self.next_id
        self.conn.publish(topic or self.rpc, json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        with self.cond:
            if not self.cond.wait_for(lambda: rid in self.answers, TIMEOUT_S):
                sys.exit(f"bench: no answer to {method} within {TIMEOUT_S} s")
            answer = self.answers.pop(rid)
        if "error" in answer or answer.get("result", {}).get("isError"):
            sys.exit(f"bench: {method} failed: {answer}")
        return answer

    def run(self, calls, out):
        for _ in range(calls):
            t = time.perf_counter()
            self.call("tools/call", {"name": "get_status", "arguments": {}})
            out.append(time.perf_counter() - t)


class EchoWorker:
    """Bare MQTT on the same topics and ACLs as MCP: publish on the client's RPC topic
    (`.../bench-ping`), the echo (the drone's certificate) republishes on `.../bench-pong`."""

    def __init__(self, s, sid):
        self.got = threading.Event()
        self.conn = Conn(s, "mcp-client", lambda t, p: self.got.set())
        self.topic = f"{s.rpc_root}/{self.conn.cid}/{sid}/bench-ping"
        self.conn.subscribe(f"{s.rpc_root}/{self.conn.cid}/{sid}/bench-pong", no_local=True)

    def run(self, calls, out):
        for _ in range(calls):
            self.got.clear()
            t = time.perf_counter()
            self.conn.publish(self.topic, b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
            if not self.got.wait(TIMEOUT_S):
                sys.exit("bench: the echo did not come back")
            out.append(time.perf_counter() - t)


def measure(workers, calls_each):
    samples = [[] for _ in workers]
    threads = [threading.Thread(target=w.run, args=(calls_each, out)) for w, out in zip(workers, samples)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    flat = sorted(x for out in samples for x in out)
    if len(flat) != calls_each * len(workers):
        sys.exit(f"bench: only {len(flat)} of {calls_each * len(workers)} round trips completed")
    p = lambda q: flat[min(len(flat) - 1, int(q * len(flat)))] * 1000  # noqa: E731
    return len(flat), statistics.median(flat) * 1000, p(0.99), flat[-1] * 1000, len(flat) / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--drone-config", help="drone.toml whose certificate the echo uses (default: beside --config)")
    parser.add_argument("--server-name")
    parser.add_argument("--calls", type=int, default=1000, help="calls per scenario (split over the clients)")
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sid", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.drone_config = args.drone_config or os.path.join(os.path.dirname(os.path.abspath(args.config)), "drone.toml")
    if args.echo:
        run_echo(args)
        return
    s = Settings(args.config, args.server_name)
    sid, name = discover(s)
    print(f"# drone {name} (server id {sid}) at {s.host}:{s.port}; {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'scenario':<34} {'clients':>7} {'calls':>6} {'p50_ms':>8} {'p99_ms':>8} {'max_ms':>8} {'calls_per_s':>11}")

    # The echo runs in its own process, as the daemon does, so it does not share the
    # measuring process's interpreter lock.
    echo = subprocess.Popen(
        [sys.executable, __file__, "--echo", "--config", args.config, "--drone-config", args.drone_config, "--sid", sid],
        stdout=subprocess.PIPE, text=True)
    if echo.stdout.readline().strip() != "echo: ready":
        sys.exit("bench: the echo process did not start")

    for clients in (1, 10):
        workers = [McpWorker(s, sid, name) for _ in range(clients)]
        measure(workers, 20)  # warm-up, not reported
        row = measure(workers, max(1, args.calls // clients))
        print(f"{'mcp tools/call get_status':<34} {clients:>7} {row[0]:>6} {row[1]:>8.2f} {row[2]:>8.2f} {row[3]:>8.2f} {row[4]:>11.0f}", flush=True)
        for w in workers:
            w.conn.close()
        workers = [EchoWorker(s, sid) for _ in range(clients)]
        time.sleep(0.3)
        measure(workers, 20)
        row = measure(workers, max(1, args.calls // clients))
        print(f"{'bare mqtt publish->echo->reply':<34} {clients:>7} {row[0]:>6} {row[1]:>8.2f} {row[2]:>8.2f} {row[3]:>8.2f} {row[4]:>11.0f}", flush=True)
        for w in workers:
            w.conn.close()
    echo.terminate()
    echo.wait()


def run_echo(args):
    """The bare-MQTT echo: the drone's certificate (its ACL allows the server side of RPC
    topics) under its own client id, so the daemon's connection is left alone."""
    s = Settings(args.config, None)
    drone = Settings(args.drone_config, None)
    echo = Conn(drone, "mcp-server", lambda t, p: None)
    echo.client.on_message = lambda cl, u, m: echo.publish(m.topic[: -len("ping")] + "pong", m.payload)
    echo.subscribe(f"{s.rpc_root}/+/{args.sid}/bench-ping", no_local=True)
    time.sleep(0.3)
    print("echo: ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
