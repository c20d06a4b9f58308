//! The writer, the verifier and the tampering table (issue 15).

use super::*;
use crate::audit::log::{Anchor, LogWriter, Severity, WriterOptions, list_files};

fn notice(i: u64) -> Event {
    Event::Notice {
        kind: "test".into(),
        detail: format!("n{i}"),
    }
}

fn key() -> checkpoint::AuditKey {
    checkpoint::AuditKey::new(
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
        "test.example/drone/audit",
    )
    .unwrap()
}

fn options(dir: &Path, file_bytes_max: u64) -> WriterOptions {
    WriterOptions {
        dir: dir.to_owned(),
        file_bytes_max,
        fsync: FsyncPolicy::Never,
        fsync_interval: Duration::ZERO,
        key: Some(key()),
        retention_bytes_max: u64::MAX,
        retention_age_max: None,
    }
}

/// A log of `n` records in files of about `file_bytes_max`, closed with a checkpoint; the
/// checkpoint's note.
fn write_log(dir: &Path, n: u64, file_bytes_max: u64) -> String {
    let (mut w, _) = LogWriter::open(options(dir, file_bytes_max)).unwrap();
    for i in 0..n {
        w.append(i, notice(i)).unwrap();
    }
    let signed = w.checkpoint().unwrap().unwrap();
    signed.note
}

fn verify(dir: &Path, note: Option<&str>) -> (bool, String) {
    let mut options = VerifyOptions::default();
    let holder = tempfile::tempdir().unwrap();
    if let Some(note) = note {
        let path = holder.path().join("checkpoint.note");
        std::fs::write(&path, note).unwrap();
        options.checkpoints.push(path);
        let keys = holder.path().join("keys");
        std::fs::write(&keys, key().verifier_key()).unwrap();
        options.keys.push(keys);
    }
    match verify_command(dir, &options) {
        Ok(lines) => (true, lines.join("\n")),
        Err(lines) => (false, lines.join("\n")),
    }
}

/// Every record's (file, offset, length) in order.
fn frames(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    let mut out = Vec::new();
    for (_, path) in list_files(dir).unwrap() {
        let bytes = std::fs::read(&path).unwrap();
        let mut offset = 0;
        while offset < bytes.len() {
            let (_, _, used) = record::decode(&bytes[offset..]).unwrap();
            out.push((path.clone(), offset as u64, used as u64));
            offset += used;
        }
    }
    out
}

