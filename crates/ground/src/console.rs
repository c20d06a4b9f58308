//! The web console of `flight-companion ground --fleet ... --console ADDR:PORT`: a page on a
//! local port showing the fleet on a map in local metres, each drone's state, and the
//! emergency-stop buttons.
//!
//! **No side channel.** Everything the console shows or does is an MCP request through the
//! fleet core's own drone sessions ([`crate::fleet::Fleet::handle_console_request`]):
//! `get_status`, `get_envelope`, `audit://recent`, `camera://latest`, `emergency_stop`,
//! `emergency_stop_all`, `reset_emergency_stop`. So the drones see the ground process's
//! identity and role, and decide, refuse and audit as for any other call.
//!
//! **No external assets.** The page, its script and its style are compiled into the binary
//! (`include_str!`): it works in the field without internet. The map is SVG in local metres
//! around the first drone's home; a tile URL (`console.tile_url`) is only drawn when set.
//!
//! **Live over server-sent events** (`GET /events`): a snapshot of the fleet as JSON after
//! every poll. SSE needs nothing but HTTP/1.1 and the browser's `EventSource`, so the small
//! HTTP server here (like `metrics::serve`) is enough and no HTTP framework is added.
//!
//! **Requests that act** (`POST /api/...`) need the header `X-FC-Console: 1` and a `Host` of
//! the listening address: a page of another origin cannot send such a header without a CORS
//! preflight, which this server never approves, and a rebinding DNS name is not the address.
//! The reset is two steps on the server too: `/api/reset/arm` gives a nonce valid 10 s for
//! one drone, `/api/reset` with it calls `reset_emergency_stop` (the drone checks ADMIN).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use flight_companion_core::mcp::uri::{AUDIT_RECENT_URI, CAMERA_URI};

use crate::config::ConsoleSection;
use crate::fleet::CONSOLE_DRONES;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// Connections served at once (page loads, event streams, actions); more are closed at once.
const CONNECTIONS_MAX: usize = 32;
/// A request head and body together at most this long.
const REQUEST_BYTES_MAX: usize = 16 * 1024;
/// Time to read a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a console request waits for the fleet core's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued for the ground loop. Policy when full: the console's poller and actions
/// wait (they are the only senders).
pub const REQUESTS_CAPACITY: usize = 64;
/// Positions kept per drone for its trail.
const TRAIL_POINTS_MAX: usize = 600;
/// Recent audit records shown per drone.
const AUDIT_SHOWN: usize = 12;
/// Validity of a reset's first step.
const RESET_ARM: Duration = Duration::from_secs(10);
/// An SSE comment this often keeps proxies and the browser from closing an idle stream.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// One request of the console for the ground loop, which hands it to the fleet core and
/// sends back the JSON-RPC answer.
#[derive(Debug)]
pub struct ConsoleRequest {
    pub method: String,
    pub params: Value,
    pub reply: oneshot::Sender<Value>,
}

/// What the HTTP handlers share.
struct Shared {
    requests: mpsc::Sender<ConsoleRequest>,
    snapshot: watch::Receiver<Arc<String>>,
    cameras: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    resets: Mutex<HashMap<String, (u64, Instant)>>,
    /// Wakes the poller after an action, so its effect shows at once.
    poll_now: Notify,
    identity: String,
    tile_url: Option<String>,
}

