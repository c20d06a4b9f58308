//! The wire protocol between flight-companion and its safety microcontroller (MCU).
//!
//! This crate is the interface control document: the daemon and the firmware both depend on
//! it, so they cannot disagree about a field. `PROTOCOL.md` beside it is the written
//! specification; this file is its executable form.
//!
//! A frame on the wire is `0x00 | COBS(postcard(Message) | CRC-16 LE) | 0x00`:
//! the zero bytes delimit frames (COBS guarantees none inside), the CRC-16/IBM-3740 covers the
//! postcard bytes, and no encoded frame is longer than [`MAX_FRAME_LEN`].
//!
//! `no_std`, no heap: every buffer is a fixed-size array or a `heapless::Vec`. Decoding never
//! panics: every malformed input becomes a counted [`FrameError`] and the decoder
//! resynchronises at the next zero byte.
#![no_std]
#![forbid(unsafe_code)]

mod cobs;
mod frame;

pub use frame::{DecoderStats, FrameDecoder, FrameError, encode, encode_into};

use serde::{Deserialize, Serialize};

/// Version of the wire protocol. Bumped on any change that an older peer would misread.
pub const PROTOCOL_VERSION: u16 = 1;

/// The message schema, written out; [`SCHEMA_HASH`] is its FNV-1a hash. Any change to a
/// message must change this text (the golden-bytes test in `tests/` fails otherwise), so two
/// builds with different message layouts refuse to talk even at the same protocol version.
pub const SCHEMA: &str = "\
Hello{role:Role{Companion,Mcu},protocol_version:u16,schema_hash:u32,software_version:[u16;3],watchdog_ms:u32};\
CompanionHeartbeat{seq:u32,uptime_ms:u32,armed:bool};\
McuHeartbeat{seq:u32,uptime_ms:u32,switch:SwitchState{Unknown,Closed,Open},output:OutputState{Released,Asserted},latched:Option<EstopSource{Switch,CompanionSilent}>,companion:CompanionLink{NotYetHeard,Healthy,Lost}};\
EstopAsserted{seq:u32,source:EstopSource};\
EstopReleased{seq:u32,source:EstopSource};\
ReleaseRequest{seq:u32};\
Ack{seq:u32,kind:AckedKind{Hello,EstopAsserted,EstopReleased,ReleaseRequest},result:AckResult{Accepted,Refused(RefuseReason{VersionMismatch,HelloRequired,NotLatched,SwitchOpen,CompanionNotHealthy})}}";

/// FNV-1a (32 bits) of [`SCHEMA`], computed at compile time.
pub const SCHEMA_HASH: u32 = fnv1a_32(SCHEMA.as_bytes());

/// Largest encoded frame, delimiters included. Every [`Message`] fits (a test checks the
/// largest one); a receiver drops anything longer without buffering it.
pub const MAX_FRAME_LEN: usize = 64;

/// Largest postcard encoding of a [`Message`] (without CRC and COBS).
pub const MAX_PAYLOAD_LEN: usize = 48;

const fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// Who sent a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The flight-companion daemon.
    Companion,
    /// The safety microcontroller.
    Mcu,
}

/// The first message each side sends, repeated until the peer's arrives.
///
/// Its layout is frozen across protocol versions (it is variant 0 of [`Message`] and its
/// fields never change), so that a peer of another version can always read it and refuse
/// with a message naming both versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Who is speaking.
    pub role: Role,
    /// [`PROTOCOL_VERSION`] of the sender's build.
    pub protocol_version: u16,
    /// [`SCHEMA_HASH`] of the sender's build.
    pub schema_hash: u32,
    /// The sender's software version (major, minor, patch), for the logs.
    pub software_version: [u16; 3],
    /// The MCU's companion watchdog, in milliseconds (0 from the companion).
    pub watchdog_ms: u32,
}

impl Hello {
    /// This build's hello for `role`.
    pub const fn this_build(role: Role, software_version: [u16; 3], watchdog_ms: u32) -> Hello {
        Hello {
            role,
            protocol_version: PROTOCOL_VERSION,
            schema_hash: SCHEMA_HASH,
            software_version,
            watchdog_ms,
        }
    }

    /// True when a peer that sent `self` speaks exactly this build's protocol.
    pub const fn is_compatible(&self) -> bool {
        self.protocol_version == PROTOCOL_VERSION && self.schema_hash == SCHEMA_HASH
    }
}

/// The debounced state of the normally-closed e-stop circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwitchState {
    /// Not yet stable for the debounce time since boot.
    Unknown,
    /// Circuit closed: switch released and wire intact.
    Closed,
    /// Circuit open: switch pressed, or the wire is cut (the two look the same, by design).
    Open,
}

