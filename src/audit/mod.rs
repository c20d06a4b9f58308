//! The audit log: append-only, tamper-evident, anchored off-board, bounded, on by default.
//!
//! - `record.rs`: the format (postcard payload, length prefix, checksum, SHA-256 chain); the
//!   closed set of record kinds ([`Event`]) is the core crate's (`flight_companion_core::audit`).
//! - `events`: the one place that decides what is recorded of each source (e-stop events,
//!   supervisor notices, bridge events, ...), by exhaustive matches (the core crate's).
//! - `merkle.rs`: RFC 9162 Merkle tree hashes and consistency proofs in bounded memory.
//! - `checkpoint.rs`: C2SP signed-note checkpoints, the drone's key, the witness message.
//! - `log.rs`: files, segments, resume without replay, rotation, retention, verification.
//! - `witness.rs`: `flight-companion audit witness`, the ground's keeper of checkpoints.
//! - this module: the writer thread and [`AuditHandle`] (the one recorder every source goes
//!   through), the status, and the `audit verify` / `audit tail` commands.
//!
//! **Architecture Invariant:** nothing that decides waits on the disk. Records go through a
//! bounded channel (`[audit] queue_len`) to one writer thread; when it is full the record is
//! dropped and counted (`dropped()`, reported in the status) instead of blocking. Tool calls
//! wait for their own record to be written (with a time limit) before they answer, so an
//! acknowledged call is in the log; the emergency stop never waits. Checkpoints are signed
//! on the writer thread and handed to the MQTT shell through a `watch` (skip to latest).

pub mod checkpoint;
// What is recorded of each source and the status are sans-IO, the core crate's.
pub use flight_companion_core::audit::{events, status};
pub mod log;
pub mod merkle;
pub mod record;
pub mod witness;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub use log::{FsyncPolicy, Recovery};
pub use record::{Call, Event, Record};
pub use status::AuditStatus;

/// Records kept in memory for `audit://recent`.
pub const RECENT_MAX: usize = 200;

/// Milliseconds since the Unix epoch (shells only).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub use flight_companion_core::escape::{escape, is_unsafe_char};

/// How the writer is set up (from `[audit]`).
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    pub file_bytes_max: u64,
    pub queue_len: usize,
    /// The private key that signs checkpoints; `None`: no checkpoints (tests only).
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    /// The checkpoints' origin (and key name).
    pub origin: String,
    /// A checkpoint at least this often while records arrive...
    pub checkpoint_interval: Duration,
    /// ...and after at most this many records.
    pub checkpoint_records_max: u64,
    pub retention_bytes_max: u64,
    pub retention_age_max: Option<Duration>,
}

/// A checkpoint for the ground, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub size: u64,
    /// The C2SP tlog-witness `add-checkpoint` body (proof + signed note).
    pub message: String,
}

enum Msg {
    Record {
        time_unix_ms: u64,
        // Boxed: records vary in size, the channel holds `queue_len` of them.
        event: Box<Event>,
        ack: Option<tokio::sync::oneshot::Sender<bool>>,
    },
    /// A final checkpoint and sync; the writer accepts nothing after it.
    Close {
        ack: tokio::sync::oneshot::Sender<bool>,
    },
}

/// Most records made durable by one commit (group commit): a call's answer waits for its
/// group's `fdatasync`, so the group is bounded.
const GROUP_RECORDS_MAX: usize = 256;

/// A record of the group being committed, waiting for the commit to be acknowledged.
struct Written {
    recent: Recent,
    ack: Option<tokio::sync::oneshot::Sender<bool>>,
    /// Its `write` succeeded.
    ok: bool,
}

/// What the writer knows of failed writes: the count every handle reads, and the last error.
struct Failures {
    count: Arc<AtomicU64>,
    last_error: Option<String>,
}

impl Failures {
    fn count(&mut self, error: &std::io::Error) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::error!(error = %error, failed = n, "audit write failed");
        }
        self.last_error = Some(error.to_string());
    }
}

