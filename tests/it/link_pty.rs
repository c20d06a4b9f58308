//! The link over a serial line: a pty pair made by socat stands in for the cable, so a
//! test can inject noise and pull the cable (kill socat) without hardware.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use flight_companion::link::MavMessage;
use flight_companion::link::dialect::*;
use flight_companion::link::frame::{FrameDecoder, FrameEncoder};
use flight_companion::link::transport::{Link, SendError};
use tokio_util::sync::CancellationToken;

use crate::link_net::{
    EVENT_TIMEOUT, expect_connected, expect_disconnected, expect_frame, heartbeat, options,
};
use crate::support::Proc;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("fc-link-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// socat joining two ptys, reachable at the stable names `DIR/a` and `DIR/b`.
pub(crate) fn start_socat(dir: &Path) -> Proc {
    for name in ["a", "b"] {
        // A name left by an earlier socat would make this one fail.
        let _ = std::fs::remove_file(dir.join(name));
    }
    let mut command = Command::new("socat");
    command.args([
        "-d".to_string(),
        "-d".to_string(),
        format!("pty,raw,echo=0,link={}", dir.join("a").display()),
        format!("pty,raw,echo=0,link={}", dir.join("b").display()),
    ]);
    let mut socat = Proc::spawn("socat", command);
    socat.wait_for_line("starting data transfer loop", EVENT_TIMEOUT);
    socat
}

fn stop_socat(mut socat: Proc) {
    socat.signal("TERM");
    socat.wait_exit(EVENT_TIMEOUT);
}

/// The far end of the cable, opened for writing.
fn far_end(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("b"))
        .expect("open the far end of the pty pair")
}

fn statustext(text: &str) -> MavMessage {
    MavMessage::STATUSTEXT(STATUSTEXT_DATA {
        severity: MavSeverity::MAV_SEVERITY_INFO,
        text: text.into(),
        ..Default::default()
    })
}

