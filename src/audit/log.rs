//! The log on disk: numbered files in one directory; the writer (resume, append, rotation,
//! checkpoints, retention) and the verifier.
//!
//! Files are `audit-00000001.log`, `audit-00000002.log`... Every file starts with a
//! [`Segment`] record that says where the log stands (sequence number, chain hash, Merkle
//! frontier), so:
//! - the writer resumes from the newest file alone: start-up reads at most one file
//!   (`file_bytes_max`), whatever the length of the history;
//! - a reader can begin at any file: after retention removed the older ones (a signed
//!   [`Pruned`] record says what went), or after damage (the next file resynchronises);
//! - a file renamed, swapped or removed is named by the segment of the file that follows.
//!
//! Nothing is ever cut or rewritten: a torn last record or a damaged file is left as it is,
//! as evidence, and the writer continues in a new file whose segment names what it left
//! behind ([`Gap`]). Blocking file IO: used from the writer thread and the CLI, never from a
//! deciding loop.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::checkpoint::{AuditKey, Checkpoint, WitnessMessage};
use super::merkle::{self, Frontier, Hash};
use super::record::{self, Event, FrameError, Gap, Pruned, PrunedFile, Record, Segment};

pub use flight_companion_core::config::FsyncPolicy;

/// The drone's own latest checkpoint, beside the log files.
pub const CHECKPOINT_FILE: &str = "checkpoint";

pub fn file_name(n: u32) -> String {
    format!("audit-{n:08}.log")
}

/// The log files of `dir`, in order: (number, path).
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|r| r.strip_suffix(".log"))
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
        {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth saying, proves nothing wrong (a torn record after a power cut, kept as evidence).
    Note,
    /// Bytes that do not decode or do not match their checksum: damaged or edited.
    Damaged,
    /// The log is not what it was: records missing, moved, rewritten, truncated.
    Tampered,
}

/// One thing verification found, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The file and byte, when the finding has a place.
    pub file: Option<u32>,
    pub offset: u64,
    /// The sequence number the record there should have had.
    pub seq: u64,
    pub text: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = match self.severity {
            Severity::Note => "note",
            // A checksum cannot tell bit rot from an edit.
            Severity::Damaged => "TAMPERED OR DAMAGED",
            Severity::Tampered => "TAMPERED",
        };
        match self.file {
            Some(file) => write!(
                f,
                "{label}: record #{} ({} byte {}): {}",
                self.seq,
                file_name(file),
                self.offset,
                self.text
            ),
            None => write!(f, "{label}: {}", self.text),
        }
    }
}

/// A checkpoint the verifier checks the log against (its signature already checked).
#[derive(Debug, Clone)]
pub struct Anchor {
    pub checkpoint: Checkpoint,
    /// Where it came from, for messages: a file, `witness`, `the drone's own`.
    pub source: String,
}

/// What a walk through the log found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: usize,
    /// The first and one-past-last sequence numbers seen.
    pub first_seq: Option<u64>,
    pub next_seq: u64,
    /// Records that decoded and chained.
    pub records_verified: u64,
    pub findings: Vec<Finding>,
    /// Checkpoints whose root the log reproduced, by size.
    pub anchored: Vec<u64>,
    /// Checkpoints that could not be checked (before the retention start, inside damage).
    pub unchecked: Vec<(u64, String)>,
    /// Verifier keys the log's segments name (newest last).
    pub verifier_keys: Vec<String>,
    pub origin: Option<String>,
    /// A torn last record at the end of the newest file: (file, offset).
    pub torn_tail: Option<(u32, u64)>,
    /// The chain hash and Merkle frontier after the last record.
    pub last_hash: Hash,
    pub frontier: Frontier,
    /// The last record seen (with its file).
    pub last_event_is_stop: bool,
}

impl Report {
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// What the walk hands to its caller, in log order.
pub enum Item<'a> {
    Record {
        record: &'a Record,
        file: u32,
        offset: u64,
    },
    Finding(&'a Finding),
}

struct Walker<'a> {
    report: Report,
    /// State known: the next record must continue it.
    continuous: bool,
    /// The anchors by size (a witness may hold thousands; a log, millions of records).
    anchors: std::collections::BTreeMap<u64, Vec<&'a Anchor>>,
    /// The damage that broke the state, if any, and where.
    broken_at: Option<(u32, u64, u64)>,
    /// A torn record at the end of a file that is not the last: (file, offset).
    pending_torn: Option<(u32, u64)>,
    pruned: Vec<Pruned>,
    start_file: Option<u32>,
}

