//! The audit log: append-only, tamper-evident, survives kill -9 and power cuts.
//!
//! - `record.rs`: the format (postcard payload, length prefix, checksum, SHA-256 chain).
//! - `log.rs`: files in `[audit] dir`, recovery of a torn tail on start, size rotation,
//!   fsync policy, verification.
//! - this module: the writer thread and [`AuditHandle`], and the `audit verify` / `audit
//!   tail` commands.
//!
//! **Architecture Invariant:** nothing that decides waits on the disk. Records go through
//! a bounded channel (`[audit] queue_len`) to one writer thread; when it is full the record
//! is dropped and counted (`dropped()`, reported in the status) instead of blocking. Tool
//! calls wait for their own record to be written (with a time limit) before they answer,
//! so an acknowledged call is in the log; the emergency stop never waits.

pub mod log;
pub mod record;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub use log::{FsyncPolicy, Recovery};
pub use record::{Call, Event, Record};

/// Records kept in memory for `audit://recent`.
pub const RECENT_MAX: usize = 200;

/// Milliseconds since the Unix epoch (shells only).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How the writer is set up (from `[audit]`).
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    pub file_bytes_max: u64,
    pub queue_len: usize,
}

enum Msg {
    Record {
        time_unix_ms: u64,
        event: Event,
        ack: Option<tokio::sync::oneshot::Sender<bool>>,
    },
}

/// Sends records to the writer thread. Cheap to clone. A disabled handle (no `[audit] dir`)
/// drops everything and says so in `enabled()`.
#[derive(Clone)]
pub struct AuditHandle {
    tx: Option<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    recent: Arc<Mutex<VecDeque<Value>>>,
}

impl AuditHandle {
    /// A handle that writes nothing.
    pub fn disabled() -> AuditHandle {
        AuditHandle {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            recent: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    fn send(&self, event: Event, ack: Option<tokio::sync::oneshot::Sender<bool>>) -> bool {
        let Some(tx) = &self.tx else { return false };
        let msg = Msg::Record {
            time_unix_ms: unix_ms_now(),
            event,
            ack,
        };
        match tx.try_send(msg) {
            Ok(()) => true,
            // Full: never block the caller; the loss is counted and reported.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(
                        dropped = n,
                        "audit queue full or writer gone: record dropped"
                    );
                }
                false
            }
        }
    }

    /// Queues a record without waiting.
    pub fn record(&self, event: Event) {
        self.send(event, None);
    }

    /// Queues a record and waits until it is written (and synced per the policy), at most
    /// `timeout`. True when it is on disk.
    pub async fn record_acked(&self, event: Event, timeout: Duration) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.send(event, Some(tx)) {
            return false;
        }
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(true)))
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records the writer could not write (disk errors).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The last `n` records written, newest last, as JSON.
    pub fn recent(&self, n: usize) -> Vec<Value> {
        let recent = self.recent.lock().map(|r| r.clone()).unwrap_or_default();
        let skip = recent.len().saturating_sub(n);
        recent.into_iter().skip(skip).collect()
    }
}

/// A record as JSON (for `tail --json` and `audit://recent`).
pub fn to_json(record: &Record) -> Value {
    json!({
        "seq": record.seq,
        "time_unix_ms": record.time_unix_ms,
        "prev": record::hex(&record.prev),
        "event": record.event,
    })
}

/// Opens the log (recovering a torn tail) and starts the writer thread. The thread ends
/// when every handle is dropped, after a final sync.
pub fn start(options: &AuditOptions) -> std::io::Result<(AuditHandle, Recovery)> {
    let (mut writer, recovery) = log::LogWriter::open(
        &options.dir,
        options.file_bytes_max,
        options.fsync,
        options.fsync_interval,
    )?;
    // Bounded: overflow drops the record and counts it (see `AuditHandle::send`).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(options.queue_len.max(1));
    let handle = AuditHandle {
        tx: Some(tx),
        ..AuditHandle::disabled()
    };
    let recent = handle.recent.clone();
    let failed = handle.failed.clone();
    let tick = if options.fsync == FsyncPolicy::Interval {
        options.fsync_interval.max(Duration::from_millis(10))
    } else {
        Duration::from_secs(3600)
    };
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(tick) {
                    Ok(Msg::Record {
                        time_unix_ms,
                        event,
                        ack,
                    }) => {
                        let json_event = serde_json::to_value(&event).unwrap_or(Value::Null);
                        let seq = writer.next_seq();
                        let ok = match writer.append(time_unix_ms, event) {
                            Ok(_) => true,
                            Err(e) => {
                                let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                                if n.is_power_of_two() {
                                    tracing::error!(error = %e, failed = n, "audit write failed");
                                }
                                false
                            }
                        };
                        if ok && let Ok(mut r) = recent.lock() {
                            if r.len() >= RECENT_MAX {
                                r.pop_front();
                            }
                            r.push_back(json!({"seq": seq, "time_unix_ms": time_unix_ms, "event": json_event}));
                        }
                        if let Some(ack) = ack {
                            let _ = ack.send(ok);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = writer.sync();
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        let _ = writer.sync();
                        return;
                    }
                }
            }
        })?;
    Ok((handle, recovery))
}

