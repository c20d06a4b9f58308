// The fleet console: draws the snapshot the ground process sends over server-sent events
// (/events) and posts the e-stop buttons to /api/*. Every text from the drones is set with
// textContent, never parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const EARTH_RADIUS_M = 6371008.8;
const COLORS = ["#4aa3ff", "#ffb02e", "#c77dff", "#2ee6c8", "#ff6fae", "#b4e33d"];
let state = { drones: [] };
let origin = null; // [lat, lon] of the local frame: the first drone's home
const resetArmed = new Map(); // drone -> { nonce, until }

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// Local metres (east, north) of a latitude/longitude around the origin (equirectangular:
// exact enough over a field of a few kilometres).
function local(latLon) {
  const [lat0, lon0] = origin;
  const rad = Math.PI / 180;
  const north = (latLon[0] - lat0) * rad * EARTH_RADIUS_M;
  const east = (latLon[1] - lon0) * rad * EARTH_RADIUS_M * Math.cos(lat0 * rad);
  return [east, north];
}
// SVG coordinates: x east, y south (north up).
function xy(latLon) {
  const [e, n] = local(latLon);
  return [e, -n];
}
function points(list) {
  return list.map((p) => xy(p).map((v) => v.toFixed(2)).join(",")).join(" ");
}

function homeOf(d) {
  const env = d.envelope;
  if (env && env.home_lat_lon_deg) return env.home_lat_lon_deg;
  const h = d.status && d.status.vehicle && d.status.vehicle.home;
  if (h && h.latitude_deg !== undefined) return [h.latitude_deg, h.longitude_deg];
  return null;
}
function positionOf(d) {
  const p = d.status && d.status.vehicle && d.status.vehicle.position;
  if (!p || (p.latitude_deg === 0 && p.longitude_deg === 0)) return null;
  return [p.latitude_deg, p.longitude_deg];
}
function colorOf(i) { return COLORS[i % COLORS.length]; }

function zoneShape(zone, cls, drone, extra) {
  if (zone.shape === "circle" && zone.center_lat_lon_deg) {
    const [cx, cy] = xy(zone.center_lat_lon_deg);
    return svg("circle", Object.assign({ cx, cy, r: zone.radius_m, class: cls, "data-drone": drone, "data-zone": zone.name }, extra));
  }
  if (zone.polygon_lat_lon_deg) {
    return svg("polygon", Object.assign({ points: points(zone.polygon_lat_lon_deg), class: cls, "data-drone": drone, "data-zone": zone.name }, extra));
  }
  return null;
}

