//! The daemon's side of the bridge protocol, sans-IO.
//!
//! Call order: `handle_connected` / `handle_disconnected` / `handle_message` /
//! `handle_frame_error` as the shell reports them, `set_armed` with the vehicle's state
//! before every poll; then drain `poll_transmit` and `poll_event` until `None`; sleep until
//! `poll_timeout`. Only the daemon's decision loop calls `poll_transmit`, so the heartbeat
//! the MCU watches stops when that loop stalls.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fwbridge_protocol::{
    Ack, AckResult, AckedKind, CompanionHeartbeat, EstopSource, FrameError, Hello, McuHeartbeat,
    Message, PROTOCOL_VERSION, RefuseReason, Role, SCHEMA_HASH,
};

use super::status::{BridgeState, BridgeStatus};

/// What the IO task reports to the daemon loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeInput {
    /// The port opened.
    Connected,
    /// The port closed or could not be opened (reported once per distinct reason).
    Disconnected(String),
    /// A message from the MCU.
    Message(Message),
    /// A frame that could not be decoded.
    FrameError(FrameError),
}

/// Tunables, from `[bridge]`.
#[derive(Debug, Clone)]
pub struct BridgeLinkOptions {
    /// Period of the companion heartbeat.
    pub heartbeat_interval: Duration,
    /// No MCU heartbeat for this long: the bridge is lost.
    pub timeout: Duration,
    /// Period of the hello until the MCU's arrives.
    pub hello_interval: Duration,
    /// Whether the configuration requires the bridge (reported in the status).
    pub required: bool,
    /// The daemon's version (major, minor, patch), sent in the hello.
    pub software_version: [u16; 3],
}

/// What the daemon loop must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// The MCU latched an e-stop. Issue 5's e-stop trigger is connected to this event in the
    /// daemon loop; repeats of the same event are not reported again.
    EstopAsserted { source: EstopSource, seq: u32 },
    /// The MCU released its latch (after a release request).
    EstopReleased { source: EstopSource },
    /// A compatible MCU said hello.
    Connected {
        mcu_version: String,
        watchdog_ms: u32,
    },
    /// The MCU speaks another protocol: refused. The text names both versions.
    VersionMismatch { message: String },
    /// The port closed, or the MCU stopped heartbeating.
    Lost { reason: String },
    /// The MCU's safety output changed.
    OutputChanged { asserted: bool },
    /// The MCU answered a release request.
    ReleaseAnswered { result: AckResult },
}

/// Bound of the outgoing queue. Only acks, hellos and release requests queue (heartbeats are
/// generated when due); when full, the newest is dropped and counted: the MCU repeats its
/// events and the caller may ask again.
const TX_QUEUE_LEN: usize = 16;
/// Bound of the event queue; the loop drains it after every input, so it never fills in
/// practice. When full the oldest is dropped and counted.
const EVENT_QUEUE_LEN: usize = 32;

/// The bridge link's state machine. See the module documentation for the call order.
#[derive(Debug)]
pub struct BridgeLink {
    options: BridgeLinkOptions,
    started: Instant,
    state: BridgeState,
    message: Option<String>,
    armed: bool,
    mcu_hello: Option<Hello>,
    last_mcu_heartbeat: Option<(Instant, McuHeartbeat)>,
    last_estop_seq: Option<u32>,
    /// When the last valid message from the MCU arrived.
    last_rx: Instant,
    next_hello: Instant,
    /// When our last hello went out: an MCU hello within `hello_interval` of it is the MCU's
    /// answer to it, which must not be answered again (the firmware answers every companion
    /// hello, so answering every MCU hello bounced two hellos back and forth at the line's
    /// full speed for as long as neither was lost; the one-hour soak found it).
    hello_sent_at: Option<Instant>,
    next_heartbeat: Instant,
    heartbeat_seq: u32,
    release_seq: u32,
    tx: VecDeque<Message>,
    events: VecDeque<BridgeEvent>,
    // Counters.
    estop_events: u64,
    frame_errors: u64,
    frames_ok: u64,
    connects: u64,
    tx_dropped: u64,
}

impl BridgeLink {
    /// Before the port is open.
    pub fn new(options: BridgeLinkOptions, now: Instant) -> BridgeLink {
        BridgeLink {
            options,
            started: now,
            state: BridgeState::NotConnected,
            message: None,
            armed: false,
            mcu_hello: None,
            last_mcu_heartbeat: None,
            last_estop_seq: None,
            last_rx: now,
            next_hello: now,
            hello_sent_at: None,
            next_heartbeat: now,
            heartbeat_seq: 0,
            release_seq: 0,
            tx: VecDeque::with_capacity(TX_QUEUE_LEN),
            events: VecDeque::with_capacity(EVENT_QUEUE_LEN),
            estop_events: 0,
            frame_errors: 0,
            frames_ok: 0,
            connects: 0,
            tx_dropped: 0,
        }
    }

    /// The serial port opened.
    pub fn handle_connected(&mut self, now: Instant) {
        self.connects += 1;
        self.tx.clear();
        self.state = BridgeState::AwaitingHello;
        self.message = None;
        self.mcu_hello = None;
        self.last_mcu_heartbeat = None;
        self.next_hello = now;
    }