/// Group commit, first half: writes `first` and every record already queued behind it (at
/// most [`GROUP_RECORDS_MAX`], and never past `checkpoint_records_max` unanchored records)
/// without syncing; stops at a `Close`, which it returns.
fn write_group(
    writer: &mut log::LogWriter,
    first: Msg,
    rx: &std::sync::mpsc::Receiver<Msg>,
    checkpoint_records_max: u64,
    failures: &mut Failures,
    queued: &AtomicUsize,
) -> (Vec<Written>, Option<tokio::sync::oneshot::Sender<bool>>) {
    let mut group: Vec<Written> = Vec::new();
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        if matches!(msg, Msg::Record { .. }) {
            // Saturating: a record sent around the handle (the tests) is not counted up.
            let _ = queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(1))
            });
        }
        match msg {
            Msg::Record {
                time_unix_ms,
                event,
                ack,
            } => {
                let seq = writer.next_seq();
                let (written, event) = writer.write_kept(time_unix_ms, *event);
                let ok = match written {
                    Ok(_) => true,
                    Err(e) => {
                        failures.count(&e);
                        false
                    }
                };
                group.push(Written {
                    recent: Recent {
                        seq,
                        time_unix_ms,
                        event,
                    },
                    ack,
                    ok,
                });
            }
            Msg::Close { ack } => return (group, Some(ack)),
        }
        if group.len() < GROUP_RECORDS_MAX && writer.unanchored() < checkpoint_records_max.max(1) {
            next = rx.try_recv().ok();
        }
    }
    (group, None)
}

/// Group commit, second half: one commit (one `fdatasync` under `always`) for the whole
/// group; true when it is as durable as the policy asks. A failed commit fails every record
/// of the group that was written.
fn commit_group(writer: &mut log::LogWriter, group: &[Written], failures: &mut Failures) -> bool {
    match writer.commit() {
        Ok(()) => true,
        Err(e) => {
            for _ in group.iter().filter(|w| w.ok) {
                failures.count(&e);
            }
            false
        }
    }
}

/// Group commit, last step: the written records go to `audit://recent` and every waiting
/// call learns whether its record is durable. Returns how many records were lost.
fn acknowledge_group(
    group: Vec<Written>,
    committed: bool,
    recent: &Mutex<VecDeque<Recent>>,
) -> u64 {
    let mut lost = 0;
    let mut answers = Vec::with_capacity(group.len());
    // The ring first: a client reading `audit://recent` once answered finds its record.
    let mut ring = recent.lock().ok();
    for w in group {
        let durable = w.ok && committed;
        lost += u64::from(!durable);
        answers.push((w.ack, durable));
        if durable && let Some(r) = ring.as_mut() {
            if r.len() >= RECENT_MAX {
                r.pop_front();
            }
            r.push_back(w.recent);
        }
    }
    drop(ring);
    for (ack, durable) in answers {
        if let Some(ack) = ack {
            let _ = ack.send(durable);
        }
    }
    lost
}

/// A durable record as `audit://recent` shows it, kept as the event itself: its JSON is made
/// only when the resource is read, not once per record.
struct Recent {
    seq: u64,
    time_unix_ms: u64,
    event: Event,
}

impl Recent {
    fn to_json(&self) -> Value {
        json!({"seq": self.seq, "time_unix_ms": self.time_unix_ms, "event": self.event})
    }
}

/// The log while its writes fail (a full disk, an IO error): since when, how many records
/// were lost, the last error.
struct Outage {
    since_unix_ms: u64,
    lost: u64,
    error: String,
}

/// How often an unwritable log is tried again when no record arrives.
const OUTAGE_RETRY: Duration = Duration::from_secs(1);

impl Outage {
    fn describe(&self) -> String {
        format!(
            "{}: {} records not written since time_unix_ms {}",
            self.error, self.lost, self.since_unix_ms
        )
    }
}

/// Follows the writer's outages: a group with a failed record starts one (or adds to it);
/// while one lasts, [`end_outage`] tries first to write the record of what was lost, whose
/// success ends it. The handles see it through `unwritable` and the status.
fn note_group(
    outage: &mut Option<Outage>,
    lost: u64,
    failures: &Failures,
    unwritable: &AtomicBool,
    status: &Mutex<AuditStatus>,
) {
    if lost == 0 {
        return;
    }
    let o = outage.get_or_insert_with(|| Outage {
        since_unix_ms: unix_ms_now(),
        lost: 0,
        error: String::new(),
    });
    o.lost += lost;
    o.error = failures
        .last_error
        .clone()
        .unwrap_or_else(|| "write failed".into());
    if !unwritable.swap(true, Ordering::Relaxed) {
        tracing::error!(
            "audit log cannot be written ({}): calls that must be recorded are refused until it can",
            o.error
        );
    }
    if let Ok(mut s) = status.lock() {
        s.unwritable = Some(o.describe());
    }
}