impl Walker<'_> {
    fn find(
        &mut self,
        severity: Severity,
        file: Option<u32>,
        offset: u64,
        text: String,
        sink: &mut dyn FnMut(Item),
    ) {
        let finding = Finding {
            severity,
            file,
            offset,
            seq: self.report.next_seq,
            text,
        };
        sink(Item::Finding(&finding));
        self.report.findings.push(finding);
    }

    /// Checks the anchors whose size is the current frontier size.
    fn check_anchors(&mut self, sink: &mut dyn FnMut(Item)) {
        let size = self.report.frontier.size();
        let root = self.report.frontier.root();
        let mut findings = Vec::new();
        let Some(at_size) = self.anchors.get(&size) else {
            return;
        };
        for anchor in at_size {
            if anchor.checkpoint.root == root {
                self.report.anchored.push(size);
            } else {
                findings.push(format!(
                    "the log's Merkle root at {size} records differs from the checkpoint signed \
                     at that size ({}): the records before it were rewritten (a re-chained log \
                     verifies by itself; it cannot match a checkpoint signed before)",
                    anchor.source
                ));
            }
        }
        for text in findings {
            self.find(Severity::Tampered, None, 0, text, sink);
        }
    }

    /// Starts (or restarts after damage) from a file's first record.
    fn start_from(
        &mut self,
        rec: &Record,
        segment: Option<&Segment>,
        file: u32,
        sink: &mut dyn FnMut(Item),
    ) -> bool {
        let frontier = match segment {
            Some(seg) => match Frontier::from_parts(rec.seq, seg.frontier.clone()) {
                Some(f) => f,
                None => {
                    self.find(
                        Severity::Damaged,
                        Some(file),
                        0,
                        "the segment's Merkle frontier does not fit its sequence number".into(),
                        sink,
                    );
                    return false;
                }
            },
            None if rec.seq == 0 => Frontier::new(),
            None => {
                self.find(
                    Severity::Damaged,
                    Some(file),
                    0,
                    format!(
                        "the file starts at record #{} without a segment header: nothing \
                         after it can be checked",
                        rec.seq
                    ),
                    sink,
                );
                return false;
            }
        };
        if let Some((bad_file, bad_offset, bad_seq)) = self.broken_at.take() {
            let acknowledged = segment
                .and_then(|s| s.after.as_ref())
                .is_some_and(|g| g.file == bad_file && g.offset == bad_offset);
            let lost = rec.seq.saturating_sub(bad_seq);
            let text = format!(
                "verification resumes here, from this file's segment header{}{}",
                if acknowledged {
                    " (the daemon recorded the damage before it when it started)"
                } else {
                    ""
                },
                if lost > 0 {
                    format!(
                        "; records #{bad_seq}..#{} could not be checked",
                        rec.seq - 1
                    )
                } else {
                    "; no record is missing".into()
                }
            );
            self.report.next_seq = rec.seq;
            self.find(Severity::Note, Some(file), 0, text, sink);
        }
        if self.report.first_seq.is_none() {
            self.report.first_seq = Some(rec.seq);
            self.start_file = Some(file);
        }
        self.report.next_seq = rec.seq;
        self.report.last_hash = rec.prev;
        self.report.frontier = frontier;
        self.continuous = true;
        self.check_anchors(sink);
        true
    }

    /// The first record of a file: its segment header (file number, verifier key, origin),
    /// a torn end of the file before it, and whether the log continues from there.
    /// `false`: the rest of this file cannot be checked.
    fn check_file_start(
        &mut self,
        number: u32,
        at: u64,
        rec: &Record,
        segment: Option<&Segment>,
        sink: &mut dyn FnMut(Item),
    ) -> bool {
        if let Some(seg) = segment {
            if seg.file != number {
                self.find(
                    Severity::Tampered,
                    Some(number),
                    at,
                    format!(
                        "{} holds the records of file {} (renamed or swapped)",
                        file_name(number),
                        seg.file
                    ),
                    sink,
                );
            }
            if !seg.verifier_key.is_empty()
                && self.report.verifier_keys.last() != Some(&seg.verifier_key)
            {
                self.report.verifier_keys.push(seg.verifier_key.clone());
            }
            if !seg.origin.is_empty() {
                self.report.origin = Some(seg.origin.clone());
            }
        }
        if let Some((torn_file, torn_offset)) = self.pending_torn.take() {
            let acknowledged = segment.and_then(|s| s.after.as_ref()).is_some_and(|g| {
                g.file == torn_file && g.offset == torn_offset && g.kind == "torn"
            });
            if acknowledged {
                self.find(
                    Severity::Note,
                    Some(torn_file),
                    torn_offset,
                    "a torn record (a write cut by a crash or power loss), kept \
                     as evidence; the daemon continued in the next file"
                        .into(),
                    sink,
                );
            } else {
                self.find(
                    Severity::Damaged,
                    Some(torn_file),
                    torn_offset,
                    "the file ends inside a record and the next file does not \
                     say so: truncated"
                        .into(),
                    sink,
                );
                self.continuous = false;
                self.broken_at = Some((torn_file, torn_offset, self.report.next_seq));
            }
        }
        if !self.continuous || self.report.first_seq.is_none() {
            if !self.start_from(rec, segment, number, sink) {
                return false;
            }
        } else if rec.seq > self.report.next_seq {
            self.find(
                Severity::Tampered,
                Some(number),
                at,
                format!(
                    "records #{}..#{} are missing: {} starts at #{} (a file \
                     was deleted)",
                    self.report.next_seq,
                    rec.seq - 1,
                    file_name(number),
                    rec.seq
                ),
                sink,
            );
            self.broken_at = None;
            if !self.start_from(rec, segment, number, sink) {
                return false;
            }
        } else if rec.seq < self.report.next_seq {
            self.find(
                Severity::Tampered,
                Some(number),
                at,
                format!(
                    "{} starts at record #{}, which came before: files are \
                     out of order (swapped or renamed)",
                    file_name(number),
                    rec.seq
                ),
                sink,
            );
            self.continuous = false;
            return false;
        } else if let Some(seg) = segment
            && seg.frontier.as_slice() != self.report.frontier.nodes()
        {
            self.find(
                Severity::Tampered,
                Some(number),
                at,
                "the segment header's Merkle frontier is not the log's".into(),
                sink,
            );
        }
        true
    }

    fn walk_file(
        &mut self,
        number: u32,
        bytes: &[u8],
        last_file: bool,
        sink: &mut dyn FnMut(Item),
    ) {
        let mut offset = 0usize;
        let mut first = true;
        while offset < bytes.len() {
            let rest = bytes.get(offset..).unwrap_or_default();
            let at = offset as u64;
            match record::decode_full(rest) {
                Ok(d) => {
                    let rec = &d.record;
                    let segment = match &rec.event {
                        Event::Segment(s) => Some(s),
                        _ => None,
                    };
                    if first {
                        first = false;
                        if !self.check_file_start(number, at, rec, segment, sink) {
                            return;
                        }
                    } else if segment.is_some() {
                        self.find(
                            Severity::Tampered,
                            Some(number),
                            at,
                            "a segment header in the middle of a file".into(),
                            sink,
                        );
                    }
                    if rec.seq != self.report.next_seq {
                        self.find(
                            Severity::Tampered,
                            Some(number),
                            at,
                            format!(
                                "sequence number {} where {} was expected (a record is missing \
                                 or was moved)",
                                rec.seq, self.report.next_seq
                            ),
                            sink,
                        );
                        self.continuous = false;
                        self.broken_at = Some((number, at, self.report.next_seq));
                        return;
                    }
                    if rec.prev != self.report.last_hash {
                        self.find(
                            Severity::Tampered,
                            Some(number),
                            at,
                            "its `prev` hash does not match the record before it (the chain is \
                             broken)"
                                .into(),
                            sink,
                        );
                        self.continuous = false;
                        self.broken_at = Some((number, at, self.report.next_seq));
                        return;
                    }
                    self.report.last_hash = d.hash;
                    self.report.next_seq += 1;
                    self.report.records_verified += 1;
                    self.report.frontier.push(d.leaf);
                    self.report.last_event_is_stop = matches!(rec.event, Event::DaemonStop { .. });
                    if let Event::Pruned(p) = &rec.event {
                        self.pruned.push(p.clone());
                    }
                    sink(Item::Record {
                        record: rec,
                        file: number,
                        offset: at,
                    });
                    self.check_anchors(sink);
                    offset += d.used;
                }
                Err(FrameError::Truncated) => {
                    if last_file {
                        self.report.torn_tail = Some((number, at));
                    } else {
                        self.pending_torn = Some((number, at));
                    }
                    return;
                }
                Err(e) => {
                    self.find(Severity::Damaged, Some(number), at, e.to_string(), sink);
                    self.continuous = false;
                    self.broken_at = Some((number, at, self.report.next_seq));
                    return;
                }
            }
        }
        if first {
            self.find(
                Severity::Note,
                Some(number),
                0,
                "an empty file (created just before a stop)".into(),
                sink,
            );
        }
    }
}

