use std::time::{Duration, Instant};

use fwbridge_protocol::*;

use super::*;

fn options() -> BridgeLinkOptions {
    BridgeLinkOptions {
        heartbeat_interval: Duration::from_millis(100),
        timeout: Duration::from_millis(1000),
        hello_interval: Duration::from_secs(1),
        required: false,
        software_version: [0, 1, 0],
    }
}

fn mcu_hello(protocol_version: u16) -> Message {
    let mut hello = Hello::this_build(Role::Mcu, [2, 3, 4], 500);
    hello.protocol_version = protocol_version;
    Message::Hello(hello)
}

fn drain(link: &mut BridgeLink, now: Instant) -> Vec<Message> {
    std::iter::from_fn(|| link.poll_transmit(now)).collect()
}

fn events(link: &mut BridgeLink) -> Vec<BridgeEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn connected(t0: Instant) -> BridgeLink {
    let mut link = BridgeLink::new(options(), t0);
    link.handle_connected(t0);
    link.handle_message(t0, &mcu_hello(PROTOCOL_VERSION));
    drain(&mut link, t0);
    events(&mut link);
    link
}

#[test]
fn hello_then_heartbeats_carrying_the_armed_state() {
    let t0 = Instant::now();
    let mut link = BridgeLink::new(options(), t0);
    assert!(
        drain(&mut link, t0).is_empty(),
        "nothing before the port opens"
    );
    link.handle_connected(t0);
    let sent = drain(&mut link, t0);
    assert!(
        matches!(sent[..], [Message::Hello(h)] if h.role == Role::Companion && h.is_compatible()),
        "{sent:?}"
    );
    link.handle_message(t0, &mcu_hello(PROTOCOL_VERSION));
    assert_eq!(
        events(&mut link),
        [BridgeEvent::Connected {
            mcu_version: "2.3.4".into(),
            watchdog_ms: 500
        }]
    );
    link.set_armed(true);
    let sent = drain(&mut link, t0);
    // The MCU's hello answered ours: it is not answered again (that bounced for ever).
    assert!(
        matches!(
            sent[..],
            [Message::CompanionHeartbeat(CompanionHeartbeat {
                armed: true,
                ..
            })]
        ),
        "{sent:?}"
    );
    assert!(drain(&mut link, t0 + Duration::from_millis(50)).is_empty());
    assert_eq!(drain(&mut link, t0 + Duration::from_millis(100)).len(), 1);
    assert_eq!(link.status(t0).state, BridgeState::Healthy);
}

#[test]
fn a_version_mismatch_is_refused_naming_both_versions_and_nothing_more_is_sent() {
    let t0 = Instant::now();
    let mut link = BridgeLink::new(options(), t0);
    link.handle_connected(t0);
    drain(&mut link, t0);
    link.handle_message(t0, &mcu_hello(PROTOCOL_VERSION + 1));
    let [BridgeEvent::VersionMismatch { message }] = &events(&mut link)[..] else {
        panic!("no mismatch event")
    };
    assert!(
        message.contains(&format!("daemon speaks protocol v{PROTOCOL_VERSION}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("speaks protocol v{}", PROTOCOL_VERSION + 1)),
        "{message}"
    );
    assert!(message.contains("2.3.4"), "{message}");
    assert!(drain(&mut link, t0 + Duration::from_secs(5)).is_empty());
    let status = link.status(t0);
    assert_eq!(status.state, BridgeState::VersionMismatch);
    assert_eq!(status.message.as_deref(), Some(message.as_str()));
}

#[test]
fn an_estop_is_reported_once_and_every_copy_acknowledged() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    let estop = Message::EstopAsserted {
        seq: 4,
        source: EstopSource::Switch,
    };
    link.handle_message(t0, &estop);
    link.handle_message(t0, &estop);
    assert_eq!(
        events(&mut link),
        [BridgeEvent::EstopAsserted {
            source: EstopSource::Switch,
            seq: 4
        }]
    );
    let acks = drain(&mut link, t0)
        .into_iter()
        .filter(|m| {
            matches!(
                m,
                Message::Ack(Ack {
                    seq: 4,
                    kind: AckedKind::EstopAsserted,
                    result: AckResult::Accepted
                })
            )
        })
        .count();
    assert_eq!(acks, 2);
    assert_eq!(link.status(t0).estop_events, 1);
}

#[test]
fn silence_from_the_bridge_is_reported_lost_and_recovers() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    let later = t0 + Duration::from_millis(999);
    drain(&mut link, later);
    assert!(events(&mut link).is_empty());
    let lost = t0 + Duration::from_millis(1000);
    drain(&mut link, lost);
    assert!(matches!(&events(&mut link)[..], [BridgeEvent::Lost { .. }]));
    assert_eq!(link.status(lost).state, BridgeState::Lost);
    let heartbeat = Message::McuHeartbeat(McuHeartbeat {
        seq: 1,
        uptime_ms: 1,
        switch: SwitchState::Closed,
        output: OutputState::Released,
        latched: None,
        companion: CompanionLink::Healthy,
    });
    link.handle_message(lost, &heartbeat);
    assert_eq!(link.status(lost).state, BridgeState::Healthy);
}

