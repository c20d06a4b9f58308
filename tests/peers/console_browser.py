#!/usr/bin/env python3
"""Drives Debian's headless Chromium against the fleet console of `flight-companion ground
--console` over the DevTools protocol on a pipe (`--remote-debugging-pipe`: fd 3 in, fd 4
out, NUL-terminated JSON), so no WebSocket client is needed.

Checks what a person at the console would see and do: every drone drawn on the map inside
its keep-in and outside its keep-outs, a drone's STOP button pressed with the mouse and its
card and marker turning to stopped (and the daemon's own status latched, read with
`flight-companion estop --status`), the two-step reset (ADMIN), STOP ALL. Saves screenshots.
Prints `ok: ...` lines; exits non-zero on the first failed check.
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, chromium, width, height):
        self.profile = tempfile.mkdtemp(prefix="fc-chromium-")
        to_child_r, self.to_child_w = os.pipe()
        self.from_child_r, from_child_w = os.pipe()

        def fds():
            # The protocol's fixed descriptors: 3 for what Chromium reads, 4 for what it writes.
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}", "about:blank",
        ]
        # close_fds=False: the descriptors 3 and 4 made in `fds` must survive the exec (the
        # pipes' own descriptors are close-on-exec).
        self.proc = subprocess.Popen(args, preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buffer = b""
        self.next_id = 0
        self.session = None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.to_child_w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def read(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_child_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector):
        """A real mouse press and release at the element's centre."""
        box = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        if box is None:
            raise RuntimeError(f"no element {selector}")
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def wait(description, check, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    page = ""
    if PAGE is not None:
        try:
            page = PAGE.eval("document.getElementById('drones').innerText")[:4000]
        except Exception as e:
            page = f"(cannot read the page: {e})"
    sys.exit(f"FAIL: {description} within {timeout_s} s (last: {last}); the cards:\n{page}")


PAGE = None


def inside_polygon(x, y, polygon):
    inside = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        (xi, yi), (xj, yj) = polygon[i], polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


# What the map shows, read from the drawing itself (SVG coordinates in metres).
MAP = """(() => {
  const out = {};
  for (const g of document.querySelectorAll('#vehicles g.vehicle')) {
    const m = /translate\\(([-\\d.]+) ([-\\d.]+)\\)/.exec(g.getAttribute('transform'));
    out[g.dataset.drone] = {x: +m[1], y: +m[2], latched: g.classList.contains('latched'), keep_in: [], keep_out: []};
  }
  for (const p of document.querySelectorAll('#zones polygon.keep-in, #zones polygon.keep-out, #zones circle.keep-out, #zones circle.keep-in')) {
    const d = out[p.dataset.drone]; if (!d) continue;
    const kind = p.classList.contains('keep-in') ? 'keep_in' : 'keep_out';
    if (p.tagName === 'circle') d[kind].push({c: [+p.getAttribute('cx'), +p.getAttribute('cy')], r: +p.getAttribute('r')});
    else d[kind].push({p: p.getAttribute('points').trim().split(/\\s+/).map(s => s.split(',').map(Number))});
  }
  return out;
})()"""


def card_field(browser, drone, field):
    return browser.eval(f"""(() => {{ const c = [...document.querySelectorAll('article.drone')].find(a => a.dataset.drone === {json.dumps(drone)});
        const f = c && c.querySelector('[data-field={field}]'); return f ? f.textContent : null; }})()""")


def daemon_latched(binary, status):
    runtime_dir, config = status.split(":", 1)
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir)
    out = subprocess.run([binary, "estop", "--status", "--config", config], env=env,
                         capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        sys.exit(f"FAIL: estop --status --config {config}: {out.stderr}")
    # `OK {status as JSON}`
    return json.loads(out.stdout.split(" ", 1)[1])["latched"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--drone", action="append", required=True)
    ap.add_argument("--status", action="append", default=[], help="DRONE=RUNTIME_DIR:CONFIG of its daemon")
    ap.add_argument("--stop", required=True, help="the drone whose STOP button is pressed")
    ap.add_argument("--out", required=True, help="directory of the screenshots")
    ap.add_argument("--camera", help="a drone whose camera picture must be shown")
    args = ap.parse_args()
    status = dict(s.split("=", 1) for s in args.status)

    global PAGE
    browser = Browser(args.chromium, 1400, 900)
    PAGE = browser
    try:
        browser.call("Page.navigate", url=args.url)
        drawn = wait("three vehicles and their zones on the map", lambda: (
            lambda m: m if m and all(d in m and m[d]["keep_in"] for d in args.drone) else None)(browser.eval(MAP)), 60)
        for name in args.drone:
            v = drawn[name]
            if not all(inside_polygon(v["x"], v["y"], z["p"]) for z in v["keep_in"] if "p" in z):
                sys.exit(f"FAIL: {name} at ({v['x']}, {v['y']}) is drawn outside its keep-in {v['keep_in']}")
            for z in v["keep_out"]:
                if "c" in z and (v["x"] - z["c"][0]) ** 2 + (v["y"] - z["c"][1]) ** 2 <= z["r"] ** 2:
                    sys.exit(f"FAIL: {name} is drawn inside a keep-out {z}")
        spots = {(round(drawn[n]["x"]), round(drawn[n]["y"])) for n in args.drone}
        print(f"ok: the map shows {len(args.drone)} vehicles inside their keep-in zones and outside the keep-outs", flush=True)
        if len(spots) != len(args.drone):
            sys.exit(f"FAIL: vehicles drawn on top of each other: {spots}")
        print("ok: each vehicle at its own place (local metres)", flush=True)
        wait("every card with its battery, link, lease and audit records", lambda: all(
            (card_field(browser, d, "battery") or "–").strip()[0].isdigit()
            and (card_field(browser, d, "link") or "").startswith("hb ")
            and card_field(browser, d, "lease") is not None
            and "DaemonStart" in (card_field(browser, d, "audit") or "") for d in args.drone), 30)
        print("ok: every card shows its battery, link, lease and recent audit records", flush=True)
        if args.camera:
            wait(f"{args.camera}'s camera picture", lambda: browser.eval(f"""(() => {{
                const c = [...document.querySelectorAll('article.drone')].find(a => a.dataset.drone === {json.dumps(args.camera)});
                const i = c && c.querySelector('img.camera'); return !!i && i.complete && i.naturalWidth > 0; }})()"""), 30)
            print(f"ok: {args.camera}'s last camera picture shown", flush=True)
        browser.screenshot(os.path.join(args.out, "fleet.png"))

        target = args.stop
        started = time.monotonic()
        browser.click(f'button[data-action=stop][data-drone="{target}"]')
        wait(f"{target}'s card showing the latched stop", lambda: card_field(browser, target, "estop") == "E-STOP LATCHED", 10)
        shown_ms = (time.monotonic() - started) * 1000
        wait(f"{target}'s marker drawn stopped", lambda: browser.eval(MAP)[target]["latched"], 10)
        print(f"ok: STOP {target} pressed -> its card and marker show the latched stop after {shown_ms:.0f} ms", flush=True)
        if target in status:
            if not daemon_latched(args.binary, status[target]):
                sys.exit(f"FAIL: {target}'s daemon is not latched")
            others = [d for d in args.drone if d != target and d in status]
            if any(daemon_latched(args.binary, status[d]) for d in others):
                sys.exit("FAIL: another drone's daemon latched too")
            print(f"ok: {target}'s daemon status latched; the others not", flush=True)
        browser.screenshot(os.path.join(args.out, "stopped.png"))

        browser.click(f'button[data-action=reset][data-drone="{target}"]')
        wait("the reset armed (Confirm reset)", lambda: browser.eval(
            f"""[...document.querySelectorAll('button[data-action=reset]')].find(b => b.dataset.drone === {json.dumps(target)}).textContent""") == "Confirm reset", 10)
        browser.click(f'button[data-action=reset][data-drone="{target}"]')
        wait(f"{target}'s stop cleared after the confirmed reset", lambda: card_field(browser, target, "estop") == "e-stop clear", 10)
        if target in status and daemon_latched(args.binary, status[target]):
            sys.exit(f"FAIL: {target}'s daemon still latched after the reset")
        print(f"ok: two-step reset (ADMIN) cleared {target}", flush=True)

        started = time.monotonic()
        browser.click("#stop-all")
        wait("every card latched after STOP ALL", lambda: all(card_field(browser, d, "estop") == "E-STOP LATCHED" for d in args.drone), 10)
        shown_ms = (time.monotonic() - started) * 1000
        latched = [d for d in args.drone if d in status and daemon_latched(args.binary, status[d])]
        if len(latched) != len(status):
            sys.exit(f"FAIL: after STOP ALL only {latched} daemons are latched")
        print(f"ok: STOP ALL -> {len(args.drone)} drones shown latched after {shown_ms:.0f} ms, every daemon latched", flush=True)
        browser.screenshot(os.path.join(args.out, "all-stopped.png"))
        print("ok: all checks passed", flush=True)
    finally:
        browser.close()


if __name__ == "__main__":
    main()