/// Walks the whole log, checking frames, sequence numbers, the hash chain, segment headers,
/// retention records and the Merkle root at every anchor's size; hands every record and
/// finding to `sink` in log order. Memory: one file at a time.
pub fn walk(dir: &Path, anchors: &[Anchor], sink: &mut dyn FnMut(Item)) -> std::io::Result<Report> {
    let files = list_files(dir)?;
    let mut w = Walker {
        report: Report {
            files: files.len(),
            ..Report::default()
        },
        continuous: false,
        anchors: {
            let mut by_size: std::collections::BTreeMap<u64, Vec<&Anchor>> = Default::default();
            for a in anchors {
                by_size.entry(a.checkpoint.size).or_default().push(a);
            }
            by_size
        },
        broken_at: None,
        pending_torn: None,
        pruned: Vec::new(),
        start_file: None,
    };
    let mut previous_number: Option<u32> = None;
    for (i, (number, path)) in files.iter().enumerate() {
        if let Some(prev) = previous_number
            && *number != prev + 1
        {
            w.find(
                Severity::Tampered,
                None,
                0,
                format!(
                    "{} is missing between {} and {}",
                    if *number == prev + 2 {
                        file_name(prev + 1)
                    } else {
                        format!("{}..{}", file_name(prev + 1), file_name(number - 1))
                    },
                    file_name(prev),
                    file_name(*number)
                ),
                sink,
            );
        }
        previous_number = Some(*number);
        let bytes = std::fs::read(path)?;
        w.walk_file(*number, &bytes, i + 1 == files.len(), sink);
    }
    if let Some((file, offset)) = w.pending_torn.take() {
        w.find(
            Severity::Damaged,
            Some(file),
            offset,
            "the file ends inside a record".into(),
            sink,
        );
    }
    // Records before the first one present: only retention may have removed them.
    if let (Some(first), Some(start_file)) = (w.report.first_seq, w.start_file)
        && first > 0
    {
        let accounted = w
            .pruned
            .iter()
            .any(|p| p.first_kept_seq == first && p.first_kept_file == start_file);
        if !accounted {
            w.find(
                Severity::Tampered,
                None,
                0,
                format!(
                    "records #0..#{} are missing and no retention record accounts for them \
                     (the oldest files were deleted)",
                    first - 1
                ),
                sink,
            );
        }
    }
    let next = w.report.next_seq;
    let first = w.report.first_seq.unwrap_or(0);
    let anchored = w.report.anchored.clone();
    let mut late = Vec::new();
    for anchor in anchors {
        let size = anchor.checkpoint.size;
        if anchored.contains(&size)
            || w.report
                .findings
                .iter()
                .any(|f| f.text.contains(&format!("root at {size} records")))
        {
            continue;
        }
        if size > next {
            late.push(format!(
                "the checkpoint at {size} records ({}) covers records the log no longer has: it \
                 ends at {next} (records were deleted from the end or the newest file was \
                 truncated)",
                anchor.source
            ));
        } else if size < first {
            w.report.unchecked.push((
                size,
                "it is older than the oldest record kept (retention)".into(),
            ));
        } else {
            w.report.unchecked.push((
                size,
                "damage kept the verifier from computing the root at that size".into(),
            ));
        }
    }
    for text in late {
        w.find(Severity::Tampered, None, 0, text, sink);
    }
    if let Some((file, offset)) = w.report.torn_tail
        && anchors.iter().any(|a| a.checkpoint.size > next)
    {
        // Already reported as a deletion covered by a checkpoint; say where it was cut.
        w.find(
            Severity::Tampered,
            Some(file),
            offset,
            "the newest file ends inside a record".into(),
            sink,
        );
    }
    Ok(w.report)
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/// How the writer is set up.
#[derive(Debug)]
pub struct WriterOptions {
    pub dir: PathBuf,
    pub file_bytes_max: u64,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    /// Signs checkpoints; `None` writes no checkpoints (tests).
    pub key: Option<AuditKey>,
    /// Retention: total bytes kept, and the age of the newest record in a file.
    pub retention_bytes_max: u64,
    pub retention_age_max: Option<Duration>,
}

/// How the log was found on start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records in the log.
    pub records: u64,
    /// The previous run did not record its stop (a crash, kill -9, power loss).
    pub unclean_stop: bool,
    /// A torn last record, left in place.
    pub torn: Option<Gap>,
    /// Damage found in the newest file or against the drone's own last checkpoint.
    pub damaged: Option<Gap>,
    /// The newest file had no segment header (an older format): the whole log was read.
    pub replayed: bool,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} records", self.records)?;
        if self.unclean_stop {
            write!(f, ", the previous run ended without a stop record (crash)")?;
        }
        if let Some(g) = &self.torn {
            write!(
                f,
                ", a torn last record in {} at byte {} kept as evidence",
                file_name(g.file),
                g.offset
            )?;
        }
        if let Some(g) = &self.damaged {
            write!(
                f,
                ", DAMAGED: {} at byte {}: {} (kept as evidence; the log continues in a new file)",
                file_name(g.file),
                g.offset,
                g.detail
            )?;
        }
        if self.replayed {
            write!(
                f,
                ", the whole log was read once (files without segment headers)"
            )?;
        }
        Ok(())
    }
}