function drawMap() {
  const map = document.getElementById("map");
  const layers = {};
  for (const id of ["tiles", "zones", "trails", "homes", "vehicles"]) {
    layers[id] = document.getElementById(id);
    layers[id].replaceChildren();
  }
  const drones = state.drones;
  if (!origin) {
    const first = drones.map(homeOf).find((h) => h);
    if (!first) return;
    origin = first;
  }
  const xs = [], ys = [];
  const extend = (p, r) => { xs.push(p[0] - (r || 0), p[0] + (r || 0)); ys.push(p[1] - (r || 0), p[1] + (r || 0)); };
  drones.forEach((d, i) => {
    const env = d.envelope;
    const color = colorOf(i);
    const home = homeOf(d);
    if (env) {
      const margin = env.margin_horizontal_m || 0;
      for (const z of env.keep_in || []) {
        const s = zoneShape(z, "keep-in", d.name);
        if (s) layers.zones.appendChild(s);
        const m = zoneShape(z, "margin", d.name, { "stroke-width": 2 * margin });
        if (m) layers.zones.appendChild(m);
        (z.polygon_lat_lon_deg || []).forEach((p) => extend(xy(p)));
        if (z.center_lat_lon_deg) extend(xy(z.center_lat_lon_deg), z.radius_m);
      }
      for (const z of env.keep_out || []) {
        const s = zoneShape(z, "keep-out", d.name);
        if (s) layers.zones.appendChild(s);
        const m = zoneShape(z, "margin", d.name, { "stroke-width": 2 * margin });
        if (m) layers.zones.appendChild(m);
      }
      if (home && env.distance_from_home_m_max) {
        const [cx, cy] = xy(home);
        layers.zones.appendChild(svg("circle", { cx, cy, r: env.distance_from_home_m_max, class: "range", "data-drone": d.name }));
      }
    }
    if (home) {
      const [hx, hy] = xy(home);
      extend([hx, hy]);
      const h = svg("rect", { x: hx - 3, y: hy - 3, width: 6, height: 6, class: "home", stroke: color, "data-drone": d.name });
      layers.homes.appendChild(h);
    }
    if (d.trail && d.trail.length > 1) {
      layers.trails.appendChild(svg("polyline", { points: points(d.trail), class: "trail", stroke: color, "data-drone": d.name }));
    }
  });
  if (!xs.length) return;
  const pad = 15;
  const minX = Math.min(...xs) - pad, maxX = Math.max(...xs) + pad;
  const minY = Math.min(...ys) - pad, maxY = Math.max(...ys) + pad;
  const w = maxX - minX, h = maxY - minY;
  map.setAttribute("viewBox", `${minX.toFixed(1)} ${minY.toFixed(1)} ${w.toFixed(1)} ${h.toFixed(1)}`);
  const size = Math.max(w, h) / 45; // a vehicle marker's size in metres, for any field
  drones.forEach((d, i) => {
    const pos = positionOf(d);
    if (!pos) return;
    const [x, y] = xy(pos);
    const heading = (d.status.vehicle.attitude && d.status.vehicle.attitude.heading_deg) || 0;
    const latched = d.status.emergency_stop && d.status.emergency_stop.latched;
    const g = svg("g", {
      class: "vehicle" + (latched ? " latched" : "") + (d.online ? "" : " offline"),
      "data-drone": d.name, "data-x": x.toFixed(2), "data-y": y.toFixed(2),
      transform: `translate(${x.toFixed(2)} ${y.toFixed(2)})`,
    });
    const body = svg("polygon", {
      points: `0,${-size} ${size * 0.6},${size * 0.7} 0,${size * 0.35} ${-size * 0.6},${size * 0.7}`,
      fill: d.online ? colorOf(i) : "#555", stroke: "#fff", "stroke-width": size * 0.08,
      transform: `rotate(${heading})`,
    });
    g.appendChild(body);
    const label = svg("text", { x: size * 0.9, y: -size * 0.3, class: "vehicle-label", "font-size": size * 1.1, "stroke-width": size * 0.2 });
    label.textContent = d.name + (latched ? " (STOPPED)" : "");
    g.appendChild(label);
    layers.vehicles.appendChild(g);
  });
  drawTiles(layers.tiles, minX, minY, w, h);
  const bar = niceLength(w / 5);
  document.getElementById("scale").textContent = `local metres, north up: ${w.toFixed(0)} × ${h.toFixed(0)} m shown (${bar} m = ${(100 * bar / w).toFixed(0)} % of the width)`;
}

function niceLength(m) {
  const p = Math.pow(10, Math.floor(Math.log10(m)));
  for (const f of [1, 2, 5, 10]) if (f * p >= m) return f * p;
  return 10 * p;
}

// Optional tiles (console.tile_url): Web Mercator tiles placed by their corners' local metres.
function drawTiles(layer, minX, minY, w, h) {
  if (!state.tile_url || !origin) return;
  const rad = Math.PI / 180;
  const metresPerPixelAtZ0 = 2 * Math.PI * EARTH_RADIUS_M * Math.cos(origin[0] * rad) / 256;
  const z = Math.max(0, Math.min(19, Math.round(Math.log2(metresPerPixelAtZ0 / (w / 1024)))));
  const n = Math.pow(2, z);
  const tileX = (lon) => Math.floor((lon + 180) / 360 * n);
  const tileY = (lat) => Math.floor((1 - Math.log(Math.tan(lat * rad) + 1 / Math.cos(lat * rad)) / Math.PI) / 2 * n);
  const lonOf = (x) => x / n * 360 - 180;
  const latOf = (y) => Math.atan(Math.sinh(Math.PI * (1 - 2 * y / n))) / rad;
  const corner = (e, north) => [origin[0] + north / EARTH_RADIUS_M / rad, origin[1] + e / (EARTH_RADIUS_M * Math.cos(origin[0] * rad)) / rad];
  const nw = corner(minX, -minY), se = corner(minX + w, -(minY + h));
  for (let tx = tileX(nw[1]); tx <= tileX(se[1]) && tx - tileX(nw[1]) < 16; tx++) {
    for (let ty = tileY(nw[0]); ty <= tileY(se[0]) && ty - tileY(nw[0]) < 16; ty++) {
      const [x0, y0] = xy([latOf(ty), lonOf(tx)]);
      const [x1, y1] = xy([latOf(ty + 1), lonOf(tx + 1)]);
      const href = state.tile_url.replace("{z}", z).replace("{x}", tx).replace("{y}", ty);
      layer.appendChild(svg("image", { href, x: x0, y: y0, width: x1 - x0, height: y1 - y0, preserveAspectRatio: "none", opacity: 0.6 }));
    }
  }
}

