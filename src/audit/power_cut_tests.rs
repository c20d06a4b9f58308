//! Power cuts and full disks, in process (issue 21).
//!
//! The model of a power cut: under `fsync = "always"` a record is acknowledged only once its
//! group's `fdatasync` returned, so a cut can lose only what was written after the last
//! commit, and the disk keeps some prefix of it. Every prefix is tried: the newest file cut at
//! every byte offset from the end of the last acknowledged record to the end of the records
//! in flight (a superset of what a disk with 512-byte or 4 KiB sectors can leave). The small
//! state files (`checkpoint`, `checkpoint.state`) are replaced by a synced temporary file and a
//! rename, so a cut leaves the old or the new one; they are cut at every offset too, as a
//! file system that does not order the data before the rename would leave them.
//!
//! For each cut: the log verifies (a cut inside a record is reported as exactly that torn
//! tail, a note, never damage), the writer opens it, every acknowledged record is there, and
//! a record written after the restart verifies with the torn bytes kept as evidence.

use super::*;
use crate::audit::log::{Item, LogWriter, Severity, TAIL_STATE_FILE, WriterOptions, list_files};

fn options(dir: &Path) -> WriterOptions {
    WriterOptions {
        dir: dir.to_owned(),
        file_bytes_max: 1 << 20,
        // The acknowledgement points are the `append`/`commit` calls; what a cut keeps is
        // made by hand below, so no test waits for the disk.
        fsync: FsyncPolicy::Never,
        fsync_interval: Duration::ZERO,
        key: Some(
            checkpoint::AuditKey::new(
                ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
                "test.example/drone/audit",
            )
            .unwrap(),
        ),
        retention_bytes_max: u64::MAX,
        retention_age_max: None,
    }
}

/// A temporary directory in memory when the machine has one (`/dev/shm`): the checkpoints
/// sync, and hundreds of cuts should not wait for a disk.
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn notice(i: u64) -> Event {
    Event::Notice {
        kind: "call".into(),
        detail: format!("acknowledged call {i}"),
    }
}

const ACKNOWLEDGED: u64 = 12;

/// A log of [`ACKNOWLEDGED`] committed records (a checkpoint after the first half), then a
/// group of three written but not yet committed (in flight when the power goes). Returns the
/// newest file, where its acknowledged part ends, and the record boundaries after it.
fn log_with_records_in_flight(dir: &Path) -> (PathBuf, u64, Vec<u64>) {
    let (mut w, _) = LogWriter::open(options(dir)).unwrap();
    for i in 0..ACKNOWLEDGED {
        w.append(i, notice(i)).unwrap();
        if i == ACKNOWLEDGED / 2 {
            w.checkpoint().unwrap().unwrap();
        }
    }
    let path = list_files(dir).unwrap().last().unwrap().1.clone();
    let acknowledged_end = std::fs::metadata(&path).unwrap().len();
    let mut boundaries = vec![acknowledged_end];
    for i in 0..3 {
        w.write(100 + i, notice(100 + i)).unwrap();
        boundaries.push(std::fs::metadata(&path).unwrap().len());
    }
    // No commit: the process dies here (the writer is dropped without a stop record).
    drop(w);
    (path, acknowledged_end, boundaries)
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn cut(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// Walks the log: the report and the details of the records read.
fn read_back(dir: &Path) -> (log::Report, Vec<String>) {
    let mut details = Vec::new();
    let report = log::walk(dir, &[], &mut |item| {
        if let Item::Record { record, .. } = item
            && let Event::Notice { detail, .. } = &record.event
        {
            details.push(detail.clone());
        }
    })
    .unwrap();
    (report, details)
}

/// What every cut must leave: no damage, every acknowledged record, and a writer that opens,
/// continues and verifies.
fn check_after_cut(dir: &Path, what: &str, torn_at: Option<u64>) {
    let (report, details) = read_back(dir);
    assert!(
        report.worst() < Some(Severity::Damaged),
        "{what}: {:?}",
        report.findings
    );
    assert_eq!(
        report.torn_tail.map(|(_, at)| at),
        torn_at,
        "{what}: the torn tail is reported where it is"
    );
    for i in 0..ACKNOWLEDGED {
        let want = format!("acknowledged call {i}");
        assert!(details.contains(&want), "{what}: {want} lost");
    }
    let (mut w, recovery) = LogWriter::open(options(dir)).unwrap();
    assert!(recovery.damaged.is_none(), "{what}: {recovery}");
    assert_eq!(
        recovery.torn.is_some(),
        torn_at.is_some(),
        "{what}: {recovery}"
    );
    assert!(recovery.unclean_stop, "{what}: {recovery}");
    w.append(999, notice(999)).unwrap();
    w.checkpoint().unwrap().unwrap();
    drop(w);
    match verify_command(dir, &VerifyOptions::default()) {
        Ok(lines) => assert!(
            torn_at.is_none() || lines.join("\n").contains("torn record"),
            "{what}: {lines:?}"
        ),
        Err(lines) => panic!("{what}: {lines:?}"),
    }
    let (_, details) = read_back(dir);
    assert!(
        details.iter().any(|d| d == "acknowledged call 999"),
        "{what}"
    );
}

#[test]
fn a_power_cut_at_every_byte_of_the_records_in_flight_loses_nothing_acknowledged() {
    let template = tempdir();
    let (path, acknowledged_end, boundaries) = log_with_records_in_flight(template.path());
    let name = path.file_name().unwrap().to_owned();
    let end = *boundaries.last().unwrap();
    let mut cuts = 0;
    for offset in acknowledged_end..=end {
        let dir = tempdir();
        copy_dir(template.path(), dir.path());
        cut(&dir.path().join(&name), offset);
        // Inside a record: torn at the boundary before it.
        let torn_at = (!boundaries.contains(&offset))
            .then(|| boundaries.iter().copied().filter(|&b| b < offset).max())
            .flatten();
        check_after_cut(dir.path(), &format!("cut at byte {offset}"), torn_at);
        cuts += 1;
    }
    assert!(cuts > 100, "{cuts} cuts");
}

#[test]
fn a_power_cut_inside_the_checkpoint_or_its_tail_state_loses_nothing() {
    let template = tempdir();
    let (_, _, boundaries) = log_with_records_in_flight(template.path());
    // The records in flight stay whole here: only the state file is cut.
    let _ = boundaries;
    for file in [log::CHECKPOINT_FILE, TAIL_STATE_FILE] {
        let len = std::fs::metadata(template.path().join(file)).unwrap().len();
        for offset in 0..len {
            let dir = tempdir();
            copy_dir(template.path(), dir.path());
            cut(&dir.path().join(file), offset);
            check_after_cut(dir.path(), &format!("{file} cut at byte {offset}"), None);
        }
    }
}

#[test]
fn a_temporary_file_left_by_a_cut_is_ignored_and_replaced() {
    let dir = tempdir();
    log_with_records_in_flight(dir.path());
    // A cut between writing the temporary file and the rename: half a note beside the whole.
    let whole = std::fs::read(dir.path().join(log::CHECKPOINT_FILE)).unwrap();
    std::fs::write(dir.path().join("checkpoint.tmp"), &whole[..whole.len() / 2]).unwrap();
    check_after_cut(dir.path(), "checkpoint.tmp left", None);
    assert!(
        !dir.path().join("checkpoint.tmp").exists(),
        "the next checkpoint replaced it"
    );
}