/// A signed checkpoint ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    pub note: String,
    /// The tlog-witness body: the proof from the previous checkpoint, then the note.
    pub message: String,
}

/// Appends records. Not thread-safe by itself: one writer thread owns it.
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    file_number: u32,
    file_bytes: u64,
    file_bytes_max: u64,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
    last_sync: Instant,
    unsynced: bool,
    /// `fdatasync`s made of the log files (group commit: fewer than the records).
    syncs: u64,
    last_hash: Hash,
    next_seq: u64,
    frontier: Frontier,
    /// Where the newest record starts in the current file.
    last_record_offset: u64,
    key: Option<AuditKey>,
    /// The last checkpoint's tree and the leaves appended since (for the next proof).
    base: Option<Frontier>,
    since_base: Vec<Hash>,
    last_checkpoint: Option<Signed>,
    /// A checkpoint made by a rotation, waiting to be published.
    pending: Option<Signed>,
    retention_bytes_max: u64,
    retention_age_max: Option<Duration>,
    /// A failed write left part of a frame that could not be removed (the file could not be
    /// shortened): the next record goes to a new file whose segment names it.
    torn_write: Option<Gap>,
    /// The current file still needs its segment (its write failed, e.g. on a full disk):
    /// written before the next record, so every file starts with one.
    segment_due: Option<(String, Option<Gap>)>,
}

/// What scanning the newest file found.
struct Scan {
    next_seq: u64,
    last_hash: Hash,
    frontier: Frontier,
    end: u64,
    last_is_stop: bool,
    leaves: Vec<(u64, Hash)>,
    /// The frontier just before record `keep_leaves_from`.
    snapshot: Option<Frontier>,
    problem: Option<Gap>,
}

/// Reads a file's frames one at a time through a small buffer: start-up memory does not
/// depend on the size of the newest file either.
struct FrameReader {
    reader: std::io::BufReader<File>,
    offset: u64,
    len: u64,
}

impl FrameReader {
    fn open_at(path: &Path, offset: u64) -> std::io::Result<FrameReader> {
        use std::io::Seek as _;
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(std::io::SeekFrom::Start(offset))?;
        Ok(FrameReader {
            reader: std::io::BufReader::with_capacity(64 * 1024, file),
            offset,
            len,
        })
    }