    /// The serial port closed or could not be opened.
    pub fn handle_disconnected(&mut self, _now: Instant, reason: &str) {
        if self.state == BridgeState::VersionMismatch {
            // Keep the mismatch visible: it explains why, better than "not connected".
            return;
        }
        let was = self.state;
        self.state = BridgeState::NotConnected;
        self.message = Some(reason.to_string());
        if matches!(was, BridgeState::Healthy | BridgeState::AwaitingHello) {
            self.push_event(BridgeEvent::Lost {
                reason: reason.to_string(),
            });
        }
    }

    /// A frame that could not be decoded.
    pub fn handle_frame_error(&mut self, _error: FrameError) {
        self.frame_errors += 1;
    }

    /// The vehicle's armed state, sent to the MCU in every heartbeat.
    pub fn set_armed(&mut self, armed: bool) {
        self.armed = armed;
    }

    /// Asks the MCU to release its latch. The answer comes as
    /// [`BridgeEvent::ReleaseAnswered`]. This is the hook issue 5's e-stop clear calls.
    pub fn request_release(&mut self) {
        self.release_seq = self.release_seq.wrapping_add(1);
        self.queue(Message::ReleaseRequest {
            seq: self.release_seq,
        });
    }

    /// A message decoded from the MCU.
    pub fn handle_message(&mut self, now: Instant, message: &Message) {
        self.frames_ok += 1;
        self.last_rx = now;
        match *message {
            Message::Hello(hello) if hello.role == Role::Mcu => self.handle_hello(now, hello),
            Message::Ack(Ack {
                kind: AckedKind::Hello,
                result: AckResult::Refused(RefuseReason::VersionMismatch),
                ..
            }) if self.mcu_hello.is_none() => {
                // No event yet: its hello, which names its version, follows and raises it. The
                // status says this much meanwhile.
                self.state = BridgeState::VersionMismatch;
                self.message = Some(format!(
                    "bridge protocol mismatch: the bridge refused the daemon's protocol v{PROTOCOL_VERSION} \
                     (schema {SCHEMA_HASH:#010x}); update the bridge firmware or the daemon so both match"
                ));
            }
            _ if self.state == BridgeState::VersionMismatch => {}
            Message::McuHeartbeat(heartbeat) => {
                // Uptime going backwards: the MCU restarted (faster than the link timeout),
                // and its event numbers start again.
                if self
                    .last_mcu_heartbeat
                    .is_some_and(|(_, h)| heartbeat.uptime_ms < h.uptime_ms)
                {
                    self.last_estop_seq = None;
                }
                let previous = self.last_mcu_heartbeat.map(|(_, h)| h.output);
                self.last_mcu_heartbeat = Some((now, heartbeat));
                if self.state == BridgeState::Lost {
                    self.state = BridgeState::Healthy;
                    self.message = None;
                }
                let asserted = heartbeat.output == fwbridge_protocol::OutputState::Asserted;
                let changed = match previous {
                    Some(previous) => previous != heartbeat.output,
                    // The first heartbeat reports only an output already acting.
                    None => asserted,
                };
                if changed {
                    self.push_event(BridgeEvent::OutputChanged { asserted });
                }
            }
            Message::EstopAsserted { seq, source } => {
                // Acknowledge every copy: the MCU repeats until it hears one.
                self.queue(Message::Ack(Ack {
                    seq,
                    kind: AckedKind::EstopAsserted,
                    result: AckResult::Accepted,
                }));
                if self.last_estop_seq != Some(seq) {
                    self.last_estop_seq = Some(seq);
                    self.estop_events += 1;
                    self.push_event(BridgeEvent::EstopAsserted { source, seq });
                }
            }
            Message::EstopReleased { seq, source } => {
                self.queue(Message::Ack(Ack {
                    seq,
                    kind: AckedKind::EstopReleased,
                    result: AckResult::Accepted,
                }));
                if self.last_estop_seq != Some(seq) {
                    self.last_estop_seq = Some(seq);
                    self.push_event(BridgeEvent::EstopReleased { source });
                }
            }
            Message::Ack(Ack {
                kind: AckedKind::ReleaseRequest,
                result,
                ..
            }) => self.push_event(BridgeEvent::ReleaseAnswered { result }),
            // Companion-only messages echoed back, or acks we do not wait for.
            _ => {}
        }
    }