fn cut(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// Rewrites the whole log with record `target` edited, recomputing every checksum, `prev`
/// hash and segment frontier: what someone with the drone's files and this code can do.
fn rechain_with_edit(dir: &Path, target: u64) {
    let files = list_files(dir).unwrap();
    let mut last_hash = [0u8; 32];
    let mut frontier = merkle::Frontier::new();
    for (_, path) in files {
        let bytes = std::fs::read(&path).unwrap();
        let mut offset = 0;
        let mut out = Vec::new();
        while offset < bytes.len() {
            let (mut rec, _, used) = record::decode(&bytes[offset..]).unwrap();
            offset += used;
            rec.prev = last_hash;
            if rec.seq == target {
                rec.event = Event::Notice {
                    kind: "test".into(),
                    detail: "nothing happened here".into(),
                };
            }
            if let Event::Segment(seg) = &mut rec.event {
                seg.frontier = frontier.nodes().to_vec();
            }
            let (frame, hash, leaf) = record::encode_with_leaf(&rec).unwrap();
            out.extend_from_slice(&frame);
            last_hash = hash;
            frontier.push(leaf);
        }
        std::fs::write(&path, out).unwrap();
    }
}

/// The tampering table of issue 15: each case against `verify` without and with the
/// checkpoint the drone signed at the end, with the verdict expected.
#[derive(Clone, Copy, Debug)]
enum Case {
    FlipOneByte,
    DeleteLastRecord,
    DeleteLastTen,
    TruncateNewestMidRecord,
    EditAndRechain,
    DeleteMiddleFile,
    SwapTwoFiles,
    LegitimatePrune,
}

/// (ok without a checkpoint, words it says; ok with the checkpoint, words it says).
fn expected(case: Case) -> (bool, &'static str, bool, &'static str) {
    match case {
        Case::FlipOneByte => (false, "DAMAGED", false, "DAMAGED"),
        Case::DeleteLastRecord => (
            true,
            "NOT PROVEN",
            false,
            "covers records the log no longer has",
        ),
        Case::DeleteLastTen => (
            true,
            "NOT PROVEN",
            false,
            "covers records the log no longer has",
        ),
        Case::TruncateNewestMidRecord => (
            true,
            "only a checkpoint can tell",
            false,
            "ends inside a record",
        ),
        Case::EditAndRechain => (true, "NOT PROVEN", false, "were rewritten"),
        Case::DeleteMiddleFile => (false, "missing", false, "missing"),
        Case::SwapTwoFiles => (false, "swapped", false, "swapped"),
        Case::LegitimatePrune => (true, "removed by retention", true, "anchored"),
    }
}

fn tamper(dir: &Path, case: Case) -> Option<String> {
    let all = frames(dir);
    let files = list_files(dir).unwrap();
    match case {
        Case::FlipOneByte => {
            let (path, offset, len) = &all[all.len() / 2];
            let mut bytes = std::fs::read(path).unwrap();
            bytes[(offset + len / 2) as usize] ^= 0x01;
            std::fs::write(path, bytes).unwrap();
        }
        Case::DeleteLastRecord => {
            let (path, offset, _) = all.last().unwrap();
            cut(path, *offset);
        }
        Case::DeleteLastTen => {
            // The last ten records of the newest file (never its segment header).
            let (path, offset, _) = &all[all.len() - 10];
            assert_eq!(path, &files.last().unwrap().1);
            cut(path, *offset);
        }
        Case::TruncateNewestMidRecord => {
            let (path, offset, len) = all.last().unwrap();
            cut(path, offset + len / 2);
        }
        Case::EditAndRechain => rechain_with_edit(dir, all.len() as u64 / 3),
        Case::DeleteMiddleFile => std::fs::remove_file(&files[files.len() / 2].1).unwrap(),
        Case::SwapTwoFiles => {
            let (a, b) = (&files[1].1, &files[2].1);
            let tmp = dir.join("swap");
            std::fs::rename(a, &tmp).unwrap();
            std::fs::rename(b, a).unwrap();
            std::fs::rename(&tmp, b).unwrap();
        }
        Case::LegitimatePrune => {
            // The writer's own retention, with the size limit below what is there.
            let mut o = options(dir, 2048);
            o.retention_bytes_max = 6 * 2048;
            let (mut w, _) = LogWriter::open(o).unwrap();
            w.checkpoint().unwrap();
            let pruned = w.prune(std::time::SystemTime::now()).unwrap().unwrap();
            assert!(!pruned.files.is_empty());
            return Some(w.checkpoint().unwrap().unwrap().note);
        }
    }
    None
}

fn run_case(case: Case) {
    let (ok_plain, says_plain, ok_anchored, says_anchored) = expected(case);
    let dir = tempfile::tempdir().unwrap();
    let note = write_log(dir.path(), 300, 2048);
    assert!(list_files(dir.path()).unwrap().len() >= 6, "rotated");
    let (ok, said) = verify(dir.path(), Some(&note));
    assert!(ok, "{case:?} before tampering: {said}");
    let newer_note = tamper(dir.path(), case);
    let note = newer_note.unwrap_or(note);
    // Without a checkpoint (nor the drone's own: the one who tampers removes it too).
    let _ = std::fs::remove_file(dir.path().join(log::CHECKPOINT_FILE));
    let (ok, said) = verify(dir.path(), None);
    assert_eq!(ok, ok_plain, "{case:?} without a checkpoint: {said}");
    assert!(
        said.contains(says_plain),
        "{case:?} without a checkpoint: {said}"
    );
    let (ok, said) = verify(dir.path(), Some(&note));
    assert_eq!(ok, ok_anchored, "{case:?} with the checkpoint: {said}");
    assert!(
        said.contains(says_anchored),
        "{case:?} with the checkpoint: {said}"
    );
}

#[test]
fn tampering_one_byte_flipped() {
    run_case(Case::FlipOneByte);
}

#[test]
fn tampering_last_record_deleted() {
    run_case(Case::DeleteLastRecord);
}

#[test]
fn tampering_last_ten_records_deleted() {
    run_case(Case::DeleteLastTen);
}

#[test]
fn tampering_newest_file_truncated_mid_record() {
    run_case(Case::TruncateNewestMidRecord);
}

#[test]
fn tampering_record_edited_and_chain_recomputed() {
    run_case(Case::EditAndRechain);
}

#[test]
fn tampering_middle_file_deleted() {
    run_case(Case::DeleteMiddleFile);
}

#[test]
fn tampering_two_files_swapped() {
    run_case(Case::SwapTwoFiles);
}

#[test]
fn tampering_legitimate_prune_still_verifies() {
    run_case(Case::LegitimatePrune);
}

#[test]
fn a_prune_then_deleting_an_unpruned_file_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 300, 2048);
    let mut o = options(dir.path(), 2048);
    o.retention_bytes_max = 8 * 2048;
    let (mut w, _) = LogWriter::open(o).unwrap();
    w.checkpoint().unwrap();
    w.prune(std::time::SystemTime::now()).unwrap().unwrap();
    drop(w);
    assert!(verify(dir.path(), None).0);
    // The oldest file that retention kept is deleted by hand: no retention record covers it.
    let first = list_files(dir.path()).unwrap()[0].1.clone();
    std::fs::remove_file(first).unwrap();
    let (ok, said) = verify(dir.path(), None);
    assert!(!ok && said.contains("no retention record"), "{said}");
}