    /// The next frame and where it starts; `None` at the end of the file.
    fn next(&mut self) -> std::io::Result<Option<(u64, Result<record::Decoded, FrameError>)>> {
        let at = self.offset;
        if at >= self.len {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        if self.len - at < 4 {
            return Ok(Some((at, Err(FrameError::Truncated))));
        }
        self.reader.read_exact(&mut len)?;
        let n = u32::from_le_bytes(len) as usize;
        if n == 0 || n > record::PAYLOAD_BYTES_MAX {
            return Ok(Some((at, Err(FrameError::BadLength(n)))));
        }
        let total = 4 + n + record::FRAME_OVERHEAD - 4;
        if self.len - at < total as u64 {
            return Ok(Some((at, Err(FrameError::Truncated))));
        }
        let mut frame = vec![0u8; total];
        frame[..4].copy_from_slice(&len);
        self.reader.read_exact(&mut frame[4..])?;
        let decoded = record::decode_full(&frame);
        if let Ok(d) = &decoded {
            self.offset += d.used as u64;
        }
        Ok(Some((at, decoded)))
    }
}

fn scan_file(
    number: u32,
    path: &Path,
    start: Option<(u64, Hash, Frontier)>,
    keep_leaves_from: u64,
    from: u64,
) -> std::io::Result<Scan> {
    let mut scan = Scan {
        next_seq: 0,
        last_hash: [0; 32],
        frontier: Frontier::new(),
        end: from,
        last_is_stop: false,
        leaves: Vec::new(),
        snapshot: None,
        problem: None,
    };
    let mut started = false;
    if let Some((seq, hash, frontier)) = start {
        scan.next_seq = seq;
        scan.last_hash = hash;
        scan.frontier = frontier;
        started = true;
    }
    let mut frames = FrameReader::open_at(path, from)?;
    while let Some((at, decoded)) = frames.next()? {
        let gap = |kind: &str, detail: String| Gap {
            file: number,
            offset: at,
            kind: kind.into(),
            detail,
        };
        match decoded {
            Ok(d) => {
                let rec = &d.record;
                if !started {
                    let frontier = match &rec.event {
                        Event::Segment(s) => Frontier::from_parts(rec.seq, s.frontier.clone()),
                        _ if rec.seq == 0 => Some(Frontier::new()),
                        _ => None,
                    };
                    let Some(frontier) = frontier else {
                        scan.problem = Some(gap(
                            "damaged",
                            "the file's first record is not a usable segment header".into(),
                        ));
                        return Ok(scan);
                    };
                    scan.next_seq = rec.seq;
                    scan.last_hash = rec.prev;
                    scan.frontier = frontier;
                    started = true;
                }
                if rec.seq != scan.next_seq || rec.prev != scan.last_hash {
                    scan.problem = Some(gap(
                        "damaged",
                        format!(
                            "record #{} does not continue the chain (expected #{})",
                            rec.seq, scan.next_seq
                        ),
                    ));
                    return Ok(scan);
                }
                if rec.seq == keep_leaves_from {
                    scan.snapshot = Some(scan.frontier.clone());
                }
                if rec.seq >= keep_leaves_from {
                    scan.leaves.push((rec.seq, d.leaf));
                }
                scan.frontier.push(d.leaf);
                scan.last_hash = d.hash;
                scan.next_seq += 1;
                scan.last_is_stop = matches!(rec.event, Event::DaemonStop { .. });
                scan.end = at + d.used as u64;
            }
            Err(FrameError::Truncated) => {
                scan.problem = Some(gap(
                    "torn",
                    format!("{} bytes end inside a record", frames.len - at),
                ));
                return Ok(scan);
            }
            Err(e) => {
                scan.problem = Some(gap("damaged", e.to_string()));
                return Ok(scan);
            }
        }
    }
    Ok(scan)
}

/// The segment header of the newest file: the log's origin and signing key, cheaply.
pub fn newest_segment(dir: &Path) -> Option<Segment> {
    let files = list_files(dir).ok()?;
    files
        .iter()
        .rev()
        .find_map(|(_, path)| match first_record(path)?.event {
            Event::Segment(s) => Some(s),
            _ => None,
        })
}

/// Reads the first frame of a file (its segment header), cheaply.
fn first_record(path: &Path) -> Option<Record> {
    let mut file = File::open(path).ok()?;
    let mut len = [0u8; 4];
    file.read_exact(&mut len).ok()?;
    let n = u32::from_le_bytes(len) as usize;
    if n == 0 || n > record::PAYLOAD_BYTES_MAX {
        return None;
    }
    let mut frame = vec![0u8; 4 + n + 8];
    frame[..4].copy_from_slice(&len);
    file.read_exact(&mut frame[4..]).ok()?;
    record::decode(&frame).ok().map(|(r, _, _)| r)
}

impl LogWriter {
    /// Opens (creating) the log in `dir` and resumes from its newest file. Never cuts or
    /// rewrites anything: a torn record or damage is left where it is and the log continues
    /// in a new file that says so.
    pub fn open(options: WriterOptions) -> std::io::Result<(LogWriter, Recovery)> {
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir)?;
        let files = list_files(&dir)?;
        let own = options.key.as_ref().and_then(|_| read_own_checkpoint(&dir));
        let mut recovery = Recovery::default();
        let (mut number, scan, mut start_new_file) =
            find_resume_point(&dir, &files, own.as_ref(), &mut recovery)?;
        let (next_seq, last_hash, frontier, end, leaves, snapshot) = match scan {
            Some(s) => {
                recovery.unclean_stop = s.next_seq > 0 && !s.last_is_stop;
                match &s.problem {
                    Some(g) if g.kind == "torn" => recovery.torn = Some(g.clone()),
                    Some(g) => recovery.damaged = Some(g.clone()),
                    None => {}
                }
                (
                    s.next_seq,
                    s.last_hash,
                    s.frontier,
                    s.end,
                    s.leaves,
                    s.snapshot,
                )
            }
            None => (0, [0; 32], Frontier::new(), 0, Vec::new(), None),
        };
        // The checkpoint base: the drone's own last checkpoint, if the scan reached it.
        let mut base = None;
        let mut since_base = Vec::new();
        if let Some(own) = &own {
            if own.size > next_seq && next_seq > 0 {
                let gap = Gap {
                    file: number,
                    offset: end,
                    kind: "damaged".into(),
                    detail: format!(
                        "the drone's own checkpoint covers {} records, the log has {next_seq}: \
                         records were removed from the end",
                        own.size
                    ),
                };
                recovery.damaged = Some(gap.clone());
                start_new_file = Some(("after damage".into(), Some(gap)));
            } else if let Some(before) = snapshot {
                if before.root() == own.root {
                    since_base = leaves.iter().map(|(_, h)| *h).collect();
                    base = Some(before);
                } else {
                    let gap = Gap {
                        file: number,
                        offset: 0,
                        kind: "damaged".into(),
                        detail: format!(
                            "the log's Merkle root at {} records is not the one the drone signed",
                            own.size
                        ),
                    };
                    recovery.damaged = Some(gap.clone());
                    start_new_file = Some(("after damage".into(), Some(gap)));
                }
            } else if own.size == next_seq && own.root == frontier.root() {
                base = Some(frontier.clone());
            }
        }
        recovery.records = next_seq;
        let (file, file_bytes) = if start_new_file.is_some() {
            number += 1;
            let path = dir.join(file_name(number));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let len = file.metadata()?.len();
            (file, len)
        } else {
            let path = dir.join(file_name(number));
            let file = OpenOptions::new().append(true).open(&path)?;
            let len = file.metadata()?.len();
            (file, len)
        };
        let mut writer = LogWriter {
            dir: dir.clone(),
            file,
            file_number: number,
            file_bytes,
            file_bytes_max: options.file_bytes_max.max(1024),
            fsync: options.fsync,
            fsync_interval: options.fsync_interval,
            last_sync: Instant::now(),
            unsynced: false,
            syncs: 0,
            last_hash,
            next_seq,
            frontier,
            last_record_offset: 0,
            key: options.key,
            base,
            since_base,
            last_checkpoint: None,
            pending: None,
            retention_bytes_max: options.retention_bytes_max,
            retention_age_max: options.retention_age_max,
            torn_write: None,
            segment_due: None,
        };
        if let Some((reason, after)) = start_new_file {
            writer.write_segment(&reason, after)?;
            writer.sync()?;
            sync_dir(&dir);
        }
        Ok((writer, recovery))
    }

    fn write_segment(&mut self, reason: &str, after: Option<Gap>) -> std::io::Result<()> {
        let (origin, verifier_key) = match &self.key {
            Some(k) => (k.origin().to_owned(), k.verifier_key()),
            None => (String::new(), String::new()),
        };
        let event = Event::Segment(Segment {
            file: self.file_number,
            frontier: self.frontier.nodes().to_vec(),
            origin,
            verifier_key,
            reason: reason.into(),
            after,
        });
        self.write_record(super::unix_ms_now(), event).0?;
        Ok(())
    }

    /// Writes one record chained after the last one, and hands its event back, written or not.
    fn write_record(&mut self, time_unix_ms: u64, event: Event) -> (std::io::Result<u64>, Event) {
        let record = Record {
            seq: self.next_seq,
            time_unix_ms,
            prev: self.last_hash,
            event,
        };
        let written = self.write_frame(&record);
        (written, record.event)
    }

