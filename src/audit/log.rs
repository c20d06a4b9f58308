//! The log on disk: numbered files in one directory, recovery, appending, verification.
//!
//! Files are `audit-00000001.log`, `audit-00000002.log`... A file is closed when it passes
//! the size limit and the next record goes to the next number; the chain continues.
//! Blocking file IO: used from the writer thread and the CLI, never from a decision loop.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::record::{self, Event, FrameError, Record};

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// `fdatasync` after every record: survives power loss, costs a flash write per call.
    Always,
    /// At most every `fsync_interval_ms`: a power cut can lose that much; kill -9 loses nothing.
    Interval,
    /// Leave it to the kernel: a power cut can lose ~30 s; kill -9 loses nothing.
    Never,
}

fn file_name(n: u32) -> String {
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
            .and_then(|d| d.parse::<u32>().ok())
        {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// One problem found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub file: PathBuf,
    pub offset: u64,
    /// The sequence number the record should have.
    pub seq: u64,
    pub reason: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record #{} ({} at byte {}): {}",
            self.seq,
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

/// What a walk through the log found.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    pub records: Vec<Record>,
    pub files: usize,
    /// The hash and next sequence number after the last good record.
    pub last_hash: [u8; 32],
    pub next_seq: u64,
    /// The first record that is not what it should be.
    pub first_bad: Option<BadRecord>,
    /// Bytes at the end of the last file that end inside a record (a torn write).
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Reads the whole log and checks frames, sequence numbers and the hash chain.
/// `keep` says whether to keep the records (tail) or only check them (verify, recovery).
pub fn walk(dir: &Path, keep: bool) -> std::io::Result<Walk> {
    let files = list_files(dir)?;
    let mut walk = Walk {
        files: files.len(),
        ..Walk::default()
    };
    let last_index = files.len().saturating_sub(1);
    for (i, (_, path)) in files.iter().enumerate() {
        let bytes = std::fs::read(path)?;
        let mut offset = 0usize;
        while offset < bytes.len() {
            let rest = bytes.get(offset..).unwrap_or_default();
            let bad = |reason: String, seq: u64| BadRecord {
                file: path.clone(),
                offset: offset as u64,
                seq,
                reason,
            };
            match record::decode(rest) {
                Ok((rec, hash, used)) => {
                    if rec.seq != walk.next_seq {
                        walk.first_bad = Some(bad(
                            format!(
                                "sequence number {} where {} was expected (a record is missing or was moved)",
                                rec.seq, walk.next_seq
                            ),
                            walk.next_seq,
                        ));
                        return Ok(walk);
                    }
                    if rec.prev != walk.last_hash {
                        walk.first_bad = Some(bad(
                            "its `prev` hash does not match the record before it (the chain is broken)".into(),
                            walk.next_seq,
                        ));
                        return Ok(walk);
                    }
                    walk.last_hash = hash;
                    walk.next_seq += 1;
                    if keep {
                        walk.records.push(rec);
                    }
                    offset += used;
                }
                Err(FrameError::Truncated) if i == last_index => {
                    walk.torn_tail = Some((path.clone(), offset as u64));
                    return Ok(walk);
                }
                Err(e) => {
                    walk.first_bad = Some(bad(e.to_string(), walk.next_seq));
                    return Ok(walk);
                }
            }
        }
    }
    Ok(walk)
}

/// How the log was found on start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    /// Bytes of a torn last record that were cut off.
    pub truncated_bytes: u64,
    /// A record that failed verification (kept as evidence; the log continues in a new file).
    pub damaged: Option<String>,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} records", self.records)?;
        if self.truncated_bytes > 0 {
            write!(f, ", torn tail of {} bytes truncated", self.truncated_bytes)?;
        }
        if let Some(d) = &self.damaged {
            write!(f, ", DAMAGED: {d}")?;
        }
        Ok(())
    }
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
    last_hash: [u8; 32],
    next_seq: u64,
}