#[test]
fn resume_reads_only_the_newest_file_and_continues_chain_tree_and_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let mut witness = witness::Witness::new(vec![k.verifier_key()]);
    // Every checkpoint, the rotations' too, goes to the witness in order.
    let mut feed = |signed: log::Signed| {
        let (v, _) = witness.handle(signed.message.as_bytes());
        match v {
            witness::Verdict::Kept { how, .. } => how,
            other => panic!("{other:?}"),
        }
    };
    let (mut w, rec) = LogWriter::open(options(dir.path(), 2048)).unwrap();
    assert_eq!(rec.records, 0, "a new log");
    for i in 0..100 {
        w.append(i, notice(i)).unwrap();
        if let Some(s) = w.take_pending() {
            feed(s);
        }
    }
    feed(w.checkpoint().unwrap().unwrap());
    for i in 100..150 {
        w.append(i, notice(i)).unwrap();
        if let Some(s) = w.take_pending() {
            feed(s);
        }
    }
    let written = w.next_seq();
    drop(w); // no stop record: a crash
    // The older files are moved away while the writer resumes: it reads only the newest.
    let files = list_files(dir.path()).unwrap();
    assert!(files.len() > 3);
    let aside = tempfile::tempdir().unwrap();
    for (_, path) in &files[..files.len() - 1] {
        std::fs::rename(path, aside.path().join(path.file_name().unwrap())).unwrap();
    }
    let (mut w, rec) = LogWriter::open(options(dir.path(), 2048)).unwrap();
    for (_, path) in &files[..files.len() - 1] {
        std::fs::rename(aside.path().join(path.file_name().unwrap()), path).unwrap();
    }
    assert!(rec.unclean_stop, "{rec}");
    assert_eq!(rec.records, written);
    for i in 150..160 {
        w.append(i, notice(i)).unwrap();
        if let Some(s) = w.take_pending() {
            feed(s);
        }
    }
    let second = w.checkpoint().unwrap().unwrap();
    // Its proof starts at the last checkpoint before the crash, and verifies.
    let how = feed(second.clone());
    assert!(how.contains("consistent"), "{how}");
    drop(w);
    let (ok, said) = verify(dir.path(), Some(&second.note));
    assert!(ok && said.contains("anchored"), "{said}");
}