    /// One record's frame, after the last one in the file and the chain.
    fn write_frame(&mut self, record: &Record) -> std::io::Result<u64> {
        let (frame, hash, leaf) =
            record::encode_with_leaf(record).map_err(std::io::Error::other)?;
        if let Err(e) = self.file.write_all(&frame) {
            // A full disk (or any write error) can leave part of the frame behind. That part
            // was never chained nor acknowledged, so it is removed (shortening a file frees
            // space, it never needs any); if even that fails, the bytes stay as a torn
            // record and the next record starts a new file that names them.
            self.unsynced = true;
            if self.file.set_len(self.file_bytes).is_err() {
                self.torn_write = Some(Gap {
                    file: self.file_number,
                    offset: self.file_bytes,
                    kind: "torn".into(),
                    detail: format!("a write failed ({e}) and its part could not be removed"),
                });
            }
            return Err(e);
        }
        self.last_record_offset = self.file_bytes;
        self.file_bytes += frame.len() as u64;
        self.last_hash = hash;
        self.next_seq += 1;
        self.frontier.push(leaf);
        if self.key.is_some() {
            self.since_base.push(leaf);
        }
        self.unsynced = true;
        Ok(record.seq)
    }

    /// Writes the current file's segment if its write failed before.
    fn write_due_segment(&mut self) -> std::io::Result<()> {
        if let Some((reason, after)) = self.segment_due.take()
            && let Err(e) = self.write_segment(&reason, after.clone())
        {
            self.segment_due = Some((reason, after));
            return Err(e);
        }
        Ok(())
    }

    /// Appends one record (one `write` of the whole frame) and makes it as durable as the
    /// policy asks ([`LogWriter::commit`]); returns its sequence number.
    pub fn append(&mut self, time_unix_ms: u64, event: Event) -> std::io::Result<u64> {
        let seq = self.write(time_unix_ms, event)?;
        self.commit()?;
        Ok(seq)
    }

    /// Writes one record (one `write` of the whole frame) without forcing it to stable
    /// storage: a group of records written this way is made durable by one
    /// [`LogWriter::commit`] (group commit: one `fdatasync` for every record of the group).
    /// A kill -9 loses none of them (they are in the kernel's page cache); a power cut before
    /// the commit can.
    /// A failed write changes nothing in the log (its partial frame is removed, or left as
    /// a torn record the next file's segment names): the caller may try again later.
    pub fn write(&mut self, time_unix_ms: u64, event: Event) -> std::io::Result<u64> {
        self.write_kept(time_unix_ms, event).0
    }

    /// [`LogWriter::write`] handing the event back, written or not: the writer's thread keeps
    /// it for `audit://recent` instead of a JSON copy per record.
    pub fn write_kept(&mut self, time_unix_ms: u64, event: Event) -> (std::io::Result<u64>, Event) {
        if let Err(e) = self.before_write() {
            return (Err(e), event);
        }
        self.write_record(time_unix_ms, event)
    }

    /// A new file when one is due (after a torn write, at the size limit) and the segment a
    /// failed write left due.
    fn before_write(&mut self) -> std::io::Result<()> {
        if let Some(gap) = self.torn_write.take() {
            if let Err(e) = self.rotate("after a failed write", Some(gap.clone())) {
                // Not yet in a new file: try again with the next record.
                if self.segment_due.is_none() {
                    self.torn_write = Some(gap);
                }
                return Err(e);
            }
        } else if self.file_bytes >= self.file_bytes_max && self.segment_due.is_none() {
            self.rotate("rotation", None)?;
        }
        self.write_due_segment()
    }