function fmt(v, digits, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return (typeof v === "number" ? v.toFixed(digits) : String(v)) + (unit || "");
}

function droneCard(d, i) {
  const s = d.status || {};
  const v = s.vehicle || {};
  const stop = s.emergency_stop || {};
  const card = el("article", { class: "drone" + (stop.latched ? " latched" : ""), "data-drone": d.name, style: `--c:${colorOf(i)}` });
  const title = el("h2");
  title.appendChild(el("span", {}, d.name));
  title.appendChild(el("span", { class: "badge " + (d.online ? "on" : "off"), "data-field": "online" }, d.online ? "online" : "offline"));
  if (d.online && d.session !== "ready") title.appendChild(el("span", { class: "badge warn" }, "session " + d.session));
  title.appendChild(el("span", { class: "badge" + (stop.latched ? " latched" : ""), "data-field": "estop" }, stop.latched ? "E-STOP LATCHED" : "e-stop clear"));
  card.appendChild(title);

  const grid = el("dl", { class: "grid" });
  const row = (k, val, field) => { grid.appendChild(el("dt", {}, k)); grid.appendChild(el("dd", field ? { "data-field": field } : {}, val)); };
  const mode = v.mode || {};
  row("mode", `${fmt(mode.flight_mode)}${mode.armed ? " · armed" : " · disarmed"}`, "mode");
  const b = v.battery || {};
  row("battery", `${fmt(b.remaining_percent, 0, " %")} · ${fmt(b.voltage_v, 1, " V")}`, "battery");
  const p = v.position || {};
  row("altitude", fmt(p.altitude_relative_m, 1, " m"), "altitude");
  row("speed", fmt(p.ground_speed_m_s, 1, " m/s"));
  const l = v.link || {};
  row("link", l.connected === false ? "autopilot link down" : `hb ${fmt(l.heartbeat_age_ms, 0, " ms")} · loss ${fmt(l.loss_percent, 1, " %")}`, "link");
  const g = v.gps || {};
  row("gps", `${fmt(g.fix_type)} · ${fmt(g.satellites_visible, 0)} sats`);
  row("lease", s.lease_holder || "nobody", "lease");
  row("action", s.active_action || "idle");
  card.appendChild(grid);
  if (stop.latched) card.appendChild(el("div", { class: "errors" }, `stopped: ${stop.reason || ""} (${stop.rung || "no rung"}${stop.rung_confirmed ? ", confirmed" : ""})`));
  if (s.envelope_warning) card.appendChild(el("div", { class: "errors" }, s.envelope_warning));

  const health = s.health || {};
  const alerts = el("div", { class: "alerts", "data-field": "alerts" });
  alerts.appendChild(el("span", { class: "badge " + (health.state === "healthy" ? "on" : health.state ? "warn" : "") }, health.state || "health unknown"));
  for (const [name, active] of Object.entries(health.alerts || {})) {
    if (active) alerts.appendChild(el("span", { class: "badge off" }, name));
  }
  for (const r of health.reasons || []) alerts.appendChild(el("div", { class: "muted" }, r));
  card.appendChild(alerts);

  const actions = el("div", { class: "row" });
  const stopButton = el("button", { class: "stop", type: "button", "data-action": "stop", "data-drone": d.name, title: "emergency_stop: hold now, land if the hold fails, latched" }, "STOP");
  stopButton.addEventListener("click", () => act("/api/stop", { drone: d.name }));
  actions.appendChild(stopButton);
  const armed = resetArmed.get(d.name);
  const live = armed && armed.until > Date.now();
  const reset = el("button", { class: "reset" + (live ? " armed" : ""), type: "button", "data-action": "reset", "data-drone": d.name, title: "reset_emergency_stop (ADMIN): press, then confirm within 10 s" }, live ? "Confirm reset" : "Reset e-stop (ADMIN)");
  reset.addEventListener("click", () => resetStep(d.name));
  actions.appendChild(reset);
  if (d.camera_seq > 0) {
    actions.appendChild(el("img", { class: "camera", alt: `last picture of ${d.name}`, src: `/camera?drone=${encodeURIComponent(d.name)}&v=${d.camera_seq}` }));
  }
  card.appendChild(actions);

  if (Array.isArray(d.audit)) {
    const audit = el("div", { class: "audit", "data-field": "audit" });
    for (const r of d.audit) audit.appendChild(el("div", {}, auditLine(r)));
    if (!d.audit.length) audit.appendChild(el("div", { class: "muted" }, "no audit records yet"));
    card.appendChild(audit);
  }
  for (const [what, e] of Object.entries(d.errors || {})) {
    card.appendChild(el("div", { class: "errors" }, `${what}: ${e}`));
  }
  return card;
}

