//! The link over TCP and UDP on loopback, ephemeral ports only.

use std::net::SocketAddr;
use std::time::Duration;

use flight_companion::link::MavMessage;
use flight_companion::link::dialect::*;
use flight_companion::link::frame::{FrameDecoder, FrameEncoder};
use flight_companion::link::transport::{Link, LinkEvent, LinkEvents, LinkOptions, SendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Generous: the machine is shared with other builds.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// An unpinned link, as the simulator and the test tools open theirs (`udpin` answers the
/// latest sender, `tcpin` serves the newest client); the daemon's pins its peer (below).
pub fn options() -> LinkOptions {
    LinkOptions {
        system_id: 1,
        component_id: 191,
        reconnect_backoff_min: Duration::from_millis(20),
        reconnect_backoff_max: Duration::from_millis(200),
        signing: None,
        peer: flight_companion::link::pin::PeerPolicy::OPEN,
    }
}

pub fn heartbeat(custom_mode: u32) -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode,
        mavtype: MavType::MAV_TYPE_QUADROTOR,
        autopilot: MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
        base_mode: MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
        system_status: MavState::MAV_STATE_STANDBY,
        mavlink_version: 3,
    })
}

pub async fn next_event(events: &mut LinkEvents) -> LinkEvent {
    tokio::time::timeout(EVENT_TIMEOUT, events.recv())
        .await
        .expect("no link event within the timeout")
        .expect("the link's event channel closed")
}