    /// `fdatasync`s of written records so far (by `commit`, `sync` and the interval).
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Makes what was written as durable as the policy asks: `always` syncs now, `interval`
    /// when the interval has passed, `never` leaves it to the kernel.
    pub fn commit(&mut self) -> std::io::Result<()> {
        match self.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval if self.last_sync.elapsed() >= self.fsync_interval => self.sync(),
            _ => Ok(()),
        }
    }

    /// Forces what was written to stable storage (on the interval and at shutdown).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
            self.syncs += 1;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Every file boundary is anchored: a checkpoint, then the new file and its segment.
    /// Once the new file is open, a failed segment write is retried before the next record.
    fn rotate(&mut self, reason: &str, after: Option<Gap>) -> std::io::Result<()> {
        if let Some(signed) = self.checkpoint()? {
            self.pending = Some(signed);
        }
        self.file.sync_all()?;
        let path = self.dir.join(file_name(self.file_number + 1));
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.file_number += 1;
        self.file_bytes = 0;
        self.segment_due = Some((reason.into(), after));
        sync_dir(&self.dir);
        self.write_due_segment()
    }

    /// Records since the last checkpoint.
    pub fn unanchored(&self) -> u64 {
        self.next_seq - self.base.as_ref().map_or(0, Frontier::size)
    }

    /// Syncs, signs a checkpoint of everything written, keeps it as `DIR/checkpoint` and
    /// returns it for publication. `None` without a key or when nothing is new.
    pub fn checkpoint(&mut self) -> std::io::Result<Option<Signed>> {
        if self.key.is_none()
            || (self
                .base
                .as_ref()
                .is_some_and(|b| b.size() == self.next_seq)
                && self.last_checkpoint.is_some())
        {
            return Ok(None);
        }
        // What is signed must survive a power cut: sync before signing.
        self.sync()?;
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let checkpoint = Checkpoint {
            origin: key.origin().to_owned(),
            size: self.next_seq,
            root: self.frontier.root(),
        };
        let note = key.sign(&checkpoint).map_err(std::io::Error::other)?;
        let (old_size, proof) = match &self.base {
            Some(base) if base.size() > 0 => (
                base.size(),
                merkle::consistency_proof(base, &self.since_base)
                    .ok_or_else(|| std::io::Error::other("consistency proof"))?,
            ),
            _ => (0, Vec::new()),
        };
        let message = WitnessMessage {
            old_size,
            proof,
            note: note.clone(),
        }
        .encode();
        write_atomically(&self.dir.join(CHECKPOINT_FILE), note.as_bytes())?;
        // Where the log ends, for the next start (a hint, checked against the note's root).
        let state = TailState {
            file: self.file_number,
            offset: self.file_bytes,
            last_record_offset: self.last_record_offset,
            size: self.next_seq,
            last_hash: self.last_hash,
            frontier: self.frontier.nodes().to_vec(),
        };
        write_atomically(&self.dir.join(TAIL_STATE_FILE), state.encode().as_bytes())?;
        self.base = Some(self.frontier.clone());
        self.since_base.clear();
        let signed = Signed {
            checkpoint,
            note,
            message,
        };
        self.last_checkpoint = Some(signed.clone());
        Ok(Some(signed))
    }

    /// A checkpoint made by a rotation, for the caller to publish.
    pub fn take_pending(&mut self) -> Option<Signed> {
        self.pending.take()
    }

    pub fn last_checkpoint(&self) -> Option<&Signed> {
        self.last_checkpoint.as_ref()
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn verifier_key(&self) -> Option<String> {
        self.key.as_ref().map(AuditKey::verifier_key)
    }

    /// Removes the oldest files beyond the retention limits, never the newest file and never
    /// records that no checkpoint covers yet; appends a [`Pruned`] record of what went.
    /// The caller signs a checkpoint right after.
    pub fn prune(&mut self, now: SystemTime) -> std::io::Result<Option<Pruned>> {
        let files = list_files(&self.dir)?;
        let anchored = self.base.as_ref().map_or(0, Frontier::size);
        let mut sizes = Vec::with_capacity(files.len());
        for (n, path) in &files {
            let meta = std::fs::metadata(path)?;
            sizes.push((*n, path.clone(), meta.len(), meta.modified().ok()));
        }
        let mut total: u64 = sizes.iter().map(|s| s.2).sum();
        let mut removed = Vec::new();
        let mut reason = String::new();
        for i in 0..sizes.len().saturating_sub(1) {
            let (n, path, bytes, modified) = &sizes[i];
            if *n == self.file_number {
                break;
            }
            let over_size = total > self.retention_bytes_max;
            let too_old = match (self.retention_age_max, modified) {
                (Some(max), Some(m)) => now.duration_since(*m).is_ok_and(|age| age > max),
                _ => false,
            };
            if !over_size && !too_old {
                break;
            }
            // The next file's segment says where this one ends; both must be readable.
            let (Some(this), Some(next)) = (first_record(path), first_record(&sizes[i + 1].1))
            else {
                break;
            };
            if !matches!(next.event, Event::Segment(_)) || next.seq > anchored {
                break;
            }
            let contents = std::fs::read(path)?;
            let digest = super::record::hex(&Sha256::digest(&contents));
            std::fs::remove_file(path)?;
            total -= bytes;
            if reason.is_empty() {
                reason = if over_size {
                    format!(
                        "size: the log passed retention_bytes_max ({} bytes)",
                        self.retention_bytes_max
                    )
                } else {
                    format!(
                        "age: files older than retention_age_days_max ({} days)",
                        self.retention_age_max.map_or(0, |d| d.as_secs() / 86_400)
                    )
                };
            }
            removed.push((
                PrunedFile {
                    file: *n,
                    first_seq: this.seq,
                    records: next.seq - this.seq,
                    bytes: *bytes,
                    sha256: digest,
                },
                next.seq,
                sizes[i + 1].0,
            ));
        }
        let Some((_, first_kept_seq, first_kept_file)) = removed.last().cloned() else {
            return Ok(None);
        };
        sync_dir(&self.dir);
        let pruned = Pruned {
            files: removed.into_iter().map(|(f, _, _)| f).collect(),
            first_kept_seq,
            first_kept_file,
            reason,
        };
        self.append(super::unix_ms_now(), Event::Pruned(pruned.clone()))?;
        Ok(Some(pruned))
    }
}

/// Why a new file is started (its segment's reason), and the gap it follows, if any.
type NewFileReason = (String, Option<Gap>);

/// The new file after a scan that found a torn record or damage: the reason and the gap.
fn after_problem(problem: &Gap) -> NewFileReason {
    let reason = if problem.kind == "torn" {
        "after a torn record"
    } else {
        "after damage"
    };
    (reason.into(), Some(problem.clone()))
}

/// Where the log resumes: the file to continue (or the one before a new file), what the scan
/// of its end found, and why a new file must be started, if it must (with the gap it
/// follows). The fast path reads from the tail state of the drone's own last checkpoint.
fn find_resume_point(
    dir: &Path,
    files: &[(u32, PathBuf)],
    own: Option<&Checkpoint>,
    recovery: &mut Recovery,
) -> std::io::Result<(u32, Option<Scan>, Option<NewFileReason>)> {
    let mut start_new_file: Option<NewFileReason> = None;
    // The fast path: the tail state saved with the drone's own last checkpoint says where
    // the log ended then; only the records after it are read (none after a clean stop).
    let fast = own
        .and_then(|own| resume_from_tail_state(dir, files, own).transpose())
        .transpose()?;
    let (number, scan) = if let Some((number, scan)) = fast {
        if scan.problem.is_none() && std::fs::metadata(dir.join(file_name(number)))?.len() == 0 {
            // A stop right after a rotation: the new file still needs its segment.
            start_new_file = Some(("rotation".into(), None));
            (number - 1, Some(scan))
        } else {
            if let Some(problem) = &scan.problem {
                start_new_file = Some(after_problem(problem));
            }
            (number, Some(scan))
        }
    } else {
        match files.last() {
            None => {
                start_new_file = Some(("new log".into(), None));
                (0, None)
            }
            Some((last, path)) => {
                // An empty newest file (a stop right after a rotation): resume from the one
                // before it and write the segment into the empty one.
                let empty = std::fs::metadata(path)?.len() == 0;
                let keep_from = own.map_or(u64::MAX, |c| c.size);
                if empty && files.len() >= 2 {
                    let (before, before_path) = &files[files.len() - 2];
                    let scan = scan_or_replay(dir, *before, before_path, keep_from, recovery)?;
                    start_new_file = Some(("rotation".into(), scan.problem.clone()));
                    (*last - 1, Some(scan))
                } else if empty {
                    start_new_file = Some(("new log".into(), None));
                    std::fs::remove_file(path)?;
                    (0, None)
                } else {
                    let scan = scan_or_replay(dir, *last, path, keep_from, recovery)?;
                    if let Some(problem) = &scan.problem {
                        start_new_file = Some(after_problem(problem));
                    } else if recovery.replayed {
                        start_new_file = Some(("after a replay".into(), None));
                    }
                    (*last, Some(scan))
                }
            }
        }
    };
    Ok((number, scan, start_new_file))
}