/// Binds the console's address (before anything else starts, so a taken port fails loudly),
/// starts the server and the poller, and returns the requests for the ground loop.
pub async fn start(
    config: &ConsoleSection,
    identity: String,
    shutdown: CancellationToken,
) -> anyhow::Result<mpsc::Receiver<ConsoleRequest>> {
    let Some(listen) = config.listen else {
        anyhow::bail!("console.listen is not set");
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for the console on {listen} (console.listen)"))?;
    let bound = listener.local_addr().unwrap_or(listen);
    tracing::info!("console: serving http://{bound}/");
    let (requests, receiver) = mpsc::channel(REQUESTS_CAPACITY);
    let (snapshot_tx, snapshot) = watch::channel(Arc::new(String::from("{\"drones\":[]}")));
    let shared = Arc::new(Shared {
        requests,
        snapshot,
        cameras: Mutex::new(HashMap::new()),
        resets: Mutex::new(HashMap::new()),
        poll_now: Notify::new(),
        identity,
        tile_url: config.tile_url.clone(),
    });
    let interval = Duration::from_millis(config.poll_interval_ms);
    tokio::spawn(poll(
        shared.clone(),
        snapshot_tx,
        interval,
        shutdown.clone(),
    ));
    tokio::spawn(serve(listener, shared, bound, shutdown));
    Ok(receiver)
}

/// Sends one request to the fleet core and waits for its JSON-RPC answer.
async fn request(shared: &Shared, method: &str, params: Value) -> Result<Value, String> {
    let (reply, answer) = oneshot::channel();
    let request = ConsoleRequest {
        method: method.to_owned(),
        params,
        reply,
    };
    shared
        .requests
        .send(request)
        .await
        .map_err(|_| "the ground loop is gone".to_owned())?;
    match tokio::time::timeout(CALL_TIMEOUT, answer).await {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(_)) => Err("the ground loop dropped the request".into()),
        Err(_) => Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
    }
}

/// A tool's structured result, or why there is none (a JSON-RPC error, a tool error).
async fn call_tool(
    shared: &Shared,
    drone: Option<&str>,
    tool: &str,
    mut arguments: Value,
) -> Result<Value, String> {
    if let (Some(d), Some(a)) = (drone, arguments.as_object_mut()) {
        a.insert("drone".into(), Value::String(d.to_owned()));
    }
    let answer = request(
        shared,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
    .await?;
    tool_result(&answer)
}

/// The structured result of a `tools/call` answer, or its error text.
fn tool_result(answer: &Value) -> Result<Value, String> {
    if let Some(e) = answer.get("error") {
        return Err(e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned());
    }
    let result = answer.get("result").cloned().unwrap_or(Value::Null);
    let text = result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("");
    if result.get("isError") == Some(&Value::Bool(true)) {
        return Err(text.to_owned());
    }
    if let Some(s) = result.get("structuredContent") {
        return Ok(s.clone());
    }
    Ok(serde_json::from_str(text).unwrap_or_else(|_| json!({"message": text})))
}

/// The first content of a `resources/read` answer, or its error text.
async fn read_resource(shared: &Shared, drone: &str, uri: &str) -> Result<Value, String> {
    let uri = crate::fleet::fleet_uri(uri, drone);
    let answer = request(shared, "resources/read", json!({"uri": uri})).await?;
    if let Some(e) = answer.get("error") {
        return Err(e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned());
    }
    answer
        .pointer("/result/contents/0")
        .cloned()
        .ok_or_else(|| "no contents".to_owned())
}

/// What the console keeps of one drone between polls.
#[derive(Default)]
struct DroneView {
    online: bool,
    session: String,
    status: Option<Value>,
    envelope: Option<Value>,
    audit: Option<Value>,
    camera_seq: u64,
    trail: VecDeque<[f64; 2]>,
    errors: BTreeMap<&'static str, String>,
}

impl DroneView {
    fn note<T>(&mut self, what: &'static str, outcome: Result<T, String>) -> Option<T> {
        match outcome {
            Ok(v) => {
                self.errors.remove(what);
                Some(v)
            }
            Err(e) => {
                self.errors.insert(what, e);
                None
            }
        }
    }

    fn to_json(&self, name: &str) -> Value {
        json!({
            "name": name,
            "online": self.online,
            "session": self.session,
            "status": self.status,
            "envelope": self.envelope,
            "audit": self.audit,
            "camera_seq": self.camera_seq,
            "trail": self.trail,
            "errors": self.errors,
        })
    }
}

/// Asks the fleet for every drone's state every `interval` (or at once after an action) and
/// publishes the snapshot the event streams send.
async fn poll(
    shared: Arc<Shared>,
    snapshot: watch::Sender<Arc<String>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut views: BTreeMap<String, DroneView> = BTreeMap::new();
    let mut tick: u64 = 0;
    loop {
        let drones = match request(&shared, CONSOLE_DRONES, json!({})).await {
            Ok(a) => a
                .pointer("/result/drones")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!("console: cannot list the drones: {e}");
                Vec::new()
            }
        };
        let updates = drones.iter().map(|d| {
            let known = d["name"].as_str().and_then(|n| views.get(n));
            let envelope = tick % 10 == 0 || known.is_none_or(|v| v.envelope.is_none());
            poll_drone(&shared, d, tick, envelope)
        });
        let results = futures::future::join_all(updates).await;
        for (d, result) in drones.iter().zip(results) {
            let name = d["name"].as_str().unwrap_or("").to_owned();
            let view = views.entry(name.clone()).or_default();
            apply(&shared, view, &name, d, result);
        }
        let list: Vec<Value> = views.iter().map(|(n, v)| v.to_json(n)).collect();
        let now_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let text = json!({
            "identity": shared.identity,
            "tile_url": shared.tile_url,
            "updated_unix_ms": now_unix_ms,
            "poll_interval_ms": interval.as_millis() as u64,
            "drones": list,
        })
        .to_string();
        snapshot.send_replace(Arc::new(text));
        tick += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = shared.poll_now.notified() => {}
        }
    }
}

