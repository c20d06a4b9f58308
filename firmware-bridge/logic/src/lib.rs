//! The safety microcontroller's behaviour, without any IO: the same code runs on the RP2040
//! (`firmware-bridge/rp2040`), in the daemon's simulated bridge (`flight-companion
//! bridge-sim`) and in the table-driven tests below.
//!
//! What it does:
//! - debounces the e-stop input, wired normally closed: an open circuit (switch pressed *or
//!   wire cut*) latches an e-stop with source `Switch`;
//! - watches the companion's heartbeat: lost for longer than `watchdog_ms` while the
//!   companion last said the vehicle was armed, it latches `CompanionSilent`;
//! - asserts its safety output for `CompanionSilent` at once, and for `Switch` when the
//!   companion cannot be relied on to act (it has not acknowledged the event within
//!   `switch_ack_timeout_ms`, or it is not healthy), or at once if
//!   `switch_asserts_output` is set;
//! - keeps the latch and the output until the companion asks for release while the
//!   circuit is closed and the companion is healthy.
//!
//! Call order: [`Mcu::new`] once; then, in any order and as often as wanted, with a
//! monotonic `now_ms` that never goes back: [`Mcu::handle_switch`] with every raw sample of
//! the input, [`Mcu::handle_message`] with every decoded message, [`Mcu::handle_frame_error`]
//! with every decoding error; then drain [`Mcu::poll_transmit`] until `None`, drive the
//! output pin from [`Mcu::output`], and sleep until [`Mcu::poll_timeout`] (or the next
//! sample, whichever comes first).
#![no_std]
#![forbid(unsafe_code)]

use fwbridge_protocol::{
    Ack, AckResult, AckedKind, CompanionLink, EstopSource, Hello, McuHeartbeat, Message,
    OutputState, RefuseReason, Role, SwitchState,
};

/// Tunables, fixed at build time on the MCU and set by flags in the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The raw input must hold a level this long before it counts (contact bounce, EMI).
    pub debounce_ms: u32,
    /// Companion heartbeat loss longer than this, while armed, latches `CompanionSilent`.
    pub watchdog_ms: u32,
    /// Period of the MCU's own heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Period of the MCU's hello until a compatible companion hello arrives.
    pub hello_interval_ms: u32,
    /// Period at which an unacknowledged e-stop event is repeated.
    pub event_repeat_ms: u32,
    /// A switch e-stop not acknowledged by the companion within this asserts the output.
    pub switch_ack_timeout_ms: u32,
    /// Assert the output as soon as the switch opens, without waiting for the companion
    /// (for a motor-power relay that must cut whatever the software does).
    pub switch_asserts_output: bool,
    /// This firmware's version, sent in the hello.
    pub software_version: [u16; 3],
}

impl Default for Config {
    fn default() -> Config {
        Config {
            debounce_ms: 20,
            watchdog_ms: 500,
            heartbeat_interval_ms: 100,
            hello_interval_ms: 1000,
            event_repeat_ms: 100,
            switch_ack_timeout_ms: 500,
            switch_asserts_output: false,
            software_version: [0, 1, 0],
        }
    }
}

/// An e-stop event the companion has not acknowledged yet.
#[derive(Debug, Clone, Copy)]
struct PendingEvent {
    message: Message,
    seq: u32,
    kind: AckedKind,
    next_send_ms: u64,
}

/// Replies waiting to be sent. Four is more than one poll can produce; when full, a new
/// reply is dropped and the companion's retry (it repeats its requests) recovers.
const REPLY_QUEUE_LEN: usize = 4;

/// The MCU's state machine. See the crate documentation for the call order.
#[derive(Debug, Clone)]
pub struct Mcu {
    config: Config,
    boot_ms: u64,
    // The e-stop input.
    raw_closed: Option<bool>,
    raw_since_ms: u64,
    switch: SwitchState,
    // The companion.
    hello_ok: bool,
    last_heartbeat_ms: Option<u64>,
    armed: bool,
    // The latch and the output.
    latched: Option<EstopSource>,
    latched_at_ms: u64,
    event_acked: bool,
    output: OutputState,
    // Transmission.
    replies: heapless::Deque<Message, REPLY_QUEUE_LEN>,
    pending: Option<PendingEvent>,
    event_seq: u32,
    heartbeat_seq: u32,
    next_heartbeat_ms: u64,
    next_hello_ms: u64,
    /// Frames from the companion that could not be decoded.
    frame_errors: u32,
}