#[test]
fn a_torn_tail_and_damage_are_kept_and_what_follows_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let note = write_log(dir.path(), 50, 1 << 20);
    let path = list_files(dir.path()).unwrap()[0].1.clone();
    // A torn write (power cut) after the checkpoint: a partial frame at the end.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);
    let torn_len = std::fs::metadata(&path).unwrap().len();
    let (mut w, rec) = LogWriter::open(options(dir.path(), 1 << 20)).unwrap();
    assert!(rec.torn.is_some() && rec.damaged.is_none(), "{rec}");
    w.append(99, notice(99)).unwrap();
    let later = w.checkpoint().unwrap().unwrap();
    drop(w);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        torn_len,
        "evidence kept"
    );
    let (ok, said) = verify(dir.path(), Some(&later.note));
    assert!(ok && said.contains("torn record"), "{said}");
    let (ok, said) = verify(dir.path(), Some(&note));
    assert!(ok, "{said}");

    // Damage in the newest file: kept, reported, the log continues in a new file.
    let files = list_files(dir.path()).unwrap();
    let newest = files.last().unwrap().1.clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    let (mut w, rec) = LogWriter::open(options(dir.path(), 1 << 20)).unwrap();
    assert!(rec.damaged.is_some(), "{rec}");
    w.append(100, notice(100)).unwrap();
    drop(w);
    assert_eq!(std::fs::read(&newest).unwrap(), bytes, "evidence kept");
    let tail = tail_command(dir.path(), 10, false).unwrap();
    let text = tail.join("\n");
    assert!(text.contains("!! TAMPERED OR DAMAGED"), "{text}");
    assert!(
        text.contains("n100"),
        "the record after the damage is shown: {text}"
    );
    let (ok, said) = verify(dir.path(), None);
    assert!(!ok && said.contains("verification resumes"), "{said}");
}

#[test]
fn display_escapes_control_and_bidi_characters() {
    assert_eq!(escape("a\nb"), "a\\nb");
    assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
    assert_eq!(escape("\u{2066}\u{1b}[31m"), "\\u{2066}\\u{1b}[31m");
    assert_eq!(escape("plain é"), "plain é");
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = LogWriter::open(options(dir.path(), 1 << 20)).unwrap();
    w.append(
        1,
        Event::Security {
            kind: "bad_token".into(),
            session: "s".into(),
            subject: "mallory\n#9 0 CALL admin\u{202e}".into(),
            detail: "d".into(),
        },
    )
    .unwrap();
    drop(w);
    for line in tail_command(dir.path(), 5, false).unwrap() {
        assert!(!line.chars().any(is_unsafe_char), "{line:?}");
    }
}

#[tokio::test]
async fn writer_acknowledges_checkpoints_and_commands_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        dir: dir.path().to_owned(),
        fsync: FsyncPolicy::Interval,
        fsync_interval: Duration::from_millis(50),
        file_bytes_max: 4096,
        queue_len: 64,
        signing_key: Some(ed25519_dalek::SigningKey::from_bytes(&[5; 32])),
        origin: "test.example/drone/audit".into(),
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_records_max: 20,
        retention_bytes_max: u64::MAX,
        retention_age_max: None,
    };
    let (audit, recovery) = start(&options).unwrap();
    assert_eq!(recovery.records, 0);
    let mut checkpoints = audit.checkpoints();
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
    // A checkpoint after every 20 records (and at the rotations).
    let published = checkpoints.borrow_and_update().clone().unwrap();
    assert!(published.size >= 40, "{}", published.size);
    // `audit://recent`: the last records sent, newest last, as JSON made when read.
    let recent = audit.recent(3);
    assert_eq!(recent.len(), 3);
    let expected = serde_json::to_value(Event::Notice {
        kind: "t".into(),
        detail: "49".into(),
    })
    .unwrap();
    assert_eq!(recent[2]["event"], expected, "{recent:?}");
    let seqs: Vec<u64> = recent.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs[0] < seqs[1] && seqs[1] < seqs[2], "{seqs:?}");
    assert!(recent[2]["time_unix_ms"].as_u64().unwrap() > 0);
    assert!(audit.close(Duration::from_secs(5)).await);
    assert_eq!(audit.status().checkpoint_size, Some(51));
    let own = dir.path().join(log::CHECKPOINT_FILE);
    let note = std::fs::read_to_string(&own).unwrap();
    let (ok, said) = verify(dir.path(), Some(&note));
    assert!(ok && said.contains("51 records"), "{said}");
    let tail = tail_command(dir.path(), 2, true).unwrap();
    assert_eq!(tail.len(), 2);
    let last: Value = serde_json::from_str(&tail[1]).unwrap();
    assert_eq!(last["seq"], 50);
    assert!(verify_command(&dir.path().join("nope"), &VerifyOptions::default()).is_err());
    // A checkpoint the drone's key did not sign is refused.
    let anchors = [Anchor {
        checkpoint: checkpoint::Checkpoint {
            origin: "x".into(),
            size: 3,
            root: [0; 32],
        },
        source: "test".into(),
    }];
    let report = log::walk(dir.path(), &anchors, &mut |_| {}).unwrap();
    assert_eq!(report.worst(), Some(Severity::Tampered));
}

