//! The ground-station endpoints' IO, and the decision loop's side of them.
//!
//! Each endpoint is a [`Link`] of its own (the autopilot link's transport: `udpin`, `udpout`,
//! `tcpin`, serial, reopened with backoff; `PeerPolicy::OPEN`: the latest UDP sender, the
//! newest TCP client), with its own small task merging its events into one bounded channel
//! of [`GcsInput`]s, which the daemon's loop reads as one branch. The loop calls
//! [`GcsLoop::from_autopilot`] for every autopilot link event and [`GcsLoop::handle`] for
//! every input: both decide with the sans-IO [`Router`] and the vehicle state of that very
//! turn, and never block (a full endpoint queue drops the frame for that endpoint and counts
//! it). The telemetry log is written by a task of its own, fed through a bounded channel.

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use mavlink::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::router::{Decision, Facts, Reply, Router, statustext};
use crate::audit::{AuditHandle, Call, Event};
use crate::config::{Config, GcsRole};
use crate::control::{Caller, ControlClient, ControlReply, ControlRequest};
use crate::flight::{Action, Outcome};
use crate::link::transport::{Link, LinkEvent, LinkHandle, LinkOptions, SendError};
use crate::link::{MavHeader, MavMessage};
use crate::safety::VehicleView;

/// Inputs waiting for the loop, from every endpoint. Overflow policy: the endpoint's task
/// waits, so its link's own bounded queue fills and that ground station alone is slowed.
pub const INPUT_QUEUE: usize = 256;
/// Telemetry-log records waiting for the writer. Overflow policy: dropped and counted (the
/// log is a record, never a reason to slow the vehicle's traffic).
pub const TLOG_QUEUE: usize = 1024;

/// What an endpoint reports to the loop.
// Almost every input is a frame: boxing it would add an allocation per frame to make the
// rare connection changes smaller (as `LinkEvent`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum GcsInput {
    Frame {
        endpoint: usize,
        header: MavHeader,
        message: MavMessage,
    },
    Connected {
        endpoint: usize,
        peer: String,
    },
    Disconnected {
        endpoint: usize,
        reason: String,
    },
}

/// The loop's side of the ground-station endpoints.
pub struct GcsLoop {
    router: Router,
    links: Vec<LinkHandle>,
    inputs: mpsc::Receiver<GcsInput>,
    control: ControlClient,
    audit: AuditHandle,
    tlog: Option<mpsc::Sender<Vec<u8>>>,
    tlog_dropped: u64,
    vehicle_system_id: u8,
    statustext_id: u16,
    route: Vec<usize>,
    dropped: u64,
    /// The last sequence number of each (system, component) of the autopilot link.
    sequences: std::collections::HashMap<(u8, u8), u8>,
    /// The runtime the endpoints were opened on: their follow-up tasks run there too, off
    /// the loop's thread.
    runtime: tokio::runtime::Handle,
}