impl Mcu {
    /// A freshly booted MCU: switch unknown, companion not yet heard, output released.
    pub fn new(config: Config, now_ms: u64) -> Mcu {
        Mcu {
            config,
            boot_ms: now_ms,
            raw_closed: None,
            raw_since_ms: now_ms,
            switch: SwitchState::Unknown,
            hello_ok: false,
            last_heartbeat_ms: None,
            armed: false,
            latched: None,
            latched_at_ms: now_ms,
            event_acked: false,
            output: OutputState::Released,
            replies: heapless::Deque::new(),
            pending: None,
            event_seq: 0,
            heartbeat_seq: 0,
            next_heartbeat_ms: now_ms,
            next_hello_ms: now_ms,
            frame_errors: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One raw sample of the e-stop input: `circuit_closed` is true when current flows
    /// through the normally-closed switch (released and wire intact).
    pub fn handle_switch(&mut self, now_ms: u64, circuit_closed: bool) {
        if self.raw_closed != Some(circuit_closed) {
            self.raw_closed = Some(circuit_closed);
            self.raw_since_ms = now_ms;
        }
        self.update(now_ms);
    }

    /// One message decoded from the companion.
    pub fn handle_message(&mut self, now_ms: u64, message: &Message) {
        match *message {
            Message::Hello(hello) if hello.role == Role::Companion => {
                self.hello_ok = hello.is_compatible();
                if !self.hello_ok {
                    // Forget the old companion: heartbeats from this build are not trusted.
                    self.queue_reply(Message::Ack(Ack {
                        seq: 0,
                        kind: AckedKind::Hello,
                        result: AckResult::Refused(RefuseReason::VersionMismatch),
                    }));
                }
                // Answer with ours either way, so the companion can name both versions.
                self.queue_reply(Message::Hello(self.hello()));
            }
            Message::CompanionHeartbeat(heartbeat) if self.hello_ok => {
                self.last_heartbeat_ms = Some(now_ms);
                self.armed = heartbeat.armed;
            }
            Message::ReleaseRequest { seq } => {
                let result = self.try_release(now_ms);
                self.queue_reply(Message::Ack(Ack {
                    seq,
                    kind: AckedKind::ReleaseRequest,
                    result,
                }));
            }
            Message::Ack(ack) if self.hello_ok => {
                if let Some(pending) = self.pending
                    && pending.seq == ack.seq
                    && pending.kind == ack.kind
                    && ack.result == AckResult::Accepted
                {
                    self.pending = None;
                    if ack.kind == AckedKind::EstopAsserted {
                        self.event_acked = true;
                    }
                }
            }
            // Heartbeats and acks before a compatible hello, our own kinds echoed back, and
            // MCU-only messages are ignored.
            _ => {}
        }
        self.update(now_ms);
    }

    /// A frame from the companion that could not be decoded (counted, reported in no
    /// message: the companion counts its own).
    pub fn handle_frame_error(&mut self) {
        self.frame_errors = self.frame_errors.wrapping_add(1);
    }

    /// The next message to send, if any is due.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Message> {
        self.update(now_ms);
        if let Some(reply) = self.replies.pop_front() {
            return Some(reply);
        }
        if let Some(pending) = &mut self.pending
            && now_ms >= pending.next_send_ms
        {
            pending.next_send_ms = now_ms + u64::from(self.config.event_repeat_ms);
            return Some(pending.message);
        }
        if !self.hello_ok && now_ms >= self.next_hello_ms {
            self.next_hello_ms = now_ms + u64::from(self.config.hello_interval_ms);
            return Some(Message::Hello(self.hello()));
        }
        if now_ms >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now_ms + u64::from(self.config.heartbeat_interval_ms);
            self.heartbeat_seq = self.heartbeat_seq.wrapping_add(1);
            return Some(Message::McuHeartbeat(self.heartbeat(now_ms)));
        }
        None
    }

    /// When something will next be due without any input (a debounce, the watchdog, a
    /// repeat, a heartbeat), in ms on the caller's clock.
    pub fn poll_timeout(&self) -> u64 {
        let mut next = self.next_heartbeat_ms;
        if !self.hello_ok {
            next = next.min(self.next_hello_ms);
        }
        if let Some(pending) = &self.pending {
            next = next.min(pending.next_send_ms);
        }
        if let Some(closed) = self.raw_closed
            && self.switch != state_of(closed)
        {
            next = next.min(self.raw_since_ms + u64::from(self.config.debounce_ms));
        }
        if let Some(last) = self.last_heartbeat_ms
            && self.armed
            && self.latched != Some(EstopSource::CompanionSilent)
        {
            next = next.min(last + u64::from(self.config.watchdog_ms) + 1);
        }
        if self.latched == Some(EstopSource::Switch) && self.output == OutputState::Released {
            next = next.min(self.latched_at_ms + u64::from(self.config.switch_ack_timeout_ms));
        }
        next
    }

    /// The safety output, to drive the pin with.
    pub fn output(&self) -> OutputState {
        self.output
    }

    /// The latched e-stop, if any.
    pub fn latched(&self) -> Option<EstopSource> {
        self.latched
    }

    /// The debounced e-stop circuit.
    pub fn switch(&self) -> SwitchState {
        self.switch
    }