#[test]
fn release_requests_and_their_answers() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    link.request_release();
    let sent = drain(&mut link, t0);
    assert!(
        sent.contains(&Message::ReleaseRequest { seq: 1 }),
        "{sent:?}"
    );
    let refused = AckResult::Refused(RefuseReason::SwitchOpen);
    link.handle_message(
        t0,
        &Message::Ack(Ack {
            seq: 1,
            kind: AckedKind::ReleaseRequest,
            result: refused,
        }),
    );
    assert_eq!(
        events(&mut link),
        [BridgeEvent::ReleaseAnswered { result: refused }]
    );
}

#[test]
fn a_closed_port_is_reported_and_nothing_is_queued_for_later() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    link.request_release();
    link.handle_disconnected(t0, "/dev/ttyACM0: closed");
    assert!(matches!(&events(&mut link)[..], [BridgeEvent::Lost { .. }]));
    assert!(drain(&mut link, t0).is_empty());
    link.handle_connected(t0);
    let sent = drain(&mut link, t0);
    assert!(
        matches!(sent[..], [Message::Hello(_)]),
        "only a fresh hello: {sent:?}"
    );
}

#[test]
fn a_refusal_before_the_bridge_hello_still_ends_with_both_versions_named() {
    let t0 = Instant::now();
    let mut link = BridgeLink::new(options(), t0);
    link.handle_connected(t0);
    drain(&mut link, t0);
    link.handle_message(
        t0,
        &Message::Ack(Ack {
            seq: 0,
            kind: AckedKind::Hello,
            result: AckResult::Refused(RefuseReason::VersionMismatch),
        }),
    );
    assert_eq!(link.status(t0).state, BridgeState::VersionMismatch);
    link.handle_message(t0, &mcu_hello(7));
    let [BridgeEvent::VersionMismatch { message }] = &events(&mut link)[..] else {
        panic!("no mismatch event")
    };
    assert!(message.contains("speaks protocol v7"), "{message}");
}

/// Found by the fuzzer (issue 21): a restarted MCU numbers its events from 1 again, so its
/// first press may carry the number of the last event before; it must still be a press.
#[test]
fn a_restarted_mcu_press_numbered_as_the_last_one_before_is_still_a_press() {
    let t0 = Instant::now();
    let heartbeat = |uptime_ms: u32| {
        Message::McuHeartbeat(McuHeartbeat {
            seq: 1,
            uptime_ms,
            switch: SwitchState::Closed,
            output: OutputState::Released,
            latched: None,
            companion: CompanionLink::Healthy,
        })
    };
    let press = |seq: u32| Message::EstopAsserted {
        seq,
        source: EstopSource::Switch,
    };
    let release = Message::EstopReleased {
        seq: 1,
        source: EstopSource::Switch,
    };
    // Restarted and said hello again.
    let mut link = connected(t0);
    link.handle_message(t0, &release);
    link.handle_message(t0, &mcu_hello(PROTOCOL_VERSION));
    events(&mut link);
    link.handle_message(t0, &press(1));
    assert!(
        events(&mut link)
            .iter()
            .any(|e| matches!(e, BridgeEvent::EstopAsserted { seq: 1, .. })),
        "a press after a new hello was taken for a repeat"
    );
    // Restarted faster than the link timeout: seen only in its uptime going back.
    let mut link = connected(t0);
    link.handle_message(t0, &heartbeat(50_000));
    link.handle_message(t0, &press(1));
    events(&mut link);
    link.handle_message(t0, &heartbeat(800));
    link.handle_message(t0, &press(1));
    assert!(
        events(&mut link)
            .iter()
            .any(|e| matches!(e, BridgeEvent::EstopAsserted { seq: 1, .. })),
        "a press after the uptime went back was taken for a repeat"
    );
    // A repeat within one run of the MCU stays one event.
    link.handle_message(t0, &heartbeat(900));
    link.handle_message(t0, &press(1));
    assert!(events(&mut link).is_empty());
}