/// One poll of one drone: what was asked and the outcomes.
#[derive(Default)]
struct Polled {
    status: Option<Result<Value, String>>,
    envelope: Option<Result<Value, String>>,
    audit: Option<Result<Value, String>>,
    camera: Option<Result<Value, String>>,
}

async fn poll_drone(shared: &Shared, drone: &Value, tick: u64, envelope: bool) -> Polled {
    let name = drone["name"].as_str().unwrap_or("");
    if drone["online"] != true || drone["session"] != "ready" {
        return Polled::default();
    }
    let has = |list: &str, item: &str| {
        drone[list]
            .as_array()
            .is_some_and(|l| l.iter().any(|v| v == item))
    };
    let status = call_tool(shared, Some(name), "get_status", json!({}));
    // The envelope changes rarely (a tightening, a new home): every 10 polls, or until known.
    let envelope = async {
        if envelope {
            Some(call_tool(shared, Some(name), "get_envelope", json!({})).await)
        } else {
            None
        }
    };
    let audit = async {
        if tick % 2 == 0 && has("resources", AUDIT_RECENT_URI) {
            Some(read_resource(shared, name, AUDIT_RECENT_URI).await)
        } else {
            None
        }
    };
    let camera = async {
        if tick % 3 == 0 && has("resources", CAMERA_URI) {
            Some(read_resource(shared, name, CAMERA_URI).await)
        } else {
            None
        }
    };
    let (status, envelope, audit, camera) = tokio::join!(status, envelope, audit, camera);
    Polled {
        status: Some(status),
        envelope,
        audit,
        camera,
    }
}