    /// True once a compatible companion hello was received.
    pub fn hello_ok(&self) -> bool {
        self.hello_ok
    }

    /// The armed state in the companion's last heartbeat.
    pub fn companion_armed(&self) -> bool {
        self.armed
    }

    /// Undecodable frames received so far.
    pub fn frame_errors(&self) -> u32 {
        self.frame_errors
    }

    /// How the MCU sees the companion at `now_ms`.
    pub fn companion(&self, now_ms: u64) -> CompanionLink {
        match self.last_heartbeat_ms {
            None => CompanionLink::NotYetHeard,
            Some(last) if now_ms.saturating_sub(last) <= u64::from(self.config.watchdog_ms) => {
                CompanionLink::Healthy
            }
            Some(_) => CompanionLink::Lost,
        }
    }

    fn hello(&self) -> Hello {
        Hello::this_build(
            Role::Mcu,
            self.config.software_version,
            self.config.watchdog_ms,
        )
    }

    fn heartbeat(&self, now_ms: u64) -> McuHeartbeat {
        McuHeartbeat {
            seq: self.heartbeat_seq,
            // Wraps after 49 days, as the field's documentation says.
            uptime_ms: now_ms.saturating_sub(self.boot_ms) as u32,
            switch: self.switch,
            output: self.output,
            latched: self.latched,
            companion: self.companion(now_ms),
        }
    }

    fn queue_reply(&mut self, message: Message) {
        // Full: dropped (see REPLY_QUEUE_LEN).
        let _ = self.replies.push_back(message);
    }

    fn try_release(&mut self, now_ms: u64) -> AckResult {
        let refused = |reason| AckResult::Refused(reason);
        if !self.hello_ok {
            return refused(RefuseReason::HelloRequired);
        }
        let Some(source) = self.latched else {
            return refused(RefuseReason::NotLatched);
        };
        if self.switch != SwitchState::Closed {
            return refused(RefuseReason::SwitchOpen);
        }
        if self.companion(now_ms) != CompanionLink::Healthy {
            return refused(RefuseReason::CompanionNotHealthy);
        }
        self.latched = None;
        self.output = OutputState::Released;
        self.send_event(now_ms, AckedKind::EstopReleased, |seq| {
            Message::EstopReleased { seq, source }
        });
        AckResult::Accepted
    }

    fn latch(&mut self, now_ms: u64, source: EstopSource) {
        match self.latched {
            // Already latched by the watchdog: nothing stronger to add.
            Some(EstopSource::CompanionSilent) => {}
            // Latched by the switch and now the companion is silent too: the output acts.
            Some(EstopSource::Switch) if source == EstopSource::CompanionSilent => {
                self.output = OutputState::Asserted;
            }
            Some(EstopSource::Switch) => {}
            None => {
                self.latched = Some(source);
                self.latched_at_ms = now_ms;
                self.event_acked = false;
                self.send_event(now_ms, AckedKind::EstopAsserted, |seq| {
                    Message::EstopAsserted { seq, source }
                });
                if source == EstopSource::CompanionSilent || self.config.switch_asserts_output {
                    self.output = OutputState::Asserted;
                }
            }
        }
    }

    fn send_event(&mut self, now_ms: u64, kind: AckedKind, make: impl Fn(u32) -> Message) {
        self.event_seq = self.event_seq.wrapping_add(1);
        self.pending = Some(PendingEvent {
            message: make(self.event_seq),
            seq: self.event_seq,
            kind,
            next_send_ms: now_ms,
        });
    }

    /// Applies the passage of time: debounce, watchdog, the switch acknowledgement timeout.
    fn update(&mut self, now_ms: u64) {
        if let Some(closed) = self.raw_closed
            && now_ms.saturating_sub(self.raw_since_ms) >= u64::from(self.config.debounce_ms)
        {
            let state = state_of(closed);
            if self.switch != state {
                self.switch = state;
                if state == SwitchState::Open {
                    self.latch(now_ms, EstopSource::Switch);
                }
            }
        }
        if self.armed && self.companion(now_ms) == CompanionLink::Lost {
            self.latch(now_ms, EstopSource::CompanionSilent);
        }
        if self.latched == Some(EstopSource::Switch)
            && self.output == OutputState::Released
            && ((!self.event_acked
                && now_ms.saturating_sub(self.latched_at_ms)
                    >= u64::from(self.config.switch_ack_timeout_ms))
                || self.companion(now_ms) != CompanionLink::Healthy)
        {
            // Nobody is known to be acting on the switch: act ourselves.
            self.output = OutputState::Asserted;
        }
    }
}

fn state_of(circuit_closed: bool) -> SwitchState {
    if circuit_closed {
        SwitchState::Closed
    } else {
        SwitchState::Open
    }
}

#[cfg(test)]
mod tests;