impl GcsLoop {
    /// Opens every configured endpoint on the current runtime (the daemon's main one, so the
    /// endpoints' reading and decoding never share the loop's thread); `None` when there is
    /// none. Fails (and with it the start) only for what can never work: an address that
    /// cannot be bound, a host that does not resolve, a telemetry log that cannot be created.
    pub async fn open(
        config: &Config,
        control: ControlClient,
        audit: AuditHandle,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Option<GcsLoop>> {
        if config.gcs_endpoint.is_empty() {
            return Ok(None);
        }
        let (tx, inputs) = mpsc::channel(INPUT_QUEUE);
        crate::metrics::global().watch_channel("gcs_inputs", &tx);
        let mut links = Vec::new();
        for (index, endpoint) in config.gcs_endpoint.iter().enumerate() {
            let options = LinkOptions {
                system_id: config.vehicle.system_id,
                component_id: config.vehicle.component_id,
                reconnect_backoff_min: Duration::from_millis(
                    config.vehicle.reconnect_backoff_ms_min,
                ),
                reconnect_backoff_max: Duration::from_millis(
                    config.vehicle.reconnect_backoff_ms_max,
                ),
                signing: None,
                peer: crate::link::pin::PeerPolicy::OPEN,
            };
            let (handle, mut events) = Link::open(&endpoint.link, options, shutdown.clone())
                .await
                .with_context(|| {
                    format!(
                        "cannot open ground-station endpoint gcs:{} ({})",
                        endpoint.name, endpoint.link
                    )
                })?;
            info!(
                endpoint = %endpoint.name,
                link = %endpoint.link,
                role = ?endpoint.role,
                authority = %match endpoint.role {
                    GcsRole::Gcs => endpoint.authority().name(),
                    GcsRole::Monitor => "none",
                },
                local = ?handle.local_addr(),
                "ground-station endpoint open"
            );
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    let input = match event {
                        LinkEvent::Frame { frame, .. } => GcsInput::Frame {
                            endpoint: index,
                            header: frame.header,
                            message: frame.message,
                        },
                        LinkEvent::Connected { peer } => GcsInput::Connected {
                            endpoint: index,
                            peer,
                        },
                        LinkEvent::Disconnected { reason } => GcsInput::Disconnected {
                            endpoint: index,
                            reason,
                        },
                        LinkEvent::Refused(_) => continue,
                    };
                    if tx.send(input).await.is_err() {
                        break;
                    }
                }
            });
            links.push(handle);
        }
        let tlog = match &config.gcs.tlog_path {
            None => None,
            Some(path) => Some(spawn_tlog_writer(path, shutdown.clone())?),
        };
        Ok(Some(GcsLoop {
            router: Router::new(
                &config.gcs_endpoint,
                crate::safety::Whitelist::new(&config.envelope).with_parameters(&config.parameters),
            ),
            links,
            inputs,
            control,
            audit,
            tlog,
            tlog_dropped: 0,
            vehicle_system_id: config.vehicle.system_id,
            statustext_id: 0,
            route: Vec::new(),
            dropped: 0,
            sequences: std::collections::HashMap::new(),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    /// The next input of any endpoint; pending forever without endpoints (a `select!` arm).
    pub async fn next_input(gcs: &mut Option<GcsLoop>) -> Option<GcsInput> {
        match gcs {
            Some(gcs) => gcs.inputs.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The router (counters, learnt ids).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The local address of an endpoint's socket (tests listen on port 0).
    pub fn local_addr(&self, endpoint: usize) -> Option<std::net::SocketAddr> {
        self.links.get(endpoint).and_then(LinkHandle::local_addr)
    }

    /// An event of the autopilot link: its frames go to the endpoints routing sends them to.
    pub fn from_autopilot(&mut self, event: &LinkEvent) {
        let Some((header, message)) = event.as_frame() else {
            return;
        };
        if self.sequences.len() < 64 || self.sequences.contains_key(&source_of(header)) {
            self.sequences.insert(source_of(header), header.sequence);
        }
        let mut route = std::mem::take(&mut self.route);
        self.router.route_from_autopilot(message, &mut route);
        let mut logged = false;
        for &endpoint in &route {
            let Some(link) = self.links.get(endpoint) else {
                continue;
            };
            match link.send_as(header, message) {
                Ok(bytes) => {
                    if !logged {
                        self.log(&bytes);
                        logged = true;
                    }
                }
                Err(SendError::NotConnected) => {}
                Err(SendError::Full) => self.dropped += 1,
            }
        }
        if !logged && self.tlog.is_some() {
            // Logged even when no ground station is connected: the log is the vehicle's.
            let bytes = crate::link::frame::FrameEncoder::encode_as(header, message);
            self.log(&bytes);
        }
        self.route = route;
    }

    /// A ground station connected or went away: logged and audited; the router forgets
    /// what it learnt of a station that left.
    fn connection(&mut self, input: GcsInput) {
        match input {
            GcsInput::Connected { endpoint, peer } => {
                info!(
                    endpoint = self.router.name(endpoint),
                    "ground station connected: {peer}"
                );
                self.audit.record(Event::Link {
                    link: format!("gcs:{}", self.router.name(endpoint)),
                    up: true,
                    detail: peer,
                });
            }
            GcsInput::Disconnected { endpoint, reason } => {
                info!(
                    endpoint = self.router.name(endpoint),
                    "ground station gone: {reason}"
                );
                self.router.handle_disconnected(endpoint);
                self.audit.record(Event::Link {
                    link: format!("gcs:{}", self.router.name(endpoint)),
                    up: false,
                    detail: reason,
                });
            }
            GcsInput::Frame { .. } => {}
        }
    }

    /// One input of an endpoint, decided with the vehicle's state of this turn. A flight
    /// command becomes a `ControlRequest` handed to `accept`, the loop's own entry of the
    /// control path (the MCP tools' requests take it too).
    pub fn handle(
        &mut self,
        now: Instant,
        input: GcsInput,
        view: &VehicleView,
        estop_latched: bool,
        link: &LinkHandle,
        accept: impl FnOnce(ControlRequest),
    ) {
        let (endpoint, header, message) = match input {
            GcsInput::Frame {
                endpoint,
                header,
                message,
            } => (endpoint, header, message),
            other => {
                self.connection(other);
                return;
            }
        };
        let lease_holder = self.control.lease_holder();
        let facts = Facts {
            view,
            vehicle_system_id: self.vehicle_system_id,
            estop_latched,
            lease_holder: lease_holder.as_deref(),
        };
        let decision = self
            .router
            .handle_from_endpoint(now, endpoint, &header, &message, &facts);
        let name = self.router.name(endpoint).to_owned();
        let started = Instant::now();
        match decision {
            Decision::Absorbed => {}
            Decision::Forward => {
                // As the daemon: on the autopilot link, one sender (and one signing stream)
                // only. Its answers (PARAM_VALUE) are broadcast and routed back.
                match link.send(&message) {
                    Ok(()) => {
                        self.log(&crate::link::frame::FrameEncoder::encode_as(
                            &header, &message,
                        ));
                        if is_audited_forward(&message) {
                            self.audit_call(
                                &name,
                                endpoint,
                                &header,
                                &message,
                                "allow",
                                "",
                                "forwarded",
                                started,
                            );
                        }
                    }
                    Err(error) => debug!(endpoint = name, "not forwarded: {error}"),
                }
            }
            Decision::Refused {
                reason,
                reply,
                notify,
            } => {
                let from = self.answer_header(&message);
                if notify {
                    info!(
                        endpoint = name,
                        "refused {}: {reason}",
                        message.message_name()
                    );
                    self.audit_call(
                        &name, endpoint, &header, &message, "deny", &reason, "denied", started,
                    );
                    self.tell(endpoint, from, &reason);
                }
                if let Some(reply) = reply {
                    self.answer(endpoint, from, reply, false);
                }
            }
            Decision::Command { action, reply } => {
                let from = self.answer_header(&message);
                let (reply_tx, mut reply_rx) = oneshot::channel();
                let (progress, _) = mpsc::channel(1);
                let caller = Caller {
                    role: self.router.authority(endpoint),
                    identity: format!("gcs:{name}"),
                };
                accept(ControlRequest {
                    action,
                    caller: caller.clone(),
                    reply: reply_tx,
                    progress,
                    cancel: CancellationToken::new(),
                });
                // A refusal is answered within `accept`, in this turn; an accepted request
                // is answered when its job ends.
                match reply_rx.try_recv() {
                    Ok(answer) => {
                        let accepted = answer.outcome != Outcome::Refused;
                        self.audit_call(
                            &name,
                            endpoint,
                            &header,
                            &message,
                            if accepted { "allow" } else { "deny" },
                            &answer.message,
                            &outcome_text(&answer),
                            started,
                        );
                        if !accepted {
                            self.tell(endpoint, from, &answer.message);
                        }
                        self.answer(endpoint, from, reply, accepted);
                    }
                    Err(_) => {
                        info!(
                            endpoint = name,
                            "{action}: accepted from the ground station"
                        );
                        self.audit_call(
                            &name, endpoint, &header, &message, "allow", "", "started", started,
                        );
                        self.answer(endpoint, from, reply, true);
                        let subject = subject_of(&name, &header);
                        self.follow(endpoint, from, action, caller, subject, reply_rx);
                    }
                }
            }
        }
    }

    /// The end of an accepted command: told to the ground station (a failure) and audited.
    fn follow(
        &mut self,
        endpoint: usize,
        from: MavHeader,
        action: Action,
        caller: Caller,
        subject: String,
        reply: oneshot::Receiver<ControlReply>,
    ) {
        let Some(link) = self.links.get(endpoint).cloned() else {
            return;
        };
        let audit = self.audit.clone();
        self.statustext_id = self.statustext_id.wrapping_add(1).max(1);
        let id = self.statustext_id;
        self.runtime.spawn(async move {
            let Ok(answer) = reply.await else { return };
            if !matches!(answer.outcome, Outcome::Completed | Outcome::Superseded) {
                let mut from = from;
                for m in statustext(id, &format!("{action}: {}", answer.message)) {
                    from.sequence = from.sequence.wrapping_add(1);
                    let _ = link.send_as(&from, &m);
                }
            }
            audit.record(Event::Call(Call {
                session: caller.identity,
                subject,
                role: caller.role.name().into(),
                target: format!("mavlink:{}:end", action.name()),
                request_id: String::new(),
                args_sha256: String::new(),
                args: String::new(),
                decision: "allow".into(),
                reason: answer.message.clone(),
                outcome: outcome_text(&answer),
                latency_us: 0,
            }));
        });
    }

    /// Answers come from the component the ground station addressed (the autopilot's,
    /// when it named none): MAVProxy and QGroundControl take ACKs and texts only from their
    /// target vehicle's component. The sequence continues that component's, so the ground
    /// station's loss count sees one frame more, not a gap.
    fn answer_header(&mut self, message: &MavMessage) -> MavHeader {
        let component = match message.target_component_id() {
            Some(c) if c != 0 => c,
            _ => AUTOPILOT_COMPONENT,
        };
        let key = (self.vehicle_system_id, component);
        let sequence = self.sequences.get(&key).copied().unwrap_or(0);
        MavHeader {
            system_id: self.vehicle_system_id.into(),
            component_id: component,
            sequence,
        }
    }

    fn answer(&mut self, endpoint: usize, from: MavHeader, reply: Reply, accepted: bool) {
        let mut from = from;
        from.sequence = from.sequence.wrapping_add(1);
        if let Some(link) = self.links.get(endpoint) {
            let _ = link.send_as(&from, &reply.message(accepted));
        }
    }

    /// A refusal as text the ground station shows (QGroundControl and MAVProxy print
    /// STATUSTEXT).
    fn tell(&mut self, endpoint: usize, from: MavHeader, text: &str) {
        self.statustext_id = self.statustext_id.wrapping_add(1).max(1);
        let mut from = from;
        if let Some(link) = self.links.get(endpoint) {
            for m in statustext(self.statustext_id, text) {
                from.sequence = from.sequence.wrapping_add(1);
                let _ = link.send_as(&from, &m);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn audit_call(
        &self,
        name: &str,
        endpoint: usize,
        header: &MavHeader,
        message: &MavMessage,
        decision: &str,
        reason: &str,
        outcome: &str,
        started: Instant,
    ) {
        let text = format!("{message:?}");
        let (args_sha256, args) = Call::args_of(&text);
        let target = match message {
            MavMessage::COMMAND_LONG(c) => format!("mavlink:COMMAND_LONG:{:?}", c.command),
            MavMessage::COMMAND_INT(c) => format!("mavlink:COMMAND_INT:{:?}", c.command),
            other => format!("mavlink:{}", other.message_name()),
        };
        self.audit.record(Event::Call(Call {
            session: format!("gcs:{name}"),
            subject: subject_of(name, header),
            role: self.router.authority(endpoint).name().into(),
            target,
            request_id: header.sequence.to_string(),
            args_sha256,
            args,
            decision: decision.into(),
            reason: reason.into(),
            outcome: outcome.into(),
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        }));
    }

    fn log(&mut self, frame: &[u8]) {
        let Some(tlog) = &self.tlog else { return };
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut record = Vec::with_capacity(8 + frame.len());
        super::tlog::record(unix_us, frame, &mut record);
        if tlog.try_send(record).is_err() {
            self.tlog_dropped += 1;
        }
    }
}

/// `MAV_COMP_ID_AUTOPILOT1`: who answers a command addressed to no component.
const AUTOPILOT_COMPONENT: u8 = 1;

/// Who sent a frame, for the audit log: the endpoint and the ids it used.
fn subject_of(name: &str, header: &MavHeader) -> String {
    format!(
        "gcs:{name} (system {}, component {})",
        header.system_id, header.component_id
    )
}

fn source_of(header: &MavHeader) -> (u8, u8) {
    (
        u8::try_from(header.system_id).unwrap_or(u8::MAX),
        header.component_id,
    )
}

/// Parameter writes and commands are audited when forwarded; reads are not (a full
/// parameter download is hundreds of reads).
fn is_audited_forward(message: &MavMessage) -> bool {
    matches!(
        message,
        MavMessage::PARAM_SET(_) | MavMessage::COMMAND_LONG(_) | MavMessage::COMMAND_INT(_)
    )
}

fn outcome_text(answer: &ControlReply) -> String {
    match answer.outcome {
        Outcome::Completed => "ok".into(),
        Outcome::Refused => "denied".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The telemetry log's writer: its own blocking thread, fed through a bounded channel.
fn spawn_tlog_writer(
    path: &std::path::Path,
    shutdown: CancellationToken,
) -> anyhow::Result<mpsc::Sender<Vec<u8>>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the telemetry log {}", path.display()))?;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TLOG_QUEUE);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::new(file);
        let mut last_flush = Instant::now();
        loop {
            let record = rx.blocking_recv();
            let Some(record) = record else { break };
            if let Err(e) = out.write_all(&record) {
                warn!("telemetry log {}: {e}; no more is written", path.display());
                return;
            }
            if last_flush.elapsed() >= Duration::from_secs(1) || shutdown.is_cancelled() {
                let _ = out.flush();
                last_flush = Instant::now();
            }
        }
        let _ = out.flush();
    });
    Ok(tx)
}