impl LogWriter {
    /// Opens (creating) the log in `dir`: verifies it, cuts a torn tail, continues the chain.
    pub fn open(
        dir: &Path,
        file_bytes_max: u64,
        fsync: FsyncPolicy,
        fsync_interval: Duration,
    ) -> std::io::Result<(LogWriter, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let walk = walk(dir, false)?;
        let files = list_files(dir)?;
        let mut recovery = Recovery {
            records: walk.next_seq,
            truncated_bytes: 0,
            damaged: None,
        };
        let (mut number, mut path) = files.last().cloned().unwrap_or((1, dir.join(file_name(1))));
        if let Some((torn, offset)) = &walk.torn_tail {
            let file = OpenOptions::new().write(true).open(torn)?;
            let len = file.metadata()?.len();
            file.set_len(*offset)?;
            file.sync_all()?;
            recovery.truncated_bytes = len.saturating_sub(*offset);
        }
        if let Some(bad) = &walk.first_bad {
            // Never destroy evidence: start a new file after the damaged one.
            recovery.damaged = Some(bad.to_string());
            number += 1;
            path = dir.join(file_name(number));
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let file_bytes = file.metadata()?.len();
        sync_dir(dir);
        Ok((
            LogWriter {
                dir: dir.to_owned(),
                file,
                file_number: number,
                file_bytes,
                file_bytes_max: file_bytes_max.max(1024),
                fsync,
                fsync_interval,
                last_sync: Instant::now(),
                unsynced: false,
                last_hash: walk.last_hash,
                next_seq: walk.next_seq,
            },
            recovery,
        ))
    }

    /// Appends one record (one `write` of the whole frame); returns its sequence number.
    pub fn append(&mut self, time_unix_ms: u64, event: Event) -> std::io::Result<u64> {
        if self.file_bytes >= self.file_bytes_max {
            self.rotate()?;
        }
        let record = Record {
            seq: self.next_seq,
            time_unix_ms,
            prev: self.last_hash,
            event,
        };
        let (frame, hash) = record::encode(&record).map_err(std::io::Error::other)?;
        self.file.write_all(&frame)?;
        self.file_bytes += frame.len() as u64;
        self.last_hash = hash;
        self.next_seq += 1;
        self.unsynced = true;
        match self.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval if self.last_sync.elapsed() >= self.fsync_interval => {
                self.sync()?
            }
            _ => {}
        }
        Ok(record.seq)
    }

    /// Forces what was written to stable storage (on the interval and at shutdown).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        self.file_number += 1;
        let path = self.dir.join(file_name(self.file_number));
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.file_bytes = 0;
        sync_dir(&self.dir);
        Ok(())
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// Makes a created file's directory entry durable (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(i: u64) -> Event {
        Event::Notice {
            kind: "test".into(),
            detail: format!("n{i}"),
        }
    }

    #[test]
    fn chain_survives_rotation_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, rec) =
            LogWriter::open(dir.path(), 1024, FsyncPolicy::Never, Duration::ZERO).unwrap();
        assert_eq!(rec.records, 0);
        for i in 0..100 {
            assert_eq!(w.append(i, notice(i)).unwrap(), i);
        }
        drop(w);
        let files = list_files(dir.path()).unwrap();
        assert!(files.len() > 2, "rotated: {files:?}");
        // A torn write at the end of the last file.
        let last = &files.last().unwrap().1;
        let mut f = OpenOptions::new().append(true).open(last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let walked = walk(dir.path(), true).unwrap();
        assert!(walked.first_bad.is_none());
        assert!(walked.torn_tail.is_some());
        let (mut w, rec) =
            LogWriter::open(dir.path(), 1024, FsyncPolicy::Always, Duration::ZERO).unwrap();
        assert_eq!(rec.records, 100);
        assert_eq!(rec.truncated_bytes, 7);
        assert_eq!(w.append(100, notice(100)).unwrap(), 100);
        drop(w);
        let walked = walk(dir.path(), true).unwrap();
        assert!(walked.first_bad.is_none() && walked.torn_tail.is_none());
        assert_eq!(walked.records.len(), 101);
    }

    #[test]
    fn a_flipped_byte_or_a_removed_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) =
            LogWriter::open(dir.path(), 1 << 20, FsyncPolicy::Never, Duration::ZERO).unwrap();
        let mut offsets = Vec::new();
        for i in 0..20 {
            offsets.push(w.file_bytes);
            w.append(i, notice(i)).unwrap();
        }
        drop(w);
        let path = list_files(dir.path()).unwrap()[0].1.clone();
        let clean = std::fs::read(&path).unwrap();
        // Flip a byte inside record 7's payload.
        let mut bytes = clean.clone();
        bytes[offsets[7] as usize + 6] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let bad = walk(dir.path(), false).unwrap().first_bad.unwrap();
        assert_eq!(bad.seq, 7, "{bad}");
        assert_eq!(bad.offset, offsets[7]);
        // Remove record 7 entirely: record 8 is named.
        let mut bytes = clean[..offsets[7] as usize].to_vec();
        bytes.extend_from_slice(&clean[offsets[8] as usize..]);
        std::fs::write(&path, &bytes).unwrap();
        let bad = walk(dir.path(), false).unwrap().first_bad.unwrap();
        assert_eq!(bad.seq, 7, "{bad}");
        assert!(bad.reason.contains("sequence"), "{bad}");
        // Damage is kept and the writer continues in a new file.
        let (mut w, rec) =
            LogWriter::open(dir.path(), 1 << 20, FsyncPolicy::Never, Duration::ZERO).unwrap();
        assert!(rec.damaged.is_some());
        w.append(0, notice(0)).unwrap();
        assert_eq!(list_files(dir.path()).unwrap().len(), 2);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