/// What the link must count after `stream`, from an independent pass of the decoder
/// over the same bytes.
fn offline_counters(stream: &[u8]) -> flight_companion::link::frame::FrameCounters {
    let mut decoder = FrameDecoder::new();
    decoder.push(stream);
    while decoder.poll().is_some() {}
    decoder.counters()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_pty_counts_garbage_and_survives_a_pulled_cable() {
    let dir = TempDir::new("pty");
    let socat = start_socat(&dir.0);
    let shutdown = CancellationToken::new();
    let endpoint = format!("serial:{}:57600", dir.0.join("a").display());
    let (link, mut events) = Link::open(&endpoint.parse().unwrap(), options(), shutdown.clone())
        .await
        .unwrap();
    expect_connected(&mut events).await;

    // Frames with boot chatter and line noise between them; no start marker in the noise,
    // so every noise byte must be counted as garbage.
    let mut autopilot = FrameEncoder::new(1, 1);
    let noise: [&[u8]; 4] = [
        b"U-Boot 2024.01\r\n",
        b"\x00\x00\xff\x13",
        b"",
        b"ArduCopter V4.5.7\r\n",
    ];
    let mut stream = Vec::new();
    let mut sent = Vec::new();
    for (i, chunk) in noise.iter().enumerate() {
        stream.extend_from_slice(chunk);
        let message = statustext(&format!("frame {i}"));
        stream.extend(autopilot.encode(&message));
        sent.push(message);
    }
    // A frame with one flipped payload bit: a CRC error, and the frame after it survives.
    let mut corrupt = autopilot.encode(&heartbeat(1));
    corrupt[12] ^= 0x04;
    stream.extend_from_slice(&corrupt);
    stream.extend(autopilot.encode(&heartbeat(2)));
    sent.push(heartbeat(2));

    let mut cable = far_end(&dir.0);
    cable.write_all(&stream).unwrap();
    for expected in &sent {
        assert_eq!(&expect_frame(&mut events).await.1, expected);
    }
    let (counters, reconnects) = link.counters();
    let noise_len: usize = noise.iter().map(|c| c.len()).sum();
    assert_eq!(counters.frames, sent.len() as u64);
    assert_eq!(counters.crc_errors, 1);
    // All the noise plus at least the corrupt frame's start byte.
    assert!(counters.garbage_bytes > noise_len as u64, "{counters:?}");
    assert_eq!(counters, offline_counters(&stream));
    assert_eq!(reconnects, 0);

    // Pull the cable.
    drop(cable);
    stop_socat(socat);
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("serial"), "{reason}");
    assert_eq!(link.send(&heartbeat(0)), Err(SendError::NotConnected));

    // Plug it back in: the same names come back and the link reopens by itself.
    let socat = start_socat(&dir.0);
    expect_connected(&mut events).await;
    let mut cable = far_end(&dir.0);
    cable.write_all(&autopilot.encode(&heartbeat(3))).unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(3));
    assert_eq!(link.counters().1, 1, "one reconnect");

    // And the other direction: what the daemon sends comes out of the far end.
    link.send(&heartbeat(42)).unwrap();
    let (tx, rx) = std_mpsc::channel();
    let mut reader = cable.try_clone().unwrap();
    // A plain thread: a blocking pty read cannot be cancelled, and a leaked thread must
    // not hold up the runtime's shutdown if the assertion below fails.
    std::thread::spawn(move || {
        let mut decoder = FrameDecoder::new();
        let mut buf = [0u8; 256];
        while let Ok(len) = reader.read(&mut buf) {
            if len == 0 {
                break;
            }
            decoder.push(&buf[..len]);
            if let Some(Ok(frame)) = decoder.poll() {
                let _ = tx.send(frame);
                break;
            }
        }
    });
    let frame = rx
        .recv_timeout(EVENT_TIMEOUT)
        .expect("nothing came out of the far end");
    assert_eq!(frame.message, heartbeat(42));
    assert_eq!(
        (frame.header.system_id, frame.header.component_id),
        (1, 191)
    );

    shutdown.cancel();
    drop(cable);
    stop_socat(socat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_pty_waits_for_a_device_that_is_not_there_yet() {
    let dir = TempDir::new("pty-late");
    let shutdown = CancellationToken::new();
    let endpoint = format!("serial:{}:57600", dir.0.join("a").display());
    // The adapter is not plugged in: opening still succeeds, the link reports it down.
    let (link, mut events) = Link::open(&endpoint.parse().unwrap(), options(), shutdown.clone())
        .await
        .unwrap();
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("cannot open serial"), "{reason}");
    assert_eq!(link.send(&heartbeat(0)), Err(SendError::NotConnected));

    // Plugged in later: the retries (one Disconnected, not one per attempt) find it.
    let socat = start_socat(&dir.0);
    expect_connected(&mut events).await;
    assert_eq!(
        link.counters().1,
        0,
        "a first connection is not a reconnect"
    );
    let mut cable = far_end(&dir.0);
    cable
        .write_all(&FrameEncoder::new(1, 1).encode(&heartbeat(8)))
        .unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(8));

    shutdown.cancel();
    drop(cable);
    stop_socat(socat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_pty_counts_malformed_truncated_and_unknown_frames() {
    let dir = TempDir::new("pty-bad");
    let socat = start_socat(&dir.0);
    let shutdown = CancellationToken::new();
    let endpoint = format!("serial:{}:115200", dir.0.join("a").display());
    let (link, mut events) = Link::open(&endpoint.parse().unwrap(), options(), shutdown.clone())
        .await
        .unwrap();
    expect_connected(&mut events).await;

    let mut autopilot = FrameEncoder::new(1, 1);
    let mut stream = Vec::new();
    // A truncated frame: the next frame's bytes land in its checksum span.
    let truncated = autopilot.encode(&statustext("cut short"));
    stream.extend_from_slice(&truncated[..truncated.len() / 2]);
    stream.extend(autopilot.encode(&heartbeat(1)));
    // An unknown message id (0x0ABCDE is in no dialect) with a plausible header.
    stream.extend_from_slice(&[
        0xFD, 2, 0, 0, 9, 1, 1, 0xDE, 0xBC, 0x0A, 0x55, 0x66, 0x12, 0x34,
    ]);
    stream.extend(autopilot.encode(&heartbeat(2)));
    // An unknown incompatibility flag.
    let mut flagged = autopilot.encode(&heartbeat(99));
    flagged[2] = 0x80;
    stream.extend_from_slice(&flagged);
    stream.extend(autopilot.encode(&heartbeat(3)));
    // A header claiming the maximum length, then silence from it: the sentinel frames
    // after it must still come out once enough bytes have arrived.
    stream.extend_from_slice(&[0xFD, 255, 0, 0, 0, 1, 1, 0, 0, 0]);
    stream.extend(autopilot.encode(&heartbeat(4)));
    stream.extend(std::iter::repeat_n(0u8, 300));
    stream.extend(autopilot.encode(&heartbeat(5)));

    let mut cable = far_end(&dir.0);
    cable.write_all(&stream).unwrap();
    for mode in 1..=5 {
        assert_eq!(expect_frame(&mut events).await.1, heartbeat(mode));
    }
    let (counters, _) = link.counters();
    assert_eq!(counters.frames, 5);
    assert!(
        counters.crc_errors >= 2,
        "truncated and over-long: {counters:?}"
    );
    assert!(counters.unknown_messages >= 1, "{counters:?}");
    assert!(counters.parse_errors >= 1, "{counters:?}");
    assert_eq!(counters, offline_counters(&stream));
    assert!(link.is_connected(), "noise must not bring the link down");

    shutdown.cancel();
    drop(cable);
    stop_socat(socat);
}