fn scan_or_replay(
    dir: &Path,
    number: u32,
    path: &Path,
    keep_leaves_from: u64,
    recovery: &mut Recovery,
) -> std::io::Result<Scan> {
    // A first record that does not decode is damage (reported by the scan); only a readable
    // first record that is not a segment header means an older format.
    let legacy =
        first_record(path).is_some_and(|r| !matches!(r.event, Event::Segment(_)) && r.seq != 0);
    if !legacy {
        return scan_file(number, path, None, keep_leaves_from, 0);
    }
    // An older log without segment headers: read it all once to rebuild the state.
    recovery.replayed = true;
    let mut state: Option<(u64, Hash, Frontier)> = None;
    let files = list_files(dir)?;
    let mut last = None;
    for (n, file) in files {
        let scan = scan_file(n, &file, state.take(), keep_leaves_from, 0)?;
        let stop = scan.problem.is_some();
        state = Some((scan.next_seq, scan.last_hash, scan.frontier.clone()));
        last = Some(scan);
        if stop || n == number {
            break;
        }
    }
    match last {
        Some(scan) => Ok(scan),
        None => scan_file(number, path, None, keep_leaves_from, 0),
    }
}

/// Where the log ended at the drone's own last checkpoint.
pub const TAIL_STATE_FILE: &str = "checkpoint.state";

#[derive(Debug, Clone, PartialEq, Eq)]
struct TailState {
    file: u32,
    offset: u64,
    last_record_offset: u64,
    size: u64,
    last_hash: Hash,
    frontier: Vec<Hash>,
}

impl TailState {
    fn encode(&self) -> String {
        let frontier: Vec<String> = self.frontier.iter().map(|h| record::hex(h)).collect();
        format!(
            "file {}\noffset {}\nlast {}\nsize {}\nhash {}\nfrontier {}\n",
            self.file,
            self.offset,
            self.last_record_offset,
            self.size,
            record::hex(&self.last_hash),
            frontier.join(" ")
        )
    }

    fn decode(text: &str) -> Option<TailState> {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            fields.insert(k, v);
        }
        let hash = |h: &str| -> Option<Hash> {
            if h.len() != 64 {
                return None;
            }
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(out)
        };
        Some(TailState {
            file: fields.get("file")?.parse().ok()?,
            offset: fields.get("offset")?.parse().ok()?,
            last_record_offset: fields.get("last")?.parse().ok()?,
            size: fields.get("size")?.parse().ok()?,
            last_hash: hash(fields.get("hash")?)?,
            frontier: fields
                .get("frontier")?
                .split_whitespace()
                .map(hash)
                .collect::<Option<Vec<_>>>()?,
        })
    }
}

/// Resumes from the tail state when it matches the drone's own checkpoint and the record
/// where it says the log ended: reads only what came after. `None`: use the segments.
fn resume_from_tail_state(
    dir: &Path,
    files: &[(u32, PathBuf)],
    own: &Checkpoint,
) -> std::io::Result<Option<(u32, Scan)>> {
    let Some(state) = std::fs::read_to_string(dir.join(TAIL_STATE_FILE))
        .ok()
        .and_then(|t| TailState::decode(&t))
    else {
        return Ok(None);
    };
    let Some(frontier) = Frontier::from_parts(state.size, state.frontier.clone()) else {
        return Ok(None);
    };
    if state.size != own.size || frontier.root() != own.root || state.size == 0 {
        return Ok(None);
    }
    let Some((_, path)) = files.iter().find(|(n, _)| *n == state.file) else {
        return Ok(None);
    };
    // The record the state names must be there, end where it says, and hash as it says.
    let mut reader = FrameReader::open_at(path, state.last_record_offset)?;
    let last_is_stop = match reader.next()? {
        Some((_, Ok(d)))
            if d.record.seq + 1 == state.size
                && d.hash == state.last_hash
                && state.last_record_offset + d.used as u64 == state.offset =>
        {
            matches!(d.record.event, Event::DaemonStop { .. })
        }
        _ => return Ok(None),
    };
    let mut start = Some((state.size, state.last_hash, frontier.clone()));
    let mut merged: Option<Scan> = None;
    let mut number = state.file;
    for (n, path) in files.iter().filter(|(n, _)| *n >= state.file) {
        let from = if *n == state.file { state.offset } else { 0 };
        let mut scan = scan_file(*n, path, start.take(), state.size, from)?;
        number = *n;
        if let Some(previous) = merged.take() {
            let mut leaves = previous.leaves;
            leaves.append(&mut scan.leaves);
            scan.leaves = leaves;
            if scan.next_seq == previous.next_seq {
                scan.last_is_stop = previous.last_is_stop;
            }
        } else if scan.next_seq == state.size {
            scan.last_is_stop = last_is_stop;
        }
        start = Some((scan.next_seq, scan.last_hash, scan.frontier.clone()));
        let stop = scan.problem.is_some();
        merged = Some(scan);
        if stop {
            break;
        }
    }
    Ok(merged.map(|mut scan| {
        // The frontier at the checkpoint is where the scan started.
        scan.snapshot = Some(frontier);
        (number, scan)
    }))
}

/// The drone's own last checkpoint (`DIR/checkpoint`), parsed without a key check: the
/// writer only uses it as the base of its next consistency proof, after comparing roots.
fn read_own_checkpoint(dir: &Path) -> Option<Checkpoint> {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
    let body = text.split("\n\n").next()?;
    Checkpoint::parse_text(&format!("{body}\n")).ok()
}

/// Replaces a file's contents via a temporary file and a rename.
/// The temporary file is synced before the rename (a power cut leaves the old contents or
/// the new, never an empty file) and removed when it cannot be written whole (a full disk
/// keeps no half file).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_data()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Makes a created file's directory entry durable (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