/// The MCU's safety output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputState {
    /// Not acting.
    Released,
    /// Acting (see `firmware-bridge/README.md` for what that does with each wiring).
    Asserted,
}

/// Why the MCU latched an emergency stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EstopSource {
    /// The e-stop circuit opened (switch pressed or wire cut).
    Switch,
    /// The companion's heartbeat was lost while the vehicle was armed.
    CompanionSilent,
}

/// How the MCU sees the companion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompanionLink {
    /// No compatible hello and heartbeat since boot.
    NotYetHeard,
    /// Heartbeats arrive within the watchdog time.
    Healthy,
    /// No heartbeat for longer than the watchdog time.
    Lost,
}

/// Companion → MCU, every heartbeat period (100 ms by default), from the daemon's decision
/// loop: a stalled daemon stops sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanionHeartbeat {
    /// Increments by one per heartbeat (wrapping).
    pub seq: u32,
    /// Milliseconds since the daemon started (wrapping).
    pub uptime_ms: u32,
    /// Whether the vehicle is armed, as the daemon last heard from the autopilot. The MCU's
    /// watchdog acts only while this was true.
    pub armed: bool,
}

/// MCU → companion, every heartbeat period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct McuHeartbeat {
    /// Increments by one per heartbeat (wrapping).
    pub seq: u32,
    /// Milliseconds since the MCU booted (wrapping).
    pub uptime_ms: u32,
    /// The debounced e-stop circuit.
    pub switch: SwitchState,
    /// The safety output.
    pub output: OutputState,
    /// The latched e-stop, if any.
    pub latched: Option<EstopSource>,
    /// How the MCU sees the companion.
    pub companion: CompanionLink,
}

/// What an [`Ack`] acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckedKind {
    /// A hello (sent by the MCU only to refuse one).
    Hello,
    /// An e-stop event (the companion acknowledges; the MCU repeats it until then).
    EstopAsserted,
    /// A release event.
    EstopReleased,
    /// A release request (the MCU answers every one).
    ReleaseRequest,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// The peer's hello names another protocol version or schema.
    VersionMismatch,
    /// No compatible hello was received yet.
    HelloRequired,
    /// There is nothing to release.
    NotLatched,
    /// The e-stop circuit is open: release the switch (or repair the wire) first.
    SwitchOpen,
    /// The companion's heartbeat is not fresh: it must be healthy to release.
    CompanionNotHealthy,
}

/// The outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckResult {
    /// Done.
    Accepted,
    /// Not done, and why.
    Refused(RefuseReason),
}

/// Acknowledges the message of kind `kind` with sequence number `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The acknowledged message's `seq` (0 for a hello).
    pub seq: u32,
    /// The acknowledged message's kind.
    pub kind: AckedKind,
    /// Accepted or refused with a reason.
    pub result: AckResult,
}

/// Every message of the protocol. The variant order is part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Both ways, first. Frozen layout (see [`Hello`]).
    Hello(Hello),
    /// Companion → MCU.
    CompanionHeartbeat(CompanionHeartbeat),
    /// MCU → companion.
    McuHeartbeat(McuHeartbeat),
    /// MCU → companion: an e-stop latched; repeated until acknowledged.
    EstopAsserted {
        /// Event sequence number (the MCU's event counter).
        seq: u32,
        /// What latched it.
        source: EstopSource,
    },
    /// MCU → companion: the latch was released.
    EstopReleased {
        /// Event sequence number.
        seq: u32,
        /// What had latched it.
        source: EstopSource,
    },
    /// Companion → MCU: release the latch (accepted only when the switch is closed and the
    /// companion healthy).
    ReleaseRequest {
        /// Request sequence number, echoed in the [`Ack`].
        seq: u32,
    },
    /// Both ways.
    Ack(Ack),
}

impl core::fmt::Display for EstopSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EstopSource::Switch => "switch",
            EstopSource::CompanionSilent => "companion-silent",
        })
    }
}

impl core::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RefuseReason::VersionMismatch => "protocol version or schema mismatch",
            RefuseReason::HelloRequired => "no compatible hello received yet",
            RefuseReason::NotLatched => "no e-stop is latched",
            RefuseReason::SwitchOpen => {
                "the e-stop circuit is open: release the switch or repair the wire first"
            }
            RefuseReason::CompanionNotHealthy => {
                "the companion heartbeat is not fresh: it must be healthy to release"
            }
        })
    }
}