fn apply(shared: &Shared, view: &mut DroneView, name: &str, drone: &Value, polled: Polled) {
    view.online = drone["online"] == true;
    view.session = drone["session"].as_str().unwrap_or("").to_owned();
    if !view.online {
        view.errors.clear();
        return;
    }
    if drone["session"] != "ready" {
        // Its envelope is asked again as soon as the session is back.
        view.envelope = None;
        return;
    }
    if let Some(status) = polled.status.and_then(|s| view.note("status", s)) {
        let lat = status
            .pointer("/vehicle/position/latitude_deg")
            .and_then(Value::as_f64);
        let lon = status
            .pointer("/vehicle/position/longitude_deg")
            .and_then(Value::as_f64);
        if let (Some(lat), Some(lon)) = (lat, lon) {
            let moved = view.trail.back().is_none_or(|p| p[0] != lat || p[1] != lon);
            if moved && (lat != 0.0 || lon != 0.0) {
                if view.trail.len() >= TRAIL_POINTS_MAX {
                    view.trail.pop_front();
                }
                view.trail.push_back([lat, lon]);
            }
        }
        view.status = Some(status);
    }
    if let Some(envelope) = polled.envelope.and_then(|e| view.note("envelope", e)) {
        view.envelope = Some(envelope);
    }
    if let Some(audit) = polled.audit.and_then(|a| view.note("audit", a)) {
        let records: Value = audit
            .get("text")
            .and_then(Value::as_str)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        let recent: Vec<Value> = records
            .as_array()
            .map(|r| {
                r.iter()
                    .rev()
                    .filter(|r| !is_read(r))
                    .take(AUDIT_SHOWN)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        view.audit = Some(Value::Array(recent));
    }
    if let Some(camera) = polled.camera.and_then(|c| view.note("camera", c)) {
        let bytes = camera
            .get("blob")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        if let Some(bytes) = bytes {
            let mut cameras = shared.cameras.lock().unwrap_or_else(|p| p.into_inner());
            let changed = cameras.get(name).is_none_or(|old| **old != bytes);
            if changed {
                cameras.insert(name.to_owned(), Arc::new(bytes));
                view.camera_seq += 1;
            }
        }
    }
}

/// An audit record of a read that went well (the console's own polls among them): left out
/// of the panel, which would show nothing else.
fn is_read(record: &Value) -> bool {
    let Some(call) = record.pointer("/event/Call") else {
        return false;
    };
    let target = call.get("target").and_then(Value::as_str).unwrap_or("");
    let read = target.starts_with("resources/read:")
        || [
            "tools/call:get_status",
            "tools/call:get_envelope",
            "tools/call:camera_status",
        ]
        .contains(&target);
    read && call.get("outcome").and_then(Value::as_str) == Some("ok")
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    bound: SocketAddr,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Overflow policy: a connection beyond the limit is closed unanswered.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, &shared, bound, shutdown).await;
        });
    }
}

/// A parsed request: method, path, query, the headers asked about, body.
#[derive(Debug, Default, PartialEq)]
struct Request {
    method: String,
    path: String,
    query: String,
    host: String,
    console_header: bool,
    body: Vec<u8>,
}

