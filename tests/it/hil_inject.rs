//! The rig's fault injectors against real peers: the serial relay between the real
//! simulator and the daemon's own serial link on the relay's pty, and the MQTT proxy
//! between a real mutual-TLS Mosquitto and real Mosquitto clients. Each fault is proven by
//! what the peers on both sides see, and by the wire log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flight_companion::hil::proxy::{MqttProxy, NetFault};
use flight_companion::hil::relay::{LineFault, SerialRelay};
use flight_companion::hil::wire::{Direction, Fate, WireFrame};
use flight_companion::link::dialect::*;
use flight_companion::link::transport::{Link, LinkEvent, LinkHandle, LinkOptions};
use flight_companion::link::{MavHeader, MavMessage};
use tokio_util::sync::CancellationToken;

use crate::daemon_sim::start_sim;
use crate::support::Proc;
use crate::support::broker::Broker;

/// Generous: the machine is shared with other builds.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How long "nothing passes" is watched for: several heartbeat periods of both peers and
/// more than the simulator's companion-heartbeat timeout (3 s simulated at 4x).
const QUIET: Duration = Duration::from_millis(1500);

/// What the daemon-side reader saw, in order.
// Nearly every entry is a frame; boxing it would only allocate per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Seen {
    Connected,
    Disconnected {
        reason: String,
    },
    Frame {
        at: Instant,
        header: MavHeader,
        message: MavMessage,
    },
}

/// The daemon's own serial link on the relay's pty, heartbeating as the companion
/// (component 191) every 100 ms, with everything it receives recorded.
struct Reader {
    link: LinkHandle,
    seen: Arc<Mutex<Vec<(Instant, Seen)>>>,
    stop: CancellationToken,
}

impl Reader {
    async fn open(device: &Path) -> Reader {
        let stop = CancellationToken::new();
        let endpoint = format!("serial:{}:921600", device.display());
        let options = LinkOptions {
            system_id: 1,
            component_id: 191,
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_millis(200),
            signing: None,
            peer: flight_companion::link::pin::PeerPolicy::OPEN,
        };
        let (link, mut events) = Link::open(&endpoint.parse().unwrap(), options, stop.clone())
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        // Drained continuously: a full event channel would stall the link's reads.
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let entry = match event {
                    LinkEvent::Connected { .. } => Seen::Connected,
                    LinkEvent::Disconnected { reason } => Seen::Disconnected { reason },
                    LinkEvent::Frame { frame, received_at } => Seen::Frame {
                        at: received_at,
                        header: frame.header,
                        message: frame.message,
                    },
                    // An unpinned link without a key refuses nothing.
                    LinkEvent::Refused(refusal) => panic!("refused: {refusal:?}"),
                };
                record.lock().unwrap().push((Instant::now(), entry));
            }
        });
        let beating = link.clone();
        let stop_beat = stop.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop_beat.cancelled() => return,
                    _ = every.tick() => { let _ = beating.send(&companion_heartbeat()); }
                }
            }
        });
        Reader { link, seen, stop }
    }

    fn since(&self, from: Instant) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn frames_since(&self, from: Instant) -> Vec<(Instant, MavHeader, MavMessage)> {
        self.since(from)
            .into_iter()
            .filter_map(|s| match s {
                Seen::Frame {
                    at,
                    header,
                    message,
                } => Some((at, header, message)),
                _ => None,
            })
            .collect()
    }

    /// Waits until something seen since `from` satisfies `found`.
    async fn wait_for(&self, from: Instant, what: &str, found: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.since(from).iter().any(&found) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the reader never saw {what}; it saw: {:?}",
                self.since(from).last()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_frame(&self, from: Instant, what: &str, found: impl Fn(&MavMessage) -> bool) {
        self.wait_for(
            from,
            what,
            |s| matches!(s, Seen::Frame { message, .. } if found(message)),
        )
        .await
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn companion_heartbeat() -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype: MavType::MAV_TYPE_ONBOARD_CONTROLLER,
        autopilot: MavAutopilot::MAV_AUTOPILOT_INVALID,
        base_mode: MavModeFlag::empty(),
        system_status: MavState::MAV_STATE_ACTIVE,
        mavlink_version: 3,
    })
}