#[test]
fn running_without_an_audit_log_takes_a_danger_setting_and_says_so() {
    let mut config = crate::config::Config::default();
    assert!(
        config.audit.resolved_dir().is_some(),
        "the built-in defaults keep an audit log"
    );
    config.audit.danger_disabled = true;
    assert!(config.audit.resolved_dir().is_none());
    let audit = open(&config).unwrap();
    assert!(!audit.enabled());
    let status = audit.status();
    assert!(!status.enabled);
    assert!(
        status
            .disabled_reason
            .as_deref()
            .is_some_and(|r| r.contains("danger_disabled")),
        "{status:?}"
    );
    // And through the configuration file.
    let parsed =
        crate::config::Config::parse(Path::new("x.toml"), "[audit]\ndanger_disabled = true\n")
            .unwrap();
    assert!(parsed.audit.resolved_dir().is_none());
    let refused = crate::config::Config::parse(Path::new("x.toml"), "[audit]\nenabled = false\n");
    assert!(refused.is_err(), "there is no quiet way to turn it off");
}

#[test]
fn after_a_clean_stop_start_up_reads_only_the_record_the_tail_state_names() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = LogWriter::open(options(dir.path(), 1 << 20)).unwrap();
    for i in 0..500 {
        w.append(i, notice(i)).unwrap();
    }
    w.append(
        500,
        Event::DaemonStop {
            reason: "test".into(),
        },
    )
    .unwrap();
    let signed = w.checkpoint().unwrap().unwrap();
    drop(w);
    // A byte of the first record changes: a start that read the file would find it (the
    // segment-based resume reports it); the tail-state resume reads only the last record.
    let path = list_files(dir.path()).unwrap()[0].1.clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (mut w, rec) = LogWriter::open(options(dir.path(), 1 << 20)).unwrap();
    assert!(
        rec.damaged.is_none() && !rec.unclean_stop && rec.records == 502,
        "{rec}"
    );
    w.append(600, notice(600)).unwrap();
    let next = w.checkpoint().unwrap().unwrap();
    drop(w);
    // Consistent with the checkpoint before (the proof starts there)...
    let mut witness = witness::Witness::new(vec![key().verifier_key()]);
    witness.handle(signed.message.as_bytes());
    let (v, _) = witness.handle(next.message.as_bytes());
    assert!(
        matches!(v, witness::Verdict::Kept { ref how, .. } if how.contains("consistent")),
        "{v:?}"
    );
    // ...and `verify` is where the old damage is found.
    let (ok, said) = verify(dir.path(), Some(&next.note));
    assert!(!ok && said.contains("record #0"), "{said}");
}

/// Queues `n` records with an acknowledgement each, as concurrent tool calls do.
fn queue(
    tx: &std::sync::mpsc::SyncSender<Msg>,
    n: u64,
) -> Vec<tokio::sync::oneshot::Receiver<bool>> {
    (0..n)
        .map(|i| {
            let (ack, rx) = tokio::sync::oneshot::channel();
            tx.send(Msg::Record {
                time_unix_ms: i,
                event: Box::new(notice(i)),
                ack: Some(ack),
            })
            .unwrap();
            rx
        })
        .collect()
}