    fn handle_hello(&mut self, now: Instant, hello: Hello) {
        let version = format!(
            "{}.{}.{}",
            hello.software_version[0], hello.software_version[1], hello.software_version[2]
        );
        if !hello.is_compatible() {
            self.mismatch(format!(
                "bridge protocol mismatch: daemon speaks protocol v{PROTOCOL_VERSION} (schema {SCHEMA_HASH:#010x}), \
                 bridge firmware {version} speaks protocol v{} (schema {:#010x}); refusing to talk to it: \
                 flash a bridge firmware built with protocol v{PROTOCOL_VERSION}, or run a daemon built for v{}",
                hello.protocol_version, hello.schema_hash, hello.protocol_version
            ));
            return;
        }
        let first = self.mcu_hello.is_none();
        self.mcu_hello = Some(hello);
        // The MCU says hello only until it hears ours: one arriving now is a (re)started
        // MCU, whose event numbers start again at 1. A press numbered as the last one before
        // must not be taken for its repeat (found by the fuzzer, issue 21); at worst a
        // repeat crossing our hello is one more trigger of a latch already set.
        self.last_estop_seq = None;
        // The MCU repeats its hello until it hears ours (once a second): answer it, unless
        // it is the answer to the hello we just sent.
        let answer = self
            .hello_sent_at
            .is_none_or(|sent| now.saturating_duration_since(sent) >= self.options.hello_interval);
        if answer {
            self.hello_sent_at = Some(now);
            self.queue(Message::Hello(self.hello()));
        }
        if first || self.state != BridgeState::Healthy {
            self.state = BridgeState::Healthy;
            self.message = None;
            self.next_heartbeat = now;
            self.push_event(BridgeEvent::Connected {
                mcu_version: version,
                watchdog_ms: hello.watchdog_ms,
            });
        }
    }

    fn mismatch(&mut self, message: String) {
        if self.message.as_ref() != Some(&message) {
            self.state = BridgeState::VersionMismatch;
            self.message = Some(message.clone());
            self.push_event(BridgeEvent::VersionMismatch { message });
        }
    }

    fn hello(&self) -> Hello {
        Hello::this_build(Role::Companion, self.options.software_version, 0)
    }

    fn queue(&mut self, message: Message) {
        if self.tx.len() >= TX_QUEUE_LEN {
            self.tx_dropped += 1;
        } else {
            self.tx.push_back(message);
        }
    }

    fn push_event(&mut self, event: BridgeEvent) {
        if self.events.len() >= EVENT_QUEUE_LEN {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Message> {
        self.check_timeout(now);
        match self.state {
            BridgeState::NotConnected | BridgeState::VersionMismatch | BridgeState::Disabled => {
                self.tx.clear();
                return None;
            }
            BridgeState::AwaitingHello | BridgeState::Healthy | BridgeState::Lost => {}
        }
        if let Some(message) = self.tx.pop_front() {
            return Some(message);
        }
        if self.mcu_hello.is_none() && now >= self.next_hello {
            self.next_hello = now + self.options.hello_interval;
            self.hello_sent_at = Some(now);
            return Some(Message::Hello(self.hello()));
        }
        if self.mcu_hello.is_some() && now >= self.next_heartbeat {
            self.next_heartbeat = now + self.options.heartbeat_interval;
            self.heartbeat_seq = self.heartbeat_seq.wrapping_add(1);
            return Some(Message::CompanionHeartbeat(CompanionHeartbeat {
                seq: self.heartbeat_seq,
                uptime_ms: now.saturating_duration_since(self.started).as_millis() as u32,
                armed: self.armed,
            }));
        }
        None
    }

    /// The next event for the daemon loop.
    pub fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }

    /// When the core next needs to run without input.
    pub fn poll_timeout(&self) -> Instant {
        let mut next = if self.mcu_hello.is_some() {
            self.next_heartbeat
        } else {
            self.next_hello
        };
        if self.state == BridgeState::Healthy {
            next = next.min(self.last_rx + self.options.timeout);
        }
        next
    }

    fn check_timeout(&mut self, now: Instant) {
        if self.state != BridgeState::Healthy {
            return;
        }
        let silent = now.saturating_duration_since(self.last_rx);
        if silent >= self.options.timeout {
            let reason = format!("no message from the bridge for {} ms", silent.as_millis());
            self.state = BridgeState::Lost;
            self.message = Some(reason.clone());
            self.push_event(BridgeEvent::Lost { reason });
        }
    }

    /// The health report shown in `get_status`.
    pub fn status(&self, now: Instant) -> BridgeStatus {
        let heartbeat = self.last_mcu_heartbeat.map(|(_, h)| h);
        BridgeStatus {
            enabled: true,
            required: self.options.required,
            state: self.state,
            message: self.message.clone(),
            protocol_version: PROTOCOL_VERSION,
            mcu_version: self.mcu_hello.map(|h| {
                format!(
                    "{}.{}.{}",
                    h.software_version[0], h.software_version[1], h.software_version[2]
                )
            }),
            mcu_watchdog_ms: self.mcu_hello.map(|h| h.watchdog_ms),
            heartbeat_age_ms: self
                .last_mcu_heartbeat
                .map(|(at, _)| now.saturating_duration_since(at).as_millis() as u64),
            switch: heartbeat.map(|h| format!("{:?}", h.switch).to_lowercase()),
            output_asserted: heartbeat
                .map(|h| h.output == fwbridge_protocol::OutputState::Asserted),
            latched: heartbeat.and_then(|h| h.latched).map(|s| s.to_string()),
            estop_events: self.estop_events,
            frames_ok: self.frames_ok,
            frame_errors: self.frame_errors,
            connects: self.connects,
            tx_dropped: self.tx_dropped,
        }
    }
}

#[cfg(test)]
mod tests;