// One audit record (`audit://recent`: {seq, time_unix_ms, prev, event: {Kind: {...}}}) as
// a line: the time, the kind, and its short fields (digests and arguments left out).
function auditLine(r) {
  if (!r || typeof r !== "object") return String(r);
  const t = r.time_unix_ms ? new Date(r.time_unix_ms).toISOString().slice(11, 19) : "";
  const ev = r.event;
  if (typeof ev === "string") return `${t} ${ev}`;
  const [kind, body] = Object.entries(ev || {})[0] || ["?", {}];
  const skip = ["args", "args_sha256", "request_id", "session", "frontier", "verifier_key", "sha256", "prev"];
  const fields = body && typeof body === "object"
    ? Object.entries(body).filter(([k, v]) => !skip.includes(k) && v !== "" && v !== null)
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ")
    : String(body);
  return `${t} ${kind} ${fields}`.trim();
}

function render() {
  document.getElementById("identity").textContent = state.identity ? `as ${state.identity}` : "";
  const list = document.getElementById("drones");
  list.replaceChildren(...state.drones.map(droneCard));
  if (!state.drones.length) list.appendChild(el("p", { class: "muted" }, "No drone seen yet (fleet.server_names)."));
  drawMap();
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 6000);
}

async function act(path, body) {
  try {
    const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", "X-FC-Console": "1" }, body: JSON.stringify(body || {}) });
    const answer = await r.json();
    let text = answer.message;
    if (answer.ok && answer.result && Array.isArray(answer.result.drones)) {
      // emergency_stop_all: one line per drone.
      text = answer.result.drones.map((d) => `${d.drone}: ${d.latched === true ? "latched" : "NOT latched"} (${d.message})`).join("; ");
    } else if (answer.ok) {
      text = answer.result && (answer.result.message || JSON.stringify(answer.result));
    }
    toast(`${path.replace("/api/", "")}${body && body.drone ? " " + body.drone : ""}: ${text}`);
    return answer;
  } catch (e) {
    toast(`${path}: ${e}`);
    return null;
  }
}

async function resetStep(drone) {
  const armed = resetArmed.get(drone);
  if (armed && armed.until > Date.now()) {
    resetArmed.delete(drone);
    await act("/api/reset", { drone, nonce: armed.nonce });
  } else {
    const answer = await act("/api/reset/arm", { drone });
    if (answer && answer.ok) {
      resetArmed.set(drone, { nonce: answer.result.nonce, until: Date.now() + answer.result.expires_in_ms });
      toast(`reset ${drone}: press "Confirm reset" within ${answer.result.expires_in_ms / 1000} s`);
    }
  }
  render();
}

document.getElementById("stop-all").addEventListener("click", () => act("/api/stop_all"));

function connect() {
  const badge = document.getElementById("link");
  const events = new EventSource("/events");
  events.addEventListener("fleet", (e) => {
    state = JSON.parse(e.data);
    badge.textContent = `live · ${new Date(state.updated_unix_ms).toISOString().slice(11, 19)} UTC`;
    badge.className = "badge on";
    document.body.dataset.updated = String(state.updated_unix_ms);
    render();
  });
  events.onerror = () => { badge.textContent = "disconnected: retrying"; badge.className = "badge off"; };
}
connect();
