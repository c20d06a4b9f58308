//! The audit log's state as the status shows it (pure data; the writer is `audit`'s).

use schemars::JsonSchema;
use serde::Serialize;

/// The `audit` field of the status report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct AuditStatus {
    /// Records are being written.
    pub enabled: bool,
    /// Why not (`audit.danger_disabled`), said in every status.
    pub disabled_reason: Option<String>,
    pub dir: Option<String>,
    /// Records in the log.
    pub records: u64,
    /// The newest signed checkpoint's size (null before the first).
    pub checkpoint_size: Option<u64>,
    /// When it was signed, milliseconds since the Unix epoch.
    pub checkpoint_unix_ms: Option<u64>,
    /// The key the ground trusts for this log (a C2SP verifier key).
    pub verifier_key: Option<String>,
    /// Damage found (in the log or against its last checkpoint), kept as evidence: where and
    /// what. Empty when the log is sound.
    pub damage: Vec<String>,
    /// What opening the log found (crash, torn record).
    pub recovery: Option<String>,
    /// Records dropped because the writer's queue was full.
    pub dropped: u64,
    /// Records the writer could not write (disk errors).
    pub failed: u64,
    /// Why the log cannot be written now (the last error, since when, records lost), null
    /// when it can: meanwhile every call that must be recorded before it is answered is
    /// refused (the emergency stop, hold, land, return home and reads are not).
    pub unwritable: Option<String>,
}