#[test]
fn queued_records_are_written_as_one_group_and_made_durable_by_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = LogWriter::open(WriterOptions {
        fsync: FsyncPolicy::Always,
        ..options(dir.path(), 1 << 20)
    })
    .unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let mut acks = queue(&tx, 10);
    let mut failed = Failures {
        count: Arc::new(AtomicU64::new(0)),
        last_error: None,
    };
    let syncs = w.syncs();
    let first = rx.recv().unwrap();
    let queued = std::sync::atomic::AtomicUsize::new(10);
    let (group, close) = write_group(&mut w, first, &rx, 1000, &mut failed, &queued);
    assert_eq!(group.len(), 10);
    // The queue's depth for the metrics counts every record taken.
    assert_eq!(queued.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(close.is_none());
    assert!(group.iter().all(|r| r.ok));
    assert_eq!(
        group.iter().map(|r| r.recent.seq).collect::<Vec<_>>(),
        (w.next_seq() - 10..w.next_seq()).collect::<Vec<_>>()
    );
    // Written, not yet synced, and no one is answered before the sync.
    assert_eq!(w.syncs(), syncs);
    assert!(acks.iter_mut().all(|a| a.try_recv().is_err()));
    assert!(commit_group(&mut w, &group, &mut failed));
    assert_eq!(w.syncs(), syncs + 1, "one fdatasync for the ten records");
    assert_eq!(failed.count.load(Ordering::Relaxed), 0);
}

#[test]
fn a_group_stops_at_the_checkpoint_bound_and_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = LogWriter::open(WriterOptions {
        fsync: FsyncPolicy::Always,
        ..options(dir.path(), 1 << 20)
    })
    .unwrap();
    w.checkpoint().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let _acks = queue(&tx, 10);
    let mut failed = Failures {
        count: Arc::new(AtomicU64::new(0)),
        last_error: None,
    };
    // checkpoint_records_max = 4: the group ends when 4 records await a checkpoint.
    let first = rx.recv().unwrap();
    let (group, _) = write_group(
        &mut w,
        first,
        &rx,
        4,
        &mut failed,
        &std::sync::atomic::AtomicUsize::new(0),
    );
    assert_eq!(group.len(), 4);
    assert_eq!(w.unanchored(), 4);
    w.checkpoint().unwrap();
    // A close behind two records ends the group there and is handed back.
    let rest: Vec<Msg> = rx.try_iter().collect();
    assert_eq!(rest.len(), 6);
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let _more = queue(&tx, 2);
    let (close_ack, _close_rx) = tokio::sync::oneshot::channel();
    tx.send(Msg::Close { ack: close_ack }).unwrap();
    let _after = queue(&tx, 1);
    let first = rx.recv().unwrap();
    let (group, close) = write_group(
        &mut w,
        first,
        &rx,
        1000,
        &mut failed,
        &std::sync::atomic::AtomicUsize::new(0),
    );
    assert_eq!(group.len(), 2);
    assert!(close.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acknowledged_records_under_fsync_always_are_all_durable_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (audit, _) = start(&AuditOptions {
        dir: dir.path().to_owned(),
        fsync: FsyncPolicy::Always,
        fsync_interval: Duration::from_millis(1000),
        file_bytes_max: 1 << 20,
        queue_len: 256,
        signing_key: Some(ed25519_dalek::SigningKey::from_bytes(&[5; 32])),
        origin: "test.example/drone/audit".into(),
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_records_max: 1000,
        retention_bytes_max: u64::MAX,
        retention_age_max: None,
    })
    .unwrap();
    let calls: Vec<_> = (0..100u64)
        .map(|i| {
            let audit = audit.clone();
            tokio::spawn(
                async move { audit.record_acked(notice(i), Duration::from_secs(10)).await },
            )
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap());
    }
    assert!(audit.close(Duration::from_secs(5)).await);
    // Every acknowledged record is in the log, each once, and the chain verifies.
    let note = std::fs::read_to_string(dir.path().join(log::CHECKPOINT_FILE)).unwrap();
    let (ok, said) = verify(dir.path(), Some(&note));
    assert!(ok, "{said}");
    let tail = tail_command(dir.path(), 200, true).unwrap();
    let mut details: Vec<u64> = tail
        .iter()
        .filter_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            v.pointer("/event/Notice/detail")?
                .as_str()?
                .strip_prefix('n')?
                .parse()
                .ok()
        })
        .collect();
    details.sort_unstable();
    assert_eq!(details, (0..100).collect::<Vec<_>>(), "{tail:?}");
}