/// Parses a request from the bytes read so far: `Ok(None)` when more are needed.
fn parse_request(bytes: &[u8]) -> Result<Option<Request>, &'static str> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if bytes.len() > REQUEST_BYTES_MAX {
            Err("too long")
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().ok_or("empty")?.split(' ');
    let (method, target) = (
        first.next().ok_or("no method")?,
        first.next().ok_or("no target")?,
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        ..Request::default()
    };
    let mut length = 0usize;
    for line in lines {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "host" => request.host = value.to_owned(),
            "content-length" => length = value.parse().map_err(|_| "bad Content-Length")?,
            "x-fc-console" => request.console_header = value == "1",
            _ => {}
        }
    }
    let body_start = end + 4;
    if body_start + length > REQUEST_BYTES_MAX {
        return Err("too long");
    }
    if bytes.len() < body_start + length {
        return Ok(None);
    }
    request.body = bytes[body_start..body_start + length].to_vec();
    Ok(Some(request))
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(chunk.get(..n)?);
        match parse_request(&buffer) {
            Ok(Some(r)) => return Some(r),
            Ok(None) => {}
            Err(_) => return None,
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    shared: &Shared,
    bound: SocketAddr,
    shutdown: CancellationToken,
) {
    let Ok(Some(request)) = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await
    else {
        let _ = stream
            .write_all(&response(400, "text/plain", b"bad request\n"))
            .await;
        return;
    };
    let reply = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/") | ("GET", "/index.html") => page(INDEX_HTML, "text/html; charset=utf-8", shared),
        ("GET", "/console.js") => page(CONSOLE_JS, "text/javascript; charset=utf-8", shared),
        ("GET", "/console.css") => page(CONSOLE_CSS, "text/css; charset=utf-8", shared),
        ("GET", "/state") => {
            let text = shared.snapshot.borrow().clone();
            response(200, "application/json", text.as_bytes())
        }
        ("GET", "/events") => return events(stream, shared, shutdown).await,
        ("GET", "/camera") => camera(shared, &request.query),
        ("POST", _) if !same_host(&request.host, bound) || !request.console_header => response(
            403,
            "text/plain",
            b"actions need the console's own page (X-FC-Console header, Host of the listening address)\n",
        ),
        ("POST", path) => act(shared, path, &request.body).await,
        _ => response(404, "text/plain", b"not found\n"),
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// Whether a `Host` header names the listening address (`localhost` for a loopback one).
fn same_host(host: &str, bound: SocketAddr) -> bool {
    host == bound.to_string()
        || (bound.ip().is_loopback() && host == format!("localhost:{}", bound.port()))
}

fn page(body: &str, content_type: &str, shared: &Shared) -> Vec<u8> {
    let mut reply = response(200, content_type, body.as_bytes());
    // Nothing but this server's own script, style and pictures (and the tiles, when set).
    let tiles = shared
        .tile_url
        .as_deref()
        .and_then(tile_origin)
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    let csp = format!(
        "Content-Security-Policy: default-src 'self'; img-src 'self' data:{tiles}; style-src 'self'; script-src 'self'; frame-ancestors 'none'\r\n"
    );
    if let Some(at) = reply.windows(2).position(|w| w == b"\r\n") {
        reply.splice(at + 2..at + 2, csp.into_bytes());
    }
    reply
}

/// `scheme://host[:port]` of a tile URL template.
fn tile_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}"))
}

