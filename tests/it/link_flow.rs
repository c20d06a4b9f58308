//! Flow control of the link: a slow owner pushes back on the peer instead of losing
//! frames, and a writer that cannot keep up makes `send` refuse instead of queueing.

use std::time::{Duration, Instant};

use flight_companion::link::frame::{FrameDecoder, FrameEncoder};
use flight_companion::link::transport::{
    EVENT_CHANNEL_CAPACITY, Link, READ_BUFFER_LEN, SEND_CHANNEL_CAPACITY, SendError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::link_net::{EVENT_TIMEOUT, expect_connected, expect_frame, heartbeat, options};

/// Frames the autopilot sends while nobody reads events: several times what the event
/// channel holds (its batches of one read each, about 195 heartbeats a read).
const FRAMES: u32 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_flow_slow_owner_loses_nothing_and_full_writer_refuses_sends() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let (link, mut events) = Link::open(
        &format!("tcpout:{addr}").parse().unwrap(),
        options(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    expect_connected(&mut events).await;

    let mut autopilot = FrameEncoder::new(1, 1);
    let burst: Vec<u8> = (0..FRAMES)
        .flat_map(|i| autopilot.encode(&heartbeat(i)))
        .collect();
    let frame_len = burst.len() / FRAMES as usize;
    let (mut from_link, mut to_link) = server.into_split();
    let writer = tokio::spawn(async move {
        to_link.write_all(&burst).await.unwrap();
        to_link
    });

    // Nobody reads events yet: the link fills the event channel (one batch per read) and
    // then waits with one more batch in hand. It must not read on (and drop) frames
    // meanwhile: the frames decoded stop growing, at most one read per batch it holds.
    let most = (EVENT_CHANNEL_CAPACITY as u64 + 1) * (READ_BUFFER_LEN / frame_len + 1) as u64;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut decoded = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = link.counters().0.frames;
        if now > 0 && now == decoded {
            break;
        }
        decoded = now;
        assert!(
            Instant::now() < deadline,
            "the link never filled its event channel: {:?}",
            link.counters()
        );
    }
    assert!(
        decoded <= most,
        "decoded past a full event channel: {decoded} frames, at most {most}"
    );
    assert!(decoded < u64::from(FRAMES), "nothing pushed back");

    // The IO task is parked on the event channel, so nothing drains the send queue: it
    // takes exactly its capacity, then `send` refuses at once instead of blocking.
    for i in 0..SEND_CHANNEL_CAPACITY as u32 {
        link.send(&heartbeat(10_000 + i)).unwrap();
    }
    assert_eq!(link.send(&heartbeat(0)), Err(SendError::Full));

    // Once the owner reads, every frame arrives, in order.
    for i in 0..FRAMES {
        assert_eq!(expect_frame(&mut events).await.1, heartbeat(i), "frame {i}");
    }
    let (counters, reconnects) = link.counters();
    assert_eq!(counters.frames, u64::from(FRAMES));
    assert_eq!(
        counters.crc_errors + counters.parse_errors + counters.garbage_bytes,
        0
    );
    assert_eq!(reconnects, 0);
    // Keep the write half: dropping it would half-close the stream, which the link
    // rightly takes as the autopilot going away.
    let _to_link = tokio::time::timeout(EVENT_TIMEOUT, writer)
        .await
        .expect("the autopilot's writes never completed")
        .unwrap();

    // The queued sends went out in order with consecutive sequence numbers: the refused
    // send gave its sequence number back, so the autopilot sees no gap.
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    let mut received = Vec::new();
    while received.len() < SEND_CHANNEL_CAPACITY {
        let len = tokio::time::timeout(EVENT_TIMEOUT, from_link.read(&mut buf))
            .await
            .expect("the queued sends did not arrive")
            .unwrap();
        assert!(len > 0, "the link closed the connection");
        decoder.push(&buf[..len]);
        while let Some(item) = decoder.poll() {
            received.push(item.expect("the link sent a broken frame"));
        }
    }
    for (i, frame) in received.iter().enumerate() {
        assert_eq!(frame.message, heartbeat(10_000 + i as u32));
        assert_eq!(usize::from(frame.header.sequence), i);
    }
    link.send(&heartbeat(20_000)).unwrap();
    shutdown.cancel();
}