fn is_autopilot_heartbeat(message: &MavMessage) -> bool {
    matches!(message, MavMessage::HEARTBEAT(h) if h.autopilot == MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA)
}

fn param_set(name: &str, value: f32) -> MavMessage {
    MavMessage::PARAM_SET(PARAM_SET_DATA {
        param_value: value,
        target_system: 1,
        target_component: 1,
        param_id: name.into(),
        param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
    })
}

fn is_param_value(frame: &WireFrame, name: &str) -> bool {
    matches!(&frame.message, Some(MavMessage::PARAM_VALUE(p)) if p.param_id.to_str() == Ok(name))
}

/// Blocking waits on a child's output, off the runtime's worker.
fn wait_line(proc: &mut Proc, needle: &str) -> String {
    tokio::task::block_in_place(|| proc.wait_for_line(needle, TIMEOUT))
}

/// The simulator (4x), the relay to it, and the daemon's link on the relay's pty, with
/// frames flowing both ways.
struct Rig {
    sim: Proc,
    relay: SerialRelay,
    reader: Reader,
    epoch: Instant,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(seed: u64) -> Rig {
        let (mut sim, endpoint) = start_sim(&["--link", "tcpin:127.0.0.1:0", "--speedup", "4"]);
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("ttyFC");
        let epoch = Instant::now();
        let relay = SerialRelay::start(&endpoint.replace("tcpin", "tcpout"), &device, epoch, seed)
            .expect("start the relay");
        assert_eq!(relay.device_path(), device);
        assert!(
            std::fs::symlink_metadata(&device)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the device is a symlink to the pty"
        );
        let reader = Reader::open(&device).await;
        reader
            .wait_for_frame(epoch, "the simulator's heartbeat", is_autopilot_heartbeat)
            .await;
        wait_line(&mut sim, "sim: companion heartbeat seen");
        Rig {
            sim,
            relay,
            reader,
            epoch,
            _dir: dir,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Sets a fault; returns the instant and the rig time it took effect, plus a settling
    /// margin for frames already forwarded before it.
    async fn set(&self, fault: LineFault) -> (Instant, Duration) {
        self.relay.set_fault(fault).unwrap();
        let at = self.now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        (Instant::now(), at)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hil_relay_passes_and_stamps_frames_both_ways_and_injects() {
    let rig = Rig::start(1).await;
    let wire = rig.relay.wire();
    let frames = wire.frames_since(Duration::ZERO);
    let to_companion: Vec<&WireFrame> = frames
        .iter()
        .filter(|f| f.direction == Direction::ToCompanion)
        .collect();
    let to_autopilot: Vec<&WireFrame> = frames
        .iter()
        .filter(|f| f.direction == Direction::ToAutopilot)
        .collect();
    assert!(
        to_companion
            .iter()
            .any(|f| f.message.as_ref().is_some_and(is_autopilot_heartbeat))
    );
    assert!(
        to_autopilot
            .iter()
            .any(|f| f.component_id == 191 && f.name() == "HEARTBEAT")
    );
    assert!(
        frames
            .iter()
            .all(|f| f.fate == Fate::Forwarded && !f.injected)
    );
    // Stamped in order, on the rig's clock.
    for side in [&to_companion, &to_autopilot] {
        assert!(side.windows(2).all(|w| w[0].at <= w[1].at));
    }
    assert!(frames.iter().all(|f| f.at <= rig.now()));

    // The bytes pass unchanged: the daemon's decoder finds no broken frame, and everything
    // it decoded was logged on the way.
    let (counters, _) = rig.reader.link.counters();
    assert_eq!(
        (
            counters.crc_errors,
            counters.parse_errors,
            counters.garbage_bytes
        ),
        (0, 0, 0)
    );
    let logged_to_companion = wire
        .frames_since(Duration::ZERO)
        .iter()
        .filter(|f| f.direction == Direction::ToCompanion)
        .count() as u64;
    assert!(counters.frames <= logged_to_companion);

    // The rig's own frame reaches the simulator, whose answer comes back to the daemon.
    let from = Instant::now();
    let at = rig.now();
    rig.relay
        .inject_to_autopilot(&param_set("SIM_WIND_SPD", 3.5), 255, 190)
        .unwrap();
    rig.reader
        .wait_for_frame(from, "PARAM_VALUE SIM_WIND_SPD", |m| {
            matches!(m, MavMessage::PARAM_VALUE(p) if p.param_id.to_str() == Ok("SIM_WIND_SPD") && p.param_value == 3.5)
        })
        .await;
    let injected = wire.first_after(at, |f| f.injected).unwrap();
    assert_eq!(
        (
            injected.direction,
            injected.system_id,
            injected.component_id
        ),
        (Direction::ToAutopilot, 255, 190)
    );
    assert!(
        wire.first_after(at, |f| is_param_value(f, "SIM_WIND_SPD"))
            .is_some()
    );
    let excerpt = wire.excerpt(injected.at, Duration::from_millis(500));
    assert!(
        excerpt.contains("-> autopilot 255/190 PARAM_SET(SIM_WIND_SPD = 3.5 to 1/1) [injected]"),
        "{excerpt}"
    );
    assert_eq!(rig.relay.counters().injected_frames, 1);
    rig.relay.stop().await;
    assert!(std::fs::symlink_metadata(rig._dir.path().join("ttyFC")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hil_relay_cut_drops_everything_both_ways_until_restored() {
    let mut rig = Rig::start(2).await;
    let (from, cut_at) = rig.set(LineFault::Cut).await;
    // Nothing reaches the daemon...
    tokio::time::sleep(QUIET).await;
    let leaked = rig.reader.frames_since(from);
    assert!(leaked.is_empty(), "frames crossed a cut line: {leaked:?}");
    // ...and nothing reaches the autopilot: the simulator itself misses the companion.
    wait_line(&mut rig.sim, "sim: companion heartbeat lost");
    // The device stays open: the daemon's link never noticed a disconnection.
    assert!(
        !rig.reader
            .since(from)
            .iter()
            .any(|s| matches!(s, Seen::Disconnected { .. }))
    );
    // The relay still saw (and logged) the frames it dropped, both ways. The simulator
    // answers the rig's own PARAM_SET (injections are not subject to the line), but its
    // answer is cut.
    rig.relay
        .inject_to_autopilot(&param_set("SIM_WIND_DIR", 90.0), 255, 190)
        .unwrap();
    let wire = rig.relay.wire();
    let answer = wire
        .wait_for(cut_at, TIMEOUT, |f| is_param_value(f, "SIM_WIND_DIR"))
        .await
        .expect("the simulator answered the injected PARAM_SET");
    assert_eq!(answer.fate, Fate::Dropped);
    let during = wire.frames_since(cut_at + Duration::from_millis(50));
    for direction in [Direction::ToAutopilot, Direction::ToCompanion] {
        assert!(
            during
                .iter()
                .any(|f| f.direction == direction && !f.injected),
            "no {direction:?} frame logged during the cut"
        );
    }
    assert!(
        during.iter().all(|f| f.injected || f.fate == Fate::Dropped),
        "{}",
        wire.excerpt(cut_at, Duration::from_secs(1))
    );
    let counters = rig.relay.counters();
    assert!(counters.to_autopilot.shaped.cut_frames > 0);
    assert!(counters.to_companion.shaped.cut_frames > 0);
    assert!(
        wire.faults().iter().any(|(_, d)| d == "serial line: cut"),
        "{:?}",
        wire.faults()
    );

    // Restored: both ways again.
    let from = Instant::now();
    rig.relay.set_fault(LineFault::None).unwrap();
    rig.reader
        .wait_for_frame(
            from,
            "a heartbeat after the restore",
            is_autopilot_heartbeat,
        )
        .await;
    wait_line(&mut rig.sim, "sim: companion heartbeat back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hil_relay_unplug_removes_the_device_and_replug_brings_it_back() {
    let rig = Rig::start(3).await;
    let device: PathBuf = rig.relay.device_path().to_owned();
    let from = Instant::now();
    rig.relay.set_fault(LineFault::Unplug).unwrap();
    rig.reader
        .wait_for(from, "a disconnection", |s| {
            matches!(s, Seen::Disconnected { .. })
        })
        .await;
    let reasons: Vec<String> = rig
        .reader
        .since(from)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Disconnected { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(reasons[0].contains("serial"), "{reasons:?}");
    assert!(
        std::fs::symlink_metadata(&device).is_err(),
        "the device path is gone while unplugged"
    );
    // It stays gone: the daemon's reopening attempts fail.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(std::fs::symlink_metadata(&device).is_err());
    assert!(!rig.reader.link.is_connected());

    let from = Instant::now();
    rig.relay.set_fault(LineFault::None).unwrap();
    rig.reader
        .wait_for(from, "a reconnection", |s| matches!(s, Seen::Connected))
        .await;
    rig.reader
        .wait_for_frame(from, "a heartbeat on the new pty", is_autopilot_heartbeat)
        .await;
    let target = std::fs::read_link(&device).unwrap();
    assert!(target.starts_with("/dev/pts"), "{}", target.display());
    assert_eq!(rig.relay.counters().ptys_made, 2);
    let notes = rig.relay.wire().excerpt(rig.now(), rig.now());
    assert!(notes.contains("fault: serial line: unplugged"), "{notes}");
    assert!(notes.contains("note: serial relay: pty closed"), "{notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hil_relay_drop_and_corrupt_are_counted_on_both_sides() {
    let rig = Rig::start(4).await;
    let wire = rig.relay.wire();

    // Drop every frame: nothing arrives, every frame seen is logged as dropped.
    let (from, dropped_at) = rig.set(LineFault::Drop { probability: 1.0 }).await;
    tokio::time::sleep(QUIET).await;
    assert!(rig.reader.frames_since(from).is_empty());
    let counters = rig.relay.counters();
    assert!(counters.to_companion.shaped.dropped_frames > 0);
    assert!(counters.to_autopilot.shaped.dropped_frames > 0);
    let during = wire.frames_since(dropped_at + Duration::from_millis(50));
    assert!(!during.is_empty());
    assert!(during.iter().all(|f| f.fate == Fate::Dropped));

    // Corrupt half: the daemon's decoder counts a rejected frame for each corrupted one,
    // and still decodes the intact ones.
    let from = Instant::now();
    rig.relay.set_fault(LineFault::None).unwrap();
    rig.reader
        .wait_for_frame(from, "a heartbeat after the drop", is_autopilot_heartbeat)
        .await;
    // The reader's window opens before the relay's counters are read, so that every frame
    // the relay counts below reached the reader inside the window (frames come in bursts).
    let corrupt_from = Instant::now();
    let before_reader = rig.reader.link.counters().0;
    let before_relay = rig.relay.counters();
    rig.relay
        .set_fault(LineFault::Corrupt { probability: 0.5 })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.relay.set_fault(LineFault::None).unwrap();
    // Everything corrupted has reached the reader once an intact frame sent after the
    // restore has.
    let restored = Instant::now();
    rig.reader
        .wait_for_frame(
            restored,
            "a heartbeat after the corruption",
            is_autopilot_heartbeat,
        )
        .await;
    let after_reader = rig.reader.link.counters().0;
    let after_relay = rig.relay.counters();
    // And it closes only once a heartbeat read after those counters has arrived: every frame
    // they count is then through the pty.
    let counted = Instant::now();
    rig.reader
        .wait_for_frame(
            counted,
            "a heartbeat after the counters were read",
            is_autopilot_heartbeat,
        )
        .await;
    let corrupted = after_relay.to_companion.shaped.corrupted_frames
        - before_relay.to_companion.shaped.corrupted_frames;
    let seen = after_relay.to_companion.shaped.frames - before_relay.to_companion.shaped.frames;
    let rejected = (after_reader.crc_errors
        + after_reader.parse_errors
        + after_reader.unknown_messages)
        - (before_reader.crc_errors + before_reader.parse_errors + before_reader.unknown_messages);
    assert!(seen >= 20, "too few frames to judge: {seen}");
    assert!(
        corrupted * 5 >= seen && corrupted * 5 <= seen * 4,
        "{corrupted} of {seen} frames corrupted at p=0.5"
    );
    assert!(
        rejected >= corrupted,
        "the reader rejected {rejected} candidates for {corrupted} corrupted frames"
    );
    let intact_received = rig.reader.frames_since(corrupt_from).len() as u64;
    assert!(
        intact_received >= seen - corrupted - 1,
        "the reader decoded {intact_received} frames of the {} the relay passed intact",
        seen - corrupted
    );
    assert!(
        after_relay.to_autopilot.shaped.corrupted_frames
            > before_relay.to_autopilot.shaped.corrupted_frames
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hil_relay_delay_holds_frames_at_least_the_delay_each_way() {
    const DELAY_MS: u64 = 300;
    let rig = Rig::start(5).await;
    let wire = rig.relay.wire();
    let (from, _) = rig.set(LineFault::Delay { delay_ms: DELAY_MS }).await;
    let delay = Duration::from_millis(DELAY_MS);

    // Towards the daemon: each frame arrives at least the delay after the relay read it.
    // A second is enough on a quiet machine; a loaded one may take longer to deliver five.
    let deadline = Instant::now() + Duration::from_secs(15);
    tokio::time::sleep(Duration::from_secs(1)).await;
    while rig.reader.frames_since(from + delay).len() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arrived = rig.reader.frames_since(from + delay);
    assert!(arrived.len() >= 5, "{arrived:?}");
    let logged = wire.frames_since(Duration::ZERO);
    let mut lags = Vec::new();
    for (received_at, header, message) in &arrived {
        let read = logged
            .iter()
            .rev()
            .find(|f| {
                rig.epoch + f.at <= *received_at
                    && f.direction == Direction::ToCompanion
                    && f.sequence == header.sequence
                    && f.message.as_ref() == Some(message)
            })
            .expect("every frame the reader got was logged");
        assert_eq!(read.fate, Fate::Delayed { delay_ms: DELAY_MS });
        lags.push(received_at.duration_since(rig.epoch + read.at));
    }
    let lag_min = lags.iter().min().unwrap();
    assert!(
        *lag_min >= delay,
        "a frame arrived {lag_min:?} after it was read"
    );

    // Both ways: a command's round trip takes at least twice the delay.
    let sent = Instant::now();
    rig.reader
        .link
        .send(&MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
            target_system: 1,
            target_component: 1,
            command: MavCmd::MAV_CMD_REQUEST_MESSAGE,
            param1: 148.0,
            ..Default::default()
        }))
        .unwrap();
    rig.reader
        .wait_for_frame(sent, "the COMMAND_ACK", |m| {
            matches!(m, MavMessage::COMMAND_ACK(a) if a.command == MavCmd::MAV_CMD_REQUEST_MESSAGE)
        })
        .await;
    let (acked, _, _) = rig
        .reader
        .frames_since(sent)
        .into_iter()
        .find(|(_, _, m)| matches!(m, MavMessage::COMMAND_ACK(_)))
        .unwrap();
    let round_trip = acked.duration_since(sent);
    assert!(round_trip >= 2 * delay, "round trip {round_trip:?}");
    println!(
        "relay delay {DELAY_MS} ms: one-way lag min {:?} max {:?}, command round trip {round_trip:?}",
        lag_min,
        lags.iter().max().unwrap()
    );
}

// ---- The MQTT proxy ----

/// A Mosquitto client of the dev-setup broker, through `port`, as `identity`: `drone`, or a
/// ground identity of its own (the broker takes the certificate's CN as the client id, so
/// two connections never share one).
fn mqtt_tool(broker: &Broker, tool: &str, port: u16, identity: &str, args: &[&str]) -> Command {
    // Line-buffered: through a pipe the Mosquitto tools buffer stdout until they exit.
    let mut command = Command::new("stdbuf");
    command.args(["-oL", tool]);
    let (cert, key) = if identity == "drone" {
        (broker.dev.certs("drone.pem"), broker.dev.certs("drone.key"))
    } else {
        broker.dev.identity(identity)
    };
    let mut tls = broker.tls_args(Some((&cert, &key)));
    // tls_args names the broker's own port; this client goes through `port`.
    if let Some(i) = tls.iter().position(|a| a == "-p") {
        tls[i + 1] = port.to_string();
    }
    command.args(tls).args(args);
    command
}

/// Publishes one message straight to the broker on the drone's side, as the benchmarks'
/// echo identity (dev-setup's ACL lets it write `bench-pong` under the drone's RPC topics;
/// the drone itself is the subscriber, and one identity has one connection).
fn publish_direct(broker: &Broker, topic: &str, payload: &str) {
    let output = mqtt_tool(
        broker,
        "mosquitto_pub",
        broker.port(),
        "bench-echo",
        &[
            "-i",
            "rig-direct-pub",
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ],
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn publish_through(publisher: &mut Proc, payload: &str) {
    use std::io::Write;
    let stdin = publisher.child.stdin.as_mut().unwrap();
    writeln!(stdin, "{payload}").unwrap();
    stdin.flush().unwrap();
}

/// Asserts no line containing `needle` shows up within `window`.
fn assert_absent(proc: &mut Proc, needle: &str, window: Duration) {
    tokio::task::block_in_place(|| std::thread::sleep(window));
    let output = proc.output();
    assert!(
        !output.lines().any(|l| l.contains(needle)),
        "{} got {needle:?} through a partition:\n{output}",
        proc.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hil_proxy_passes_partitions_both_ways_and_drops_connections() {
    let broker = Broker::start("hil-proxy");
    let upstream = format!("127.0.0.1:{}", broker.port()).parse().unwrap();
    let proxy = MqttProxy::start("127.0.0.1:0".parse().unwrap(), upstream, Instant::now()).unwrap();
    let through = proxy.local_addr().port();

    // Ground-side clients behind the proxy (the ACL lets identity X use $mcp-rpc/X/#), and a
    // drone-side subscriber straight on the broker.
    let mut down = Proc::spawn(
        "sub-behind-proxy",
        mqtt_tool(
            &broker,
            "mosquitto_sub",
            through,
            "rigsub",
            &[
                "-d",
                "-v",
                "-i",
                "rigsub",
                "-q",
                "1",
                "-t",
                "$mcp-rpc/rigsub/drone-1/#",
            ],
        ),
    );
    wait_line(&mut down, "received SUBACK");
    let mut up = Proc::spawn(
        "sub-on-broker",
        mqtt_tool(
            &broker,
            "mosquitto_sub",
            broker.port(),
            "drone",
            &[
                "-d",
                "-v",
                "-i",
                "rig-up-sub",
                "-q",
                "1",
                "-t",
                "$mcp-rpc/+/drone-1/#",
            ],
        ),
    );
    wait_line(&mut up, "received SUBACK");
    let mut publisher = Proc::spawn_with_stdin(
        "pub-behind-proxy",
        mqtt_tool(
            &broker,
            "mosquitto_pub",
            through,
            "rigpub",
            &[
                "-d",
                "-l",
                "-i",
                "rigpub",
                "-q",
                "1",
                "-t",
                "$mcp-rpc/rigpub/drone-1/bench-ping",
            ],
        ),
    );
    wait_line(&mut publisher, "received CONNACK");

    // No fault: both ways.
    publish_through(&mut publisher, "up-1");
    wait_line(&mut up, "up-1");
    publish_direct(&broker, "$mcp-rpc/rigsub/drone-1/bench-pong", "down-1");
    wait_line(&mut down, "down-1");
    let accepted = proxy.counters().connections_accepted;
    assert_eq!(accepted, 2);

    // Partition: neither way, and the connections stay open.
    proxy.set_fault(NetFault::Partition);
    publish_through(&mut publisher, "up-2");
    publish_direct(&broker, "$mcp-rpc/rigsub/drone-1/bench-pong", "down-2");
    assert_absent(&mut up, "up-2", Duration::from_secs(2));
    assert_absent(&mut down, "down-2", Duration::ZERO);
    assert!(down.child.try_wait().unwrap().is_none());
    assert!(publisher.child.try_wait().unwrap().is_none());

    // Restored: what was held arrives over the same connections (no new one was made),
    // and new traffic passes.
    proxy.set_fault(NetFault::None);
    wait_line(&mut up, "up-2");
    wait_line(&mut down, "down-2");
    publish_through(&mut publisher, "up-3");
    wait_line(&mut up, "up-3");
    assert_eq!(proxy.counters().connections_accepted, accepted);
    assert_eq!(proxy.counters().connections_reset, 0);

    // Delay: each way takes at least the delay (without it, loopback takes milliseconds).
    const DELAY_MS: u64 = 500;
    let delay = Duration::from_millis(DELAY_MS);
    proxy.set_fault(NetFault::Delay { delay_ms: DELAY_MS });
    let sent = Instant::now();
    publish_through(&mut publisher, "up-delayed");
    wait_line(&mut up, "up-delayed");
    let lag_up = sent.elapsed();
    let sent = Instant::now();
    publish_direct(
        &broker,
        "$mcp-rpc/rigsub/drone-1/bench-pong",
        "down-delayed",
    );
    wait_line(&mut down, "down-delayed");
    let lag_down = sent.elapsed();
    assert!(
        lag_up >= delay && lag_down >= delay,
        "{lag_up:?} {lag_down:?}"
    );
    println!(
        "proxy delay {DELAY_MS} ms: measured {lag_up:?} towards the broker, {lag_down:?} towards the client"
    );
    proxy.set_fault(NetFault::None);

    // Drop: open connections are reset, new ones refused.
    let mut idle = tokio::net::TcpStream::connect(proxy.local_addr())
        .await
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while proxy.counters().connections_accepted < accepted + 1 {
        assert!(Instant::now() < deadline, "the proxy never accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.set_fault(NetFault::Drop);
    // `set_fault` shuts the listener down before it returns: the first connection made
    // after it is refused, with no window in which the proxy still takes one.
    let refused = tokio::net::TcpStream::connect(proxy.local_addr()).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(TIMEOUT, tokio::io::AsyncReadExt::read(&mut idle, &mut buf))
        .await
        .expect("the open connection ends at once");
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    // Every connection the proxy took is reset (the three open ones), and it took no other.
    let deadline = Instant::now() + TIMEOUT;
    while proxy.counters().connections_reset < 3 {
        assert!(Instant::now() < deadline, "{:?}", proxy.counters());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.counters().connections_reset, 3);
    assert_eq!(proxy.counters().connections_accepted, accepted + 1);

    // Restored: the subscriber behind the proxy reconnects by itself and receives again.
    proxy.set_fault(NetFault::None);
    let deadline = Instant::now() + TIMEOUT;
    while tokio::net::TcpStream::connect(proxy.local_addr())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the proxy never listened again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        publish_direct(&broker, "$mcp-rpc/rigsub/drone-1/bench-pong", "down-4");
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(500)));
        if down.output().contains("down-4") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber never got through the restored proxy:\n{}",
            down.output()
        );
    }
    let faults: Vec<String> = proxy.faults().into_iter().map(|(_, f)| f).collect();
    assert_eq!(
        faults,
        [
            "mqtt link: partition",
            "mqtt link: none (link restored)",
            "mqtt link: delay 500 ms",
            "mqtt link: none (link restored)",
            "mqtt link: drop (connections reset, new ones refused)",
            "mqtt link: none (link restored)"
        ]
    );
    proxy.stop().await;
}