fn camera(shared: &Shared, query: &str) -> Vec<u8> {
    let name = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("drone="))
        .map(percent_decode)
        .unwrap_or_default();
    let picture = shared
        .cameras
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .cloned();
    match picture {
        Some(jpeg) => response(200, "image/jpeg", &jpeg),
        None => response(404, "text/plain", b"no picture of that drone yet\n"),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The server-sent events: the snapshot now and after every change.
async fn events(mut stream: TcpStream, shared: &Shared, shutdown: CancellationToken) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut snapshot = shared.snapshot.clone();
    loop {
        let text = snapshot.borrow_and_update().clone();
        let event = format!("event: fleet\ndata: {text}\n\n");
        if stream.write_all(event.as_bytes()).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = snapshot.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                _ = tokio::time::sleep(SSE_KEEPALIVE) => {
                    if stream.write_all(b": keepalive\n\n").await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// `POST /api/stop` `{"drone"}`, `/api/stop_all`, `/api/reset/arm` `{"drone"}`,
/// `/api/reset` `{"drone", "nonce"}`: the answer is JSON `{"ok", "message", "result"}`.
async fn act(shared: &Shared, path: &str, body: &[u8]) -> Vec<u8> {
    let args: Value = serde_json::from_slice(body).unwrap_or(json!({}));
    let drone = args.get("drone").and_then(Value::as_str).map(str::to_owned);
    let reason = "web console";
    let outcome = match (path, drone.as_deref()) {
        ("/api/stop_all", _) => {
            call_tool(
                shared,
                None,
                crate::fleet::STOP_ALL,
                json!({"reason": reason}),
            )
            .await
        }
        ("/api/stop", Some(d)) => {
            call_tool(shared, Some(d), "emergency_stop", json!({"reason": reason})).await
        }
        ("/api/reset/arm", Some(d)) => {
            let nonce = fastrand::u64(..);
            let mut resets = shared.resets.lock().unwrap_or_else(|p| p.into_inner());
            resets.retain(|_, (_, at)| at.elapsed() < RESET_ARM);
            resets.insert(d.to_owned(), (nonce, Instant::now()));
            Ok(json!({"nonce": nonce.to_string(), "expires_in_ms": RESET_ARM.as_millis() as u64}))
        }
        ("/api/reset", Some(d)) => {
            let given = args.get("nonce").and_then(Value::as_str).unwrap_or("");
            let armed = shared
                .resets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(d)
                .filter(|(nonce, at)| nonce.to_string() == given && at.elapsed() < RESET_ARM);
            match armed {
                Some(_) => call_tool(shared, Some(d), "reset_emergency_stop", json!({})).await,
                None => Err("the reset was not armed for this drone in the last 10 s: press Reset, then Confirm".into()),
            }
        }
        (_, None) if path.starts_with("/api/") => Err("needs {\"drone\": SERVER NAME}".into()),
        _ => return response(404, "text/plain", b"not found\n"),
    };
    shared.poll_now.notify_one();
    let body = match outcome {
        Ok(result) => json!({"ok": true, "result": result}),
        Err(message) => json!({"ok": false, "message": message}),
    };
    response(200, "application/json", body.to_string().as_bytes())
}

fn response(code: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Not Found",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_in_pieces_and_bad_ones_are_refused() {
        let full = b"POST /api/stop?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-FC-Console: 1\r\nContent-Length: 17\r\n\r\n{\"drone\":\"a/b\"}\r\n";
        for cut in 0..full.len() - 1 {
            assert_eq!(parse_request(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let r = parse_request(full).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("POST", "/api/stop", "x=1")
        );
        assert_eq!(r.host, "127.0.0.1:8080");
        assert!(r.console_header);
        assert_eq!(r.body, b"{\"drone\":\"a/b\"}\r\n");
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n").is_err());
        assert!(parse_request(&vec![b'a'; REQUEST_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn only_the_listening_address_is_a_host_for_actions() {
        let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(same_host("127.0.0.1:8080", bound));
        assert!(same_host("localhost:8080", bound));
        assert!(!same_host("evil.example:8080", bound));
        assert!(!same_host("127.0.0.1:8081", bound));
    }

    #[test]
    fn tool_answers_give_the_structured_result_or_the_reason() {
        let ok = json!({"result": {"content": [{"type": "text", "text": "{}"}], "structuredContent": {"a": 1}}});
        assert_eq!(tool_result(&ok), Ok(json!({"a": 1})));
        let refused = json!({"result": {"content": [{"type": "text", "text": "needs ADMIN"}], "isError": true}});
        assert_eq!(tool_result(&refused), Err("needs ADMIN".into()));
        let error = json!({"error": {"code": -32602, "message": "unknown drone"}});
        assert_eq!(tool_result(&error), Err("unknown drone".into()));
        assert_eq!(percent_decode("fleet%2Falpha"), "fleet/alpha");
        let read = json!({"event": {"Call": {"target": "tools/call:get_status", "outcome": "ok"}}});
        let stop =
            json!({"event": {"Call": {"target": "tools/call:emergency_stop", "outcome": "ok"}}});
        let refused = json!({"event": {"Call": {"target": "resources/read:audit://recent", "outcome": "denied"}}});
        assert!(is_read(&read));
        assert!(!is_read(&stop) && !is_read(&refused));
        assert!(!is_read(&json!({"event": {"Stop": {"kind": "triggered"}}})));
        assert_eq!(percent_decode("%zz%2"), "%zz%2");
        assert_eq!(
            tile_origin("https://t.example:8443/{z}/{x}/{y}.png").as_deref(),
            Some("https://t.example:8443")
        );
    }
}