/// Writes and commits the record of an outage (`Notice audit_records_lost`); true when it is
/// over (or there was none).
fn end_outage(
    writer: &mut log::LogWriter,
    outage: &mut Option<Outage>,
    failures: &mut Failures,
    unwritable: &AtomicBool,
    status: &Mutex<AuditStatus>,
) -> bool {
    let Some(o) = outage else { return true };
    let event = Event::Notice {
        kind: "audit_records_lost".into(),
        detail: o.describe(),
    };
    let written = writer
        .write(unix_ms_now(), event)
        .and_then(|_| writer.commit());
    match written {
        Ok(()) => {
            tracing::warn!("audit log writable again; {}", o.describe());
            *outage = None;
            unwritable.store(false, Ordering::Relaxed);
            if let Ok(mut s) = status.lock() {
                s.unwritable = None;
            }
            true
        }
        Err(e) => {
            failures.last_error = Some(e.to_string());
            false
        }
    }
}

/// The one recorder every source goes through. Cheap to clone. A disabled handle (audit
/// turned off with `danger_disabled`, or tests) drops everything and says so in `enabled()`.
#[derive(Clone)]
pub struct AuditHandle {
    tx: Option<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Records sent and not yet taken by the writer (the queue's depth, for the metrics):
    /// counted up before the send and down when the writer takes one, so it never wraps.
    queued: Arc<AtomicUsize>,
    /// The writer's last write failed and no write succeeded since (a full disk): what must
    /// be recorded before it is answered is refused meanwhile (read without a lock).
    unwritable: Arc<AtomicBool>,
    recent: Arc<Mutex<VecDeque<Recent>>>,
    status: Arc<Mutex<AuditStatus>>,
    checkpoints: tokio::sync::watch::Receiver<Option<Arc<Published>>>,
}

impl AuditHandle {
    /// A handle that writes nothing.
    pub fn disabled() -> AuditHandle {
        AuditHandle::disabled_because(None)
    }