/// `flight-companion audit verify DIR`: prints one line; Err names the first bad record.
pub fn verify_command(dir: &Path) -> Result<String, String> {
    let walk = log::walk(dir, false).map_err(|e| format!("{}: {e}", dir.display()))?;
    if walk.files == 0 {
        return Err(format!("{}: no audit files (audit-*.log)", dir.display()));
    }
    if let Some(bad) = walk.first_bad {
        return Err(format!(
            "{}: TAMPERED or damaged: {bad}; {} records before it verify",
            dir.display(),
            bad.seq
        ));
    }
    let mut line = format!(
        "{}: ok: {} records in {} files, chain verified",
        dir.display(),
        walk.next_seq,
        walk.files
    );
    if let Some((file, offset)) = walk.torn_tail {
        line.push_str(&format!(
            "; torn last record at {} byte {offset} (cut off when the daemon starts)",
            file.display()
        ));
    }
    Ok(line)
}

/// `flight-companion audit tail DIR`: the last `n` records, one per line.
pub fn tail_command(dir: &Path, n: usize, json_lines: bool) -> Result<Vec<String>, String> {
    let walk = log::walk(dir, true).map_err(|e| format!("{}: {e}", dir.display()))?;
    let skip = walk.records.len().saturating_sub(n);
    let mut lines: Vec<String> = walk
        .records
        .iter()
        .skip(skip)
        .map(|r| {
            if json_lines {
                to_json(r).to_string()
            } else {
                format!("#{} {} {}", r.seq, r.time_unix_ms, describe(&r.event))
            }
        })
        .collect();
    if let Some(bad) = walk.first_bad {
        lines.push(format!("warning: the log stops verifying at {bad}"));
    }
    Ok(lines)
}

fn describe(event: &Event) -> String {
    match event {
        Event::DaemonStart { version, recovered } => format!("START {version} ({recovered})"),
        Event::DaemonStop { reason } => format!("STOP {reason}"),
        Event::Call(c) => format!(
            "CALL {} {}({}) {} id={} {} {}{} {} {}us args={}",
            c.session,
            c.subject,
            c.role,
            c.target,
            c.request_id,
            c.decision,
            c.reason,
            if c.reason.is_empty() { "" } else { ";" },
            c.outcome,
            c.latency_us,
            c.args
        ),
        Event::Security {
            kind,
            session,
            subject,
            detail,
        } => format!("SECURITY {kind} {session} {subject}: {detail}"),
        Event::Notice { kind, detail } => format!("NOTICE {kind}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writer_acknowledges_and_commands_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let options = AuditOptions {
            dir: dir.path().to_owned(),
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(50),
            file_bytes_max: 4096,
            queue_len: 64,
        };
        let (audit, recovery) = start(&options).unwrap();
        assert_eq!(recovery.records, 0);
        for i in 0..50 {
            let ok = audit
                .record_acked(
                    Event::Notice {
                        kind: "t".into(),
                        detail: format!("{i}"),
                    },
                    Duration::from_secs(5),
                )
                .await;
            assert!(ok);
        }
        assert_eq!(audit.recent(3).len(), 3);
        drop(audit);
        let line = verify_command(dir.path()).unwrap();
        assert!(line.contains("50 records"), "{line}");
        let tail = tail_command(dir.path(), 2, true).unwrap();
        assert_eq!(tail.len(), 2);
        let last: Value = serde_json::from_str(&tail[1]).unwrap();
        assert_eq!(last["seq"], 49);
        assert!(verify_command(&dir.path().join("nope")).is_err());
    }
}
