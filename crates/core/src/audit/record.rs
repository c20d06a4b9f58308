//! The audit record's types (pure data): what happened, as the log stores it.
//!
//! The frame format (postcard payload, length prefix, checksum, SHA-256 chain), the writer
//! and the readers are the daemon's (`flight_companion::audit::record`, `audit::log`).
//! Postcard encodes a variant by its index, so the order of [`Event`]'s variants is the
//! on-disk format of older logs and never changes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::escape::hex;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 0, 1, 2... over the whole log, across files.
    pub seq: u64,
    /// Wall-clock time of the event, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// SHA-256 of the previous record's payload.
    pub prev: [u8; 32],
    pub event: Event,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    DaemonStart {
        version: String,
        recovered: String,
    },
    DaemonStop {
        reason: String,
    },
    /// One MCP request (tool call, resource read, other method).
    Call(Call),
    /// Bad/expired/revoked token, denied role, rate limit, control takeover...
    Security {
        kind: String,
        session: String,
        subject: String,
        detail: String,
    },
    /// Something the operator should know later that has no kind of its own below.
    Notice {
        kind: String,
        detail: String,
    },
    // Issue 15. New kinds are appended: postcard encodes the variant's index, so the order
    // above is the on-disk format of older logs and never changes.
    /// The first record of every file: where the log stands, so a reader can begin at any
    /// file (after retention or damage) and the writer resumes without a replay.
    Segment(Segment),
    /// The emergency stop: a trigger (with its source and identity), a rung of the ladder,
    /// the pilot taking over, a reset, a refused reset.
    Stop {
        /// `triggered`, `rung_started`, `rung_confirmed`, `rung_refused`, `pilot_took_over`,
        /// `stopped`, `reset`, `reset_refused`, `kill_confirmation_required`, ...
        kind: String,
        /// `mcp_tool`, `mqtt_panic`, `local`, `hardware`, `failsafe`; empty when not a trigger.
        source: String,
        /// Who: the client, `local uid N`, `bridge`; empty when not a trigger.
        identity: String,
        detail: String,
    },
    /// A failsafe raised or cleared: `ground_link_lost`, `ground_inactive`,
    /// `battery_critical`, `autopilot_link_lost`, `pilot_takeover`, `companion_stall`.
    Failsafe {
        failsafe: String,
        raised: bool,
        detail: String,
    },
    /// A link up or down: `autopilot` (MAVLink), `ground` (the broker), `bridge` (the MCU).
    Link {
        link: String,
        up: bool,
        detail: String,
    },
    /// The configuration the daemon runs with.
    Config {
        /// The file, or `built-in defaults`.
        source: String,
        /// Hex SHA-256 of the file's bytes (empty for the defaults).
        sha256: String,
    },
    /// The envelope in force, a breach, a whitelist refusal.
    Safety {
        kind: String,
        detail: String,
    },
    /// The control lease: `granted`, `released`, `taken_over`, `expired`, `refused`.
    Lease {
        change: String,
        session: String,
        subject: String,
        detail: String,
    },
    /// Files removed by retention: what they held, so the log that remains still verifies.
    Pruned(Pruned),
    /// What the daemon found when it opened the log: an unclean stop, a torn record, damage.
    Recovery {
        /// `unclean_stop`, `torn_tail`, `damaged`, `replayed`.
        kind: String,
        detail: String,
    },
}

/// The first record of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// This file's number (a file renamed or swapped is named by it).
    pub file: u32,
    /// The Merkle frontier over the `seq` records before this one (RFC 9162, see `merkle`).
    pub frontier: Vec<[u8; 32]>,
    /// The log's checkpoint origin and the key that signs its checkpoints (a C2SP vkey).
    pub origin: String,
    pub verifier_key: String,
    /// `new log`, `rotation`, `after a torn record`, `after damage`, `after a replay`.
    pub reason: String,
    /// What the writer left behind in an earlier file, kept as evidence.
    pub after: Option<Gap>,
}

/// Bytes the writer did not continue from: a torn last record or damage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub file: u32,
    /// Where the first unusable byte is.
    pub offset: u64,
    /// `torn` or `damaged`.
    pub kind: String,
    pub detail: String,
}

/// What retention removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    pub files: Vec<PrunedFile>,
    /// The oldest record and file that remain.
    pub first_kept_seq: u64,
    pub first_kept_file: u32,
    /// `size` or `age`, with the limit.
    pub reason: String,
}

/// One removed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedFile {
    pub file: u32,
    pub first_seq: u64,
    pub records: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the file as it was removed.
    pub sha256: String,
}

/// A request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub session: String,
    pub subject: String,
    pub role: String,
    /// `tools/call:arm`, `resources/read:vehicle://status`, `initialize`...
    pub target: String,
    /// The JSON-RPC id, as JSON text.
    pub request_id: String,
    /// Hex SHA-256 of the arguments' JSON text.
    pub args_sha256: String,
    /// The arguments' JSON text, cut at [`ARGS_CHARS_MAX`].
    pub args: String,
    /// `allow` or `deny`.
    pub decision: String,
    pub reason: String,
    /// `ok`, `tool_error: ...`, `denied`.
    pub outcome: String,
    pub latency_us: u64,
}

/// Longest argument text kept in a record; the digest covers all of it.
pub const ARGS_CHARS_MAX: usize = 512;

impl Call {
    /// Digest and (cut) copy of the arguments.
    pub fn args_of(json_text: &str) -> (String, String) {
        let digest = hex(&Sha256::digest(json_text.as_bytes()));
        let kept: String = json_text.chars().take(ARGS_CHARS_MAX).collect();
        (digest, kept)
    }
}