/// Hellos each way (daemon → MCU, MCU → daemon) while the daemon's link and the firmware's
/// own logic talk over a lossless line from `from_ms` to `to_ms`, one millisecond a step.
/// Each step's exchange is capped, so a storm shows as a count, not a hang.
fn hellos_between(
    link: &mut BridgeLink,
    mcu: &mut fwbridge_logic::Mcu,
    t0: Instant,
    from_ms: u64,
    to_ms: u64,
) -> (u32, u32) {
    let is_hello = |m: &Message| matches!(m, Message::Hello(_));
    let (mut to_mcu, mut to_daemon) = (0, 0);
    for ms in from_ms..to_ms {
        let now = t0 + Duration::from_millis(ms);
        for _ in 0..16 {
            let mut quiet = true;
            while let Some(m) = link.poll_transmit(now) {
                to_mcu += u32::from(is_hello(&m));
                mcu.handle_message(ms, &m);
                quiet = false;
            }
            while let Some(m) = mcu.poll_transmit(ms) {
                to_daemon += u32::from(is_hello(&m));
                link.handle_message(now, &m);
                quiet = false;
            }
            if quiet {
                break;
            }
        }
        events(link);
    }
    (to_mcu, to_daemon)
}

#[test]
fn the_hello_handshake_ends_and_does_not_bounce_between_the_daemon_and_the_firmware() {
    let t0 = Instant::now();
    let mut link = BridgeLink::new(options(), t0);
    let mut mcu = fwbridge_logic::Mcu::new(fwbridge_logic::Config::default(), 0);
    link.handle_connected(t0);
    let (to_mcu, to_daemon) = hellos_between(&mut link, &mut mcu, t0, 0, 10_000);
    assert!(mcu.hello_ok(), "the firmware heard a compatible hello");
    assert_eq!(
        link.status(t0 + Duration::from_secs(10)).state,
        BridgeState::Healthy
    );
    // Before the fix each hello was answered by the other side's, for ever: 2 per step.
    assert!(
        to_mcu <= 2 && to_daemon <= 2,
        "{to_mcu} hellos to the MCU and {to_daemon} back in 10 s"
    );

    // The port reopened (a daemon-side reconnect): one handshake again, then quiet.
    link.handle_connected(t0 + Duration::from_secs(10));
    let (to_mcu, to_daemon) = hellos_between(&mut link, &mut mcu, t0, 10_000, 20_000);
    assert_eq!(
        link.status(t0 + Duration::from_secs(20)).state,
        BridgeState::Healthy
    );
    assert!(
        to_mcu <= 2 && to_daemon <= 2,
        "{to_mcu} / {to_daemon} after a reconnect"
    );

    // The MCU restarted: its hellos are answered, and it is heard again.
    let mut mcu = fwbridge_logic::Mcu::new(fwbridge_logic::Config::default(), 20_000);
    let (to_mcu, to_daemon) = hellos_between(&mut link, &mut mcu, t0, 20_000, 30_000);
    assert!(mcu.hello_ok(), "the restarted firmware heard our hello");
    assert_eq!(
        link.status(t0 + Duration::from_secs(30)).state,
        BridgeState::Healthy
    );
    assert!(
        to_mcu <= 2 && to_daemon <= 3,
        "{to_mcu} / {to_daemon} after an MCU restart"
    );
}