    /// A handle that writes nothing, with the reason for the status.
    pub fn disabled_because(reason: Option<String>) -> AuditHandle {
        let (_, checkpoints) = tokio::sync::watch::channel(None);
        AuditHandle {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            unwritable: Arc::new(AtomicBool::new(false)),
            recent: Arc::new(Mutex::new(VecDeque::new())),
            status: Arc::new(Mutex::new(AuditStatus {
                disabled_reason: reason,
                ..AuditStatus::default()
            })),
            checkpoints,
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    fn send(&self, event: Event, ack: Option<tokio::sync::oneshot::Sender<bool>>) -> bool {
        let Some(tx) = &self.tx else { return false };
        let msg = Msg::Record {
            time_unix_ms: unix_ms_now(),
            event: Box::new(event),
            ack,
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(msg) {
            Ok(()) => true,
            // Full: never block the caller; the loss is counted and reported.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
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

    /// Queues a record without waiting (never blocks: the decision loop calls this).
    pub fn record(&self, event: Event) {
        self.send(event, None);
    }

    /// Queues a record if there is one (for the `events` mappings that return `Option`).
    pub fn record_some(&self, event: Option<Event>) {
        if let Some(event) = event {
            self.record(event);
        }
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

    /// Signs a last checkpoint, syncs and stops the writer, waiting at most `timeout`.
    /// Records sent afterwards are dropped.
    pub async fn close(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return false };
        let (ack, rx) = tokio::sync::oneshot::channel();
        if tx.try_send(Msg::Close { ack }).is_err() {
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

    /// The log cannot be written now (its last write failed, e.g. a full disk, and none
    /// succeeded since); cleared by the writer's next successful write. Never waits.
    pub fn unwritable(&self) -> bool {
        self.enabled() && self.unwritable.load(Ordering::Relaxed)
    }

    /// The status (never waits on the writer: a busy lock returns the counters only).
    pub fn status(&self) -> AuditStatus {
        let mut status = match self.status.try_lock() {
            Ok(s) => s.clone(),
            Err(_) => AuditStatus {
                enabled: self.enabled(),
                ..AuditStatus::default()
            },
        };
        status.dropped = self.dropped();
        status.failed = self.failed();
        status
    }

    /// The newest checkpoint to publish (skip to latest).
    pub fn checkpoints(&self) -> tokio::sync::watch::Receiver<Option<Arc<Published>>> {
        self.checkpoints.clone()
    }

    /// The last `n` records written, newest last, as JSON.
    pub fn recent(&self, n: usize) -> Vec<Value> {
        let Ok(recent) = self.recent.lock() else {
            return Vec::new();
        };
        let skip = recent.len().saturating_sub(n);
        recent.iter().skip(skip).map(Recent::to_json).collect()
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

/// Opens the log's files (recovering what a crash left) with the checkpoint signing key.
fn open_writer(options: &AuditOptions) -> std::io::Result<(log::LogWriter, Recovery)> {
    let key = match &options.signing_key {
        Some(k) => Some(
            checkpoint::AuditKey::new(k.clone(), &options.origin).map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    log::LogWriter::open(log::WriterOptions {
        dir: options.dir.clone(),
        file_bytes_max: options.file_bytes_max,
        fsync: options.fsync,
        fsync_interval: options.fsync_interval,
        key,
        retention_bytes_max: options.retention_bytes_max,
        retention_age_max: options.retention_age_max,
    })
}

/// The damage the opening found, as the status lists it.
fn damage_found(recovery: &Recovery) -> Vec<String> {
    recovery
        .damaged
        .iter()
        .map(|g| {
            format!(
                "{} byte {}: {}",
                log::file_name(g.file),
                g.offset,
                escape(&g.detail)
            )
        })
        .collect()
}

/// Shows the writer's queue in `/metrics` (weakly held: it goes with the writer).
fn watch_queue(queued: &Arc<AtomicUsize>, capacity: usize) {
    let watched = Arc::downgrade(queued);
    crate::metrics::global().watch_queue(
        "audit_writer",
        Box::new(move || {
            watched.upgrade().map(|q| crate::metrics::QueueDepth {
                depth: q.load(Ordering::Relaxed),
                capacity,
            })
        }),
    );
}

/// Opens the log (resuming from its newest file) and starts the writer thread. The thread
/// ends on [`AuditHandle::close`] or when every handle is dropped, after a last checkpoint.
pub fn start(options: &AuditOptions) -> std::io::Result<(AuditHandle, Recovery)> {
    let (mut writer, recovery) = open_writer(options)?;
    // Bounded: overflow drops the record and counts it (see `AuditHandle::send`).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(options.queue_len.max(1));
    let (checkpoint_tx, checkpoints) = tokio::sync::watch::channel(None);
    let damage = damage_found(&recovery);
    let handle = AuditHandle {
        tx: Some(tx),
        checkpoints,
        status: Arc::new(Mutex::new(AuditStatus {
            enabled: true,
            dir: Some(options.dir.display().to_string()),
            records: writer.next_seq(),
            verifier_key: writer.verifier_key(),
            damage,
            recovery: Some(recovery.to_string()),
            ..AuditStatus::default()
        })),
        ..AuditHandle::disabled()
    };
    let recent = handle.recent.clone();
    let queued = handle.queued.clone();
    watch_queue(&queued, options.queue_len.max(1));
    let mut failures = Failures {
        count: handle.failed.clone(),
        last_error: None,
    };
    let unwritable = handle.unwritable.clone();
    let status = handle.status.clone();
    let options = options.clone();
    let fsync_tick = if options.fsync == FsyncPolicy::Interval {
        options.fsync_interval.max(Duration::from_millis(10))
    } else {
        Duration::from_secs(3600)
    };
    let checkpoint_interval = options.checkpoint_interval.max(Duration::from_millis(100));
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            let mut last_checkpoint = Instant::now();
            let publish = |signed: log::Signed, status: &Mutex<AuditStatus>| {
                if let Ok(mut s) = status.lock() {
                    s.checkpoint_size = Some(signed.checkpoint.size);
                    s.checkpoint_unix_ms = Some(unix_ms_now());
                }
                checkpoint_tx.send_replace(Some(Arc::new(Published {
                    size: signed.checkpoint.size,
                    message: signed.message,
                })));
            };
            let checkpoint =
                |writer: &mut log::LogWriter, last: &mut Instant, status: &Mutex<AuditStatus>| {
                    *last = Instant::now();
                    match writer.checkpoint() {
                        Ok(Some(signed)) => publish(signed, status),
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "audit checkpoint failed"),
                    }
                    match writer.prune(SystemTime::now()) {
                        Ok(Some(pruned)) => {
                            tracing::info!(
                                files = pruned.files.len(),
                                "audit retention removed old files: {}",
                                pruned.reason
                            );
                            if let Ok(Some(signed)) = writer.checkpoint() {
                                publish(signed, status);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "audit retention failed"),
                    }
                };
            // The log as found is anchored at once (and the drone's own checkpoint
            // published again for a witness that missed it).
            checkpoint(&mut writer, &mut last_checkpoint, &status);
            let mut outage: Option<Outage> = None;
            loop {
                let due = if writer.unanchored() > 0 {
                    checkpoint_interval.saturating_sub(last_checkpoint.elapsed())
                } else {
                    checkpoint_interval
                };
                let retry = outage.as_ref().map_or(fsync_tick, |_| OUTAGE_RETRY);
                let received = rx.recv_timeout(retry.min(due));
                // While the disk refuses writes, what was lost is recorded first, at the
                // next record or retry: its success is what ends the outage.
                end_outage(
                    &mut writer,
                    &mut outage,
                    &mut failures,
                    &unwritable,
                    &status,
                );
                match received {
                    Ok(first) => {
                        let (group, close) = write_group(
                            &mut writer,
                            first,
                            &rx,
                            options.checkpoint_records_max,
                            &mut failures,
                            &queued,
                        );
                        let committed = commit_group(&mut writer, &group, &mut failures);
                        let lost = acknowledge_group(group, committed, &recent);
                        note_group(&mut outage, lost, &failures, &unwritable, &status);
                        if let Ok(mut s) = status.lock() {
                            s.records = writer.next_seq();
                        }
                        if let Some(signed) = writer.take_pending() {
                            publish(signed, &status);
                            last_checkpoint = Instant::now();
                        }
                        if writer.unanchored() >= options.checkpoint_records_max.max(1) {
                            checkpoint(&mut writer, &mut last_checkpoint, &status);
                        }
                        if let Some(ack) = close {
                            checkpoint(&mut writer, &mut last_checkpoint, &status);
                            let ok = writer.sync().is_ok();
                            if let Ok(mut s) = status.lock() {
                                s.enabled = false;
                            }
                            let _ = ack.send(ok);
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = writer.sync();
                        if writer.unanchored() > 0
                            && last_checkpoint.elapsed() >= checkpoint_interval
                        {
                            checkpoint(&mut writer, &mut last_checkpoint, &status);
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        checkpoint(&mut writer, &mut last_checkpoint, &status);
                        let _ = writer.sync();
                        return;
                    }
                }
            }
        })?;
    Ok((handle, recovery))
}

/// Why the audit log cannot be kept in `dir` because its file system is mounted read-only
/// (the directory itself, or the nearest existing directory above it when it is still to be
/// made), `None` when it is not. Whether this user may write there is not judged here: the
/// service runs as another user than the person who runs `check-config`.
pub fn read_only_reason(dir: &Path) -> Option<String> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c_path` is a valid NUL-terminated string; `statvfs` only writes `stat`.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0 && stat.f_flag & libc::ST_RDONLY != 0).then(|| {
        format!(
            "{} is on a read-only file system: the audit log cannot be written there (set [audit] dir \
             to a writable directory, e.g. the service's StateDirectory=)",
            existing.display()
        )
    })
}

/// Opens the audit log `config` asks for and starts its writer, recording the daemon's
/// start, its configuration (with its hash) and what opening the log found. A disabled
/// handle only with `audit.danger_disabled`, said loudly; a log that cannot be opened stops
/// the start with the reason.
pub fn open(config: &crate::config::Config) -> anyhow::Result<AuditHandle> {
    let a = &config.audit;
    let Some(dir) = a.resolved_dir() else {
        let reason = "audit.danger_disabled = true: NOTHING the daemon decides is recorded; \
                      no call, stop or failsafe can be proven afterwards"
            .to_string();
        tracing::error!("{reason}");
        return Ok(AuditHandle::disabled_because(Some(reason)));
    };
    let hint = "set [audit] dir to a writable directory (or run as the systemd service, whose \
                StateDirectory= is used), or audit.danger_disabled = true to run without an \
                audit log";
    if let Some(why) = read_only_reason(&dir) {
        anyhow::bail!("audit.dir {}: {why}", dir.display());
    }
    let signing_key = match a.resolved_signing_key() {
        Some((path, may_create)) => match checkpoint::load_signing_key(&path) {
            Ok(key) => Some(key),
            Err(_) if may_create && !path.exists() => {
                let key = checkpoint::generate_signing_key(&path).map_err(|e| {
                    anyhow::anyhow!("audit.signing_key_path: cannot create {e}; {hint}")
                })?;
                let origin = a.resolved_origin(&config.mcp.server_name);
                let vkey = checkpoint::AuditKey::new(key.clone(), &origin)
                    .map(|k| k.verifier_key())
                    .unwrap_or_default();
                tracing::warn!(
                    key = %path.display(),
                    "created a new audit signing key; give its verifier key to the witness: {vkey}"
                );
                Some(key)
            }
            Err(e) => anyhow::bail!("audit.signing_key_path: {e}"),
        },
        None => None,
    };
    let options = AuditOptions {
        dir: dir.clone(),
        fsync: a.fsync,
        fsync_interval: Duration::from_millis(a.fsync_interval_ms),
        file_bytes_max: a.file_bytes_max,
        queue_len: a.queue_len,
        signing_key,
        origin: a.resolved_origin(&config.mcp.server_name),
        checkpoint_interval: Duration::from_secs_f64(a.checkpoint_interval_s),
        checkpoint_records_max: a.checkpoint_records_max,
        retention_bytes_max: a.retention_bytes_max,
        retention_age_max: (a.retention_age_days_max > 0)
            .then(|| Duration::from_secs(a.retention_age_days_max * 86_400)),
    };
    let (audit, recovery) =
        start(&options).map_err(|e| anyhow::anyhow!("audit.dir {}: {e}; {hint}", dir.display()))?;
    if recovery.damaged.is_some() {
        tracing::error!(dir = %dir.display(), "audit log: {recovery}");
    } else if recovery.unclean_stop || recovery.torn.is_some() {
        tracing::warn!(dir = %dir.display(), "audit log: {recovery}");
    } else {
        tracing::info!(dir = %dir.display(), "audit log: {recovery}");
    }
    audit.record(Event::DaemonStart {
        version: crate::VERSION.into(),
        recovered: recovery.to_string(),
    });
    audit.record(match &config.source {
        Some(source) => Event::Config {
            source: source.path.display().to_string(),
            sha256: source.sha256.clone(),
        },
        None => Event::Config {
            source: "built-in defaults".into(),
            sha256: String::new(),
        },
    });
    let mut found = Vec::new();
    if recovery.unclean_stop {
        found.push((
            "unclean_stop",
            "the previous run ended without recording its stop: a crash, kill -9 or power loss"
                .to_string(),
        ));
    }
    if let Some(g) = &recovery.torn {
        found.push((
            "torn_tail",
            format!(
                "{} ends inside a record at byte {} ({}); kept as evidence",
                log::file_name(g.file),
                g.offset,
                g.detail
            ),
        ));
    }
    if let Some(g) = &recovery.damaged {
        found.push((
            "damaged",
            format!(
                "{} byte {}: {}; kept as evidence, the log continues in a new file",
                log::file_name(g.file),
                g.offset,
                g.detail
            ),
        ));
    }
    if recovery.replayed {
        found.push((
            "replayed",
            "files without segment headers: read once".to_string(),
        ));
    }
    for (kind, detail) in found {
        audit.record(Event::Recovery {
            kind: kind.into(),
            detail,
        });
    }
    Ok(audit)
}

/// Where `audit verify` gets its checkpoints.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Checkpoint files (signed notes), e.g. copied from the witness.
    pub checkpoints: Vec<PathBuf>,
    /// A witness directory (`audit witness --out DIR`): its keys and every checkpoint kept.
    pub witness: Option<PathBuf>,
    /// Verifier keys (files of `name+id+key` lines); default: the witness's, else the log's own.
    pub keys: Vec<PathBuf>,
}

/// The verifier keys to trust (given, or the witness's) and the checkpoints to check the
/// log against (given files, the witness's), each named by where it came from.
#[allow(clippy::type_complexity)]
fn keys_and_checkpoints(
    options: &VerifyOptions,
) -> Result<(Vec<String>, Vec<(Vec<u8>, String)>), String> {
    let mut keys = Vec::new();
    for path in &options.keys {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        keys.extend(
            checkpoint::parse_verifier_keys(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        );
    }
    let mut notes: Vec<(Vec<u8>, String)> = Vec::new();
    for path in &options.checkpoints {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        notes.push((bytes, path.display().to_string()));
    }
    if let Some(w) = &options.witness {
        let kept = witness::read_dir(w).map_err(|e| format!("{}: {e}", w.display()))?;
        if keys.is_empty() {
            keys.extend(kept.keys);
        }
        for (bytes, name) in kept.checkpoints {
            notes.push((bytes, format!("witness {name}")));
        }
    }
    Ok((keys, notes))
}

/// `flight-companion audit verify DIR`: the verdict as lines; `Err` when the log is damaged
/// or tampered with (the lines say where), or cannot be read.
pub fn verify_command(dir: &Path, options: &VerifyOptions) -> Result<Vec<String>, Vec<String>> {
    let fail = |e: String| vec![format!("{}: {e}", dir.display())];
    let files = log::list_files(dir).map_err(|e| fail(e.to_string()))?;
    if files.is_empty() {
        return Err(fail("no audit files (audit-*.log)".into()));
    }
    let mut lines = Vec::new();
    let (mut keys, notes) = keys_and_checkpoints(options).map_err(fail)?;
    let segment = log::newest_segment(dir);
    let mut key_source = "the key you gave";
    if keys.is_empty() && !notes.is_empty() {
        // The log names its own key: enough to read the checkpoints, not to trust them more
        // than the log itself. Said in the verdict.
        keys.extend(segment.as_ref().map(|s| s.verifier_key.clone()));
        key_source =
            "the key the log itself names (pass --key or --witness for an independent one)";
    }
    let origin = segment.as_ref().map(|s| s.origin.clone());
    let from_witness = |source: &str| source.starts_with("witness ");
    let mut anchors = Vec::new();
    let mut skipped = 0usize;
    for (bytes, source) in &notes {
        match checkpoint::open(bytes, &keys) {
            Ok(v) if origin.as_ref().is_some_and(|o| *o != v.checkpoint.origin) => {
                // A witness keeps every drone's checkpoints: only this log's count.
                skipped += 1;
                if !from_witness(source) {
                    return Err(fail(format!(
                        "checkpoint {source} is of the log `{}`; this log is `{}`",
                        escape(&v.checkpoint.origin),
                        escape(origin.as_deref().unwrap_or_default())
                    )));
                }
            }
            Ok(v) => anchors.push(log::Anchor {
                checkpoint: v.checkpoint,
                source: source.clone(),
            }),
            // A witness may hold other drones' checkpoints, signed by keys it also trusts.
            Err(_) if from_witness(source) => skipped += 1,
            Err(e) => {
                return Err(fail(format!("checkpoint {source}: {e}")));
            }
        }
    }
    anchors.sort_by_key(|a| a.checkpoint.size);
    let report = log::walk(dir, &anchors, &mut |_| {}).map_err(|e| fail(e.to_string()))?;
    for finding in &report.findings {
        lines.push(escape(&finding.to_string()).into_owned());
    }
    let worst = report.worst();
    let first = report.first_seq.unwrap_or(0);
    let summary = format!(
        "{}: {} records (#{first}..#{}) in {} files",
        dir.display(),
        report.records_verified,
        report.next_seq.saturating_sub(1),
        report.files
    );
    let anchored_max = report.anchored.iter().max().copied();
    let mut caveats = Vec::new();
    if skipped > 0 {
        caveats.push(format!(
            "{skipped} checkpoint(s) of the witness are of other logs or keys: not used"
        ));
    }
    if first > 0 && worst < Some(log::Severity::Tampered) {
        caveats.push(format!(
            "records #0..#{} were removed by retention, as the log's signed retention record says",
            first - 1
        ));
    }
    for (size, why) in &report.unchecked {
        caveats.push(format!(
            "the checkpoint at {size} records was not checked: {why}"
        ));
    }
    match anchored_max {
        Some(size) => {
            caveats.push(format!(
                "anchored: the log reproduces the Merkle root of {} checkpoint(s) signed by {key_source}, the newest at {size} records",
                report.anchored.len()
            ));
            if report.next_seq > size {
                caveats.push(format!(
                    "records #{size}..#{} came after the newest checkpoint: chained, not yet anchored",
                    report.next_seq - 1
                ));
            }
        }
        None if anchors.is_empty() => caveats.push(
            "NOT PROVEN without a checkpoint from outside the drone (--checkpoint FILE or \
             --witness DIR): that no records were removed from the end, and that the log was \
             not rewritten and re-chained as a whole by someone with access to the drone. \
             What is proven: every record is intact and in order, and nothing is missing \
             between the first and the last."
                .into(),
        ),
        None => {}
    }
    if let Some((file, offset)) = report.torn_tail
        && !report
            .findings
            .iter()
            .any(|f| f.severity == log::Severity::Tampered)
    {
        caveats.push(format!(
            "{} ends inside a record at byte {offset}: a write cut by a crash or a power loss{} \
             (the daemon leaves it in place and continues in a new file)",
            log::file_name(file),
            if anchors.is_empty() {
                ", or a truncation: only a checkpoint can tell"
            } else {
                "; no checkpoint covers it"
            }
        ));
    }
    let verdict = match worst {
        Some(log::Severity::Tampered) => "TAMPERED",
        Some(log::Severity::Damaged) => "TAMPERED OR DAMAGED",
        _ => "ok",
    };
    let mut out = vec![format!("{summary}: {verdict}")];
    out.extend(lines);
    out.extend(caveats.into_iter().map(|c| format!("  {c}")));
    match worst {
        Some(log::Severity::Tampered) | Some(log::Severity::Damaged) => Err(out),
        _ => Ok(out),
    }
}

/// `flight-companion audit tail DIR`: the last `n` records, one per line, with damage shown
/// where it is. Memory: `n` lines.
pub fn tail_command(dir: &Path, n: usize, json_lines: bool) -> Result<Vec<String>, String> {
    let mut lines: VecDeque<String> = VecDeque::new();
    let mut push = |line: String| {
        if n == 0 {
            return;
        }
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(line);
    };
    log::walk(dir, &[], &mut |item| match item {
        log::Item::Record { record, .. } => push(if json_lines {
            to_json(record).to_string()
        } else {
            format!(
                "#{} {} {}",
                record.seq,
                record.time_unix_ms,
                escape(&describe(&record.event))
            )
        }),
        log::Item::Finding(f) => push(if json_lines {
            json!({"finding": f.to_string()}).to_string()
        } else {
            format!("!! {}", escape(&f.to_string()))
        }),
    })
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(lines.into())
}

/// One line for people (`audit tail`); the caller escapes it.
pub fn describe(event: &Event) -> String {
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
        Event::Segment(s) => format!(
            "SEGMENT file {} ({}){}",
            s.file,
            s.reason,
            s.after
                .as_ref()
                .map(|g| format!(
                    "; left {} at {} byte {}: {}",
                    g.kind,
                    log::file_name(g.file),
                    g.offset,
                    g.detail
                ))
                .unwrap_or_default()
        ),
        Event::Stop {
            kind,
            source,
            identity,
            detail,
        } => {
            if source.is_empty() {
                format!("ESTOP {kind}: {detail}")
            } else {
                format!("ESTOP {kind} by {source} ({identity}): {detail}")
            }
        }
        Event::Failsafe {
            failsafe,
            raised,
            detail,
        } => format!(
            "FAILSAFE {failsafe} {}: {detail}",
            if *raised { "raised" } else { "cleared" }
        ),
        Event::Link { link, up, detail } => {
            format!("LINK {link} {}: {detail}", if *up { "up" } else { "down" })
        }
        Event::Config { source, sha256 } => format!("CONFIG {source} sha256={sha256}"),
        Event::Safety { kind, detail } => format!("SAFETY {kind}: {detail}"),
        Event::Lease {
            change,
            session,
            subject,
            detail,
        } => format!("LEASE {change} {subject} ({session}): {detail}"),
        Event::Pruned(p) => format!(
            "PRUNED {} files ({} records) by {}; the log now starts at #{} in {}",
            p.files.len(),
            p.files.iter().map(|f| f.records).sum::<u64>(),
            p.reason,
            p.first_kept_seq,
            log::file_name(p.first_kept_file)
        ),
        Event::Recovery { kind, detail } => format!("RECOVERY {kind}: {detail}"),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod power_cut_tests;