/// The next event, which must be `Connected`; returns the peer.
pub async fn expect_connected(events: &mut LinkEvents) -> String {
    match next_event(events).await {
        LinkEvent::Connected { peer } => peer,
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// The next event, which must be `Disconnected`; returns the reason.
pub async fn expect_disconnected(events: &mut LinkEvents) -> String {
    match next_event(events).await {
        LinkEvent::Disconnected { reason } => reason,
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

/// The next event, which must be a frame; returns (system id, message).
pub async fn expect_frame(events: &mut LinkEvents) -> (u32, MavMessage) {
    match next_event(events).await {
        LinkEvent::Frame { frame, .. } => (frame.header.system_id, frame.message),
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Reads from a stream until one frame decodes.
async fn read_frame(stream: &mut TcpStream) -> (u32, u8, MavMessage) {
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 512];
    loop {
        if let Some(item) = decoder.poll() {
            let frame = item.expect("the link sent a broken frame");
            return (
                frame.header.system_id,
                frame.header.component_id,
                frame.message,
            );
        }
        let len = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut buf))
            .await
            .expect("nothing read from the link")
            .expect("read");
        assert!(len > 0, "the link closed the stream");
        decoder.push(&buf[..len]);
    }
}

async fn recv_frame(socket: &UdpSocket) -> (SocketAddr, MavMessage) {
    let mut buf = [0u8; 512];
    let (len, from) = tokio::time::timeout(EVENT_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("no datagram from the link")
        .expect("recv");
    let mut decoder = FrameDecoder::new();
    decoder.push(&buf[..len]);
    let frame = decoder
        .poll()
        .expect("a whole frame")
        .expect("a valid frame");
    (from, frame.message)
}

#[tokio::test]
async fn link_tcpin_serves_the_newest_client_on_an_ephemeral_port() {
    let shutdown = CancellationToken::new();
    let (link, mut events) = Link::open(
        &"tcpin:127.0.0.1:0".parse().unwrap(),
        options(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = link.local_addr().expect("tcpin has a local address");
    assert_ne!(addr.port(), 0);
    assert_eq!(link.send(&heartbeat(0)), Err(SendError::NotConnected));

    let mut first = TcpStream::connect(addr).await.unwrap();
    let peer = expect_connected(&mut events).await;
    assert_eq!(peer, first.local_addr().unwrap().to_string());
    let mut autopilot = FrameEncoder::new(7, 1);
    first
        .write_all(&autopilot.encode(&heartbeat(3)))
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await, (7, heartbeat(3)));

    link.send(&heartbeat(11)).unwrap();
    assert_eq!(read_frame(&mut first).await, (1, 191, heartbeat(11)));

    // A second client replaces the first, like SITL.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("replaced"), "{reason}");
    expect_connected(&mut events).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(EVENT_TIMEOUT, first.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the old client was not closed"
    );
    second
        .write_all(&autopilot.encode(&heartbeat(4)))
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await, (7, heartbeat(4)));
    link.send(&heartbeat(12)).unwrap();
    assert_eq!(read_frame(&mut second).await.2, heartbeat(12));
    assert_eq!(link.counters().1, 1, "one reconnect");

    shutdown.cancel();
    assert!(
        tokio::time::timeout(EVENT_TIMEOUT, async {
            while events.recv().await.is_some() {}
        })
        .await
        .is_ok(),
        "the event channel did not end after shutdown"
    );
    assert!(!link.is_connected());
}

#[tokio::test]
async fn link_tcpout_reconnects_when_the_listener_is_back() {
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
    let (mut server, _) = listener.accept().await.unwrap();
    assert_eq!(expect_connected(&mut events).await, addr.to_string());
    let mut autopilot = FrameEncoder::new(1, 1);
    server
        .write_all(&autopilot.encode(&heartbeat(1)))
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(1));

    // The autopilot goes away entirely: connection dropped and nothing listening.
    drop(server);
    drop(listener);
    expect_disconnected(&mut events).await;
    assert_eq!(link.send(&heartbeat(0)), Err(SendError::NotConnected));

    // Refused connections are retried in the background; no event per attempt.
    let listener = TcpListener::bind(addr).await.unwrap();
    let (mut server, _) = tokio::time::timeout(EVENT_TIMEOUT, listener.accept())
        .await
        .expect("the link did not reconnect")
        .unwrap();
    assert_eq!(expect_connected(&mut events).await, addr.to_string());
    server
        .write_all(&autopilot.encode(&heartbeat(2)))
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(2));
    link.send(&heartbeat(5)).unwrap();
    assert_eq!(read_frame(&mut server).await.2, heartbeat(5));
    assert_eq!(link.counters().1, 1);
    assert_eq!(link.counters().0.frames, 2);
    shutdown.cancel();
}

#[tokio::test]
async fn link_open_refuses_what_can_never_work() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("tcpin:{}", taken.local_addr().unwrap());
    let error = Link::open(
        &endpoint.parse().unwrap(),
        options(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("cannot listen"), "{error}");

    let error = Link::open(
        &"tcpout:no-such-host.invalid:5760".parse().unwrap(),
        options(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("cannot resolve"), "{error}");
}

#[tokio::test]
async fn link_udpout_survives_a_silent_peer() {
    // A port that was just free: nobody listens, the kernel answers "port unreachable".
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    drop(silent);
    let shutdown = CancellationToken::new();
    let (link, mut events) = Link::open(
        &format!("udpout:127.0.0.1:{port}").parse().unwrap(),
        options(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    expect_connected(&mut events).await;
    for i in 0..20 {
        link.send(&heartbeat(i)).unwrap();
        tokio::task::yield_now().await;
    }
    // The ICMP errors must not have brought the link down: the peer appears and talks.
    let peer = UdpSocket::bind(("127.0.0.1", port)).await.unwrap();
    link.send(&heartbeat(99)).unwrap();
    let (from, message) = recv_frame(&peer).await;
    assert_eq!(message, heartbeat(99));
    assert_eq!(Some(from.port()), link.local_addr().map(|a| a.port()));
    let mut autopilot = FrameEncoder::new(1, 1);
    peer.send_to(&autopilot.encode(&heartbeat(7)), from)
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(7));
    assert!(link.is_connected());
    assert!(
        !events.try_fill(),
        "no disconnect on a silent peer: {:?}",
        events.buffered()
    );
    shutdown.cancel();
}

#[tokio::test]
async fn link_udpin_replies_to_the_latest_sender() {
    let shutdown = CancellationToken::new();
    let (link, mut events) = Link::open(
        &"udpin:127.0.0.1:0".parse().unwrap(),
        options(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = link.local_addr().unwrap();
    assert_eq!(
        link.send(&heartbeat(0)),
        Err(SendError::NotConnected),
        "nobody to send to yet"
    );

    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut autopilot = FrameEncoder::new(1, 1);
    first
        .send_to(&autopilot.encode(&heartbeat(1)), addr)
        .await
        .unwrap();
    assert_eq!(
        expect_connected(&mut events).await,
        first.local_addr().unwrap().to_string()
    );
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(1));
    link.send(&heartbeat(21)).unwrap();
    assert_eq!(recv_frame(&first).await, (addr, heartbeat(21)));

    let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    second
        .send_to(&autopilot.encode(&heartbeat(2)), addr)
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(2));
    link.send(&heartbeat(22)).unwrap();
    assert_eq!(recv_frame(&second).await, (addr, heartbeat(22)));
    shutdown.cancel();
}

/// The daemon's way: the first autopilot is pinned; silence for `release_ms` frees the pin.
fn pinned_options(release_ms: u64) -> LinkOptions {
    LinkOptions {
        peer: flight_companion::link::pin::PeerPolicy {
            rule: flight_companion::link::pin::PinRule::FirstAutopilot,
            release_after: Duration::from_millis(release_ms),
        },
        ..options()
    }
}

fn gcs_heartbeat() -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        mavtype: MavType::MAV_TYPE_GCS,
        autopilot: MavAutopilot::MAV_AUTOPILOT_INVALID,
        ..Default::default()
    })
}

async fn expect_refused(events: &mut LinkEvents) -> flight_companion::link::trust::LinkRefusal {
    match next_event(events).await {
        LinkEvent::Refused(refusal) => refusal,
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn link_udpin_pins_the_first_autopilot_and_repins_only_after_its_silence() {
    let shutdown = CancellationToken::new();
    let (link, mut events) = Link::open(
        &"udpin:127.0.0.1:0".parse().unwrap(),
        pinned_options(400),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = link.local_addr().unwrap();
    let autopilot = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let intruder = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut ap = FrameEncoder::new(1, 1);
    let mut fake = FrameEncoder::new(1, 1);

    // A ground station's heartbeat pins nothing: no peer to send to yet.
    intruder
        .send_to(&fake.encode(&gcs_heartbeat()), addr)
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await.1, gcs_heartbeat());
    assert_eq!(link.send(&heartbeat(0)), Err(SendError::NotConnected));

    // The autopilot's heartbeat pins it: the link comes up before its frame is delivered.
    autopilot
        .send_to(&ap.encode(&heartbeat(1)), addr)
        .await
        .unwrap();
    assert_eq!(
        expect_connected(&mut events).await,
        autopilot.local_addr().unwrap().to_string()
    );
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(1));

    // The same ids from another machine: refused, reported once, counted every time.
    for mode in [9, 9, 9] {
        intruder
            .send_to(&fake.encode(&heartbeat(mode)), addr)
            .await
            .unwrap();
    }
    let refusal = expect_refused(&mut events).await;
    assert_eq!(refusal.reason.as_str(), "foreign_peer");
    assert_eq!(
        refusal.peer,
        Some(intruder.local_addr().unwrap().to_string())
    );
    autopilot
        .send_to(&ap.encode(&heartbeat(2)), addr)
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(2));
    assert_eq!(link.counters().0.trust.foreign_peer, 3);
    // Only the autopilot hears the daemon.
    link.send(&heartbeat(21)).unwrap();
    assert_eq!(recv_frame(&autopilot).await, (addr, heartbeat(21)));
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), intruder.recv_from(&mut buf))
            .await
            .is_err(),
        "the intruder heard the daemon"
    );

    // The autopilot falls silent beyond the release time: the next autopilot takes over,
    // and the link says so (a new peer is a new link).
    tokio::time::sleep(Duration::from_millis(500)).await;
    intruder
        .send_to(&fake.encode(&heartbeat(5)), addr)
        .await
        .unwrap();
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("took its place"), "{reason}");
    assert_eq!(
        expect_connected(&mut events).await,
        intruder.local_addr().unwrap().to_string()
    );
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(5));
    shutdown.cancel();
}

