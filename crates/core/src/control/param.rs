//! The parameter tools' requests to the decision loop and its answers (pure data):
//! reads are answered from the supervisor's cached table in the same turn; a write is
//! answered once the autopilot's `PARAM_VALUE` echo confirms it, or not. The channel that
//! carries them is the daemon's (`flight_companion::control::param`).

use crate::role::Caller;
use crate::safety::param_allow::ParamAllow;
use crate::vehicle::param_table::{DownloadProgress, ParamValue};

/// What a parameter tool asks.
#[derive(Debug, Clone)]
pub enum ParamAsk {
    Get {
        name: String,
    },
    List {
        prefix: String,
        limit: usize,
    },
    Set {
        name: String,
        value: f64,
        caller: Caller,
    },
    /// `mirror_fence` (issue 18): the envelope into the autopilot's own fence.
    MirrorFence {
        caller: Caller,
    },
}

/// The loop's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamAnswer {
    Value {
        value: Option<ParamValue>,
        progress: DownloadProgress,
    },
    List {
        parameters: Vec<ParamValue>,
        /// How many matched (more than `parameters` when cut at the limit).
        matched: usize,
        progress: DownloadProgress,
        writable: Vec<ParamAllow>,
    },
    /// The autopilot echoed the new value.
    Written { name: String, old: f64, new: f64 },
    /// Refused before anything was sent, or not confirmed: why (and what would be allowed).
    Refused(String),
    /// The fence mirror ran: what was uploaded and what the read-back showed.
    FenceMirrored(FenceMirrorReport),
}

/// What `mirror_fence` uploaded and whether the autopilot's read-back matches it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct FenceMirrorReport {
    /// True only when the fence list and every fence parameter read back equal the envelope.
    pub verified: bool,
    /// `true`/`false` after a read-back; absent when the run failed before it (see `error`).
    pub matches_envelope: Option<bool>,
    /// What differs, one sentence each (empty when verified).
    pub differences: Vec<String>,
    /// Why the run ended early (upload refused, no answer, link lost).
    pub error: Option<String>,
    /// The zones uploaded.
    pub zones: crate::safety::fence_mirror::FenceCounts,
    /// Fence items uploaded (vertices and circles).
    pub items: usize,
    /// Fence parameters written, `NAME=value` in firmware units.
    pub parameters: Vec<String>,
}