#[tokio::test]
async fn link_udpin_pinned_address_refuses_everyone_else() {
    let shutdown = CancellationToken::new();
    let autopilot = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (link, mut events) = Link::open(
        &"udpin:127.0.0.1:0".parse().unwrap(),
        LinkOptions {
            peer: flight_companion::link::pin::PeerPolicy {
                rule: flight_companion::link::pin::PinRule::Address(
                    autopilot.local_addr().unwrap().to_string().parse().unwrap(),
                ),
                release_after: Duration::from_millis(1),
            },
            ..options()
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = link.local_addr().unwrap();
    // The intruder speaks first, and long after: it is never the peer.
    let intruder = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut fake = FrameEncoder::new(1, 1);
    intruder
        .send_to(&fake.encode(&heartbeat(9)), addr)
        .await
        .unwrap();
    assert_eq!(
        expect_refused(&mut events).await.reason.as_str(),
        "foreign_peer"
    );
    let mut ap = FrameEncoder::new(1, 1);
    autopilot
        .send_to(&ap.encode(&heartbeat(1)), addr)
        .await
        .unwrap();
    expect_connected(&mut events).await;
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    intruder
        .send_to(&fake.encode(&heartbeat(9)), addr)
        .await
        .unwrap();
    autopilot
        .send_to(&ap.encode(&heartbeat(2)), addr)
        .await
        .unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(2));
    assert_eq!(link.counters().0.trust.foreign_peer, 2);
    shutdown.cancel();
}

#[tokio::test]
async fn link_tcpin_keeps_the_autopilot_and_closes_a_second_client() {
    let shutdown = CancellationToken::new();
    let (link, mut events) = Link::open(
        &"tcpin:127.0.0.1:0".parse().unwrap(),
        pinned_options(400),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = link.local_addr().unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    expect_connected(&mut events).await;
    let mut ap = FrameEncoder::new(1, 1);
    first.write_all(&ap.encode(&heartbeat(1))).await.unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(1));

    // A second client: closed at once, the first stays.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(EVENT_TIMEOUT, second.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "not closed: {read:?}"
    );
    let refusal = expect_refused(&mut events).await;
    assert_eq!(refusal.reason.as_str(), "connection_refused");
    assert!(refusal.detail.contains("the link serves"), "{refusal:?}");
    first.write_all(&ap.encode(&heartbeat(2))).await.unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(2));
    link.send(&heartbeat(11)).unwrap();
    assert_eq!(read_frame(&mut first).await.2, heartbeat(11));
    assert_eq!(link.counters().0.trust.connections_refused, 1);

    // The autopilot reconnects (a new port, the same host): served at once.
    drop(first);
    expect_disconnected(&mut events).await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    expect_connected(&mut events).await;
    again.write_all(&ap.encode(&heartbeat(3))).await.unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(3));

    // A client that never speaks cannot hold the link: replaced once it has been silent.
    drop(again);
    expect_disconnected(&mut events).await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    expect_connected(&mut events).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut back = TcpStream::connect(addr).await.unwrap();
    let reason = expect_disconnected(&mut events).await;
    assert!(reason.contains("replaced by"), "{reason}");
    expect_connected(&mut events).await;
    back.write_all(&ap.encode(&heartbeat(4))).await.unwrap();
    assert_eq!(expect_frame(&mut events).await.1, heartbeat(4));
    shutdown.cancel();
}
