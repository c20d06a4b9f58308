//! Table-driven tests with injected time. A scenario is a list of steps at given
//! milliseconds; between steps the runner samples the switch every millisecond at its
//! current level and drains `poll_transmit`, as the firmware's loop does.

extern crate std;

use std::vec::Vec;

use fwbridge_protocol::{
    Ack, AckResult, AckedKind, CompanionHeartbeat, EstopSource, Hello, Message, OutputState,
    PROTOCOL_VERSION, RefuseReason, Role, SwitchState,
};

use super::{Config, Mcu};

#[derive(Debug, Clone, Copy)]
enum Do {
    /// The raw input level from now on (true: circuit closed).
    Circuit(bool),
    /// The companion says hello (compatible).
    Hello,
    /// The companion says hello from another protocol version.
    HelloOtherVersion,
    /// Companion heartbeats every 100 ms from now on (until `StopHeartbeats`).
    Heartbeats {
        armed: bool,
    },
    StopHeartbeats,
    /// The companion acknowledges every e-stop event it receives from now on.
    AckEvents(bool),
    /// The companion asks for release.
    Release,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Output(OutputState),
    Latched(Option<EstopSource>),
    Switch(SwitchState),
    /// The last release request was answered so.
    ReleaseAnswer(AckResult),
    /// An `EstopAsserted` with this source was sent at or before now (and not before `since`).
    EventSent {
        source: EstopSource,
        since_ms: u64,
    },
    /// Nothing of kind `EstopAsserted` was sent so far.
    NoEventSent,
    HelloRefused,
}

type Scenario<'a> = &'a [(u64, Step)];

#[derive(Debug, Clone, Copy)]
enum Step {
    Do(Do),
    Expect(Expect),
}

use Step::{Do as D, Expect as E};

struct Runner {
    mcu: Mcu,
    now_ms: u64,
    circuit_closed: bool,
    heartbeats: Option<bool>,
    next_heartbeat_ms: u64,
    ack_events: bool,
    hb_seq: u32,
    sent: Vec<(u64, Message)>,
}

impl Runner {
    fn new(config: Config) -> Runner {
        Runner {
            mcu: Mcu::new(config, 0),
            now_ms: 0,
            circuit_closed: true,
            heartbeats: None,
            next_heartbeat_ms: 0,
            ack_events: true,
            hb_seq: 0,
            sent: Vec::new(),
        }
    }

    fn advance_to(&mut self, t: u64) {
        while self.now_ms <= t {
            let now = self.now_ms;
            if let Some(armed) = self.heartbeats
                && now >= self.next_heartbeat_ms
            {
                self.heartbeat(armed);
                self.next_heartbeat_ms = now + 100;
            }
            self.mcu.handle_switch(now, self.circuit_closed);
            while let Some(m) = self.mcu.poll_transmit(now) {
                self.sent.push((now, m));
                if self.ack_events
                    && let Message::EstopAsserted { seq, .. } = m
                {
                    let ack = Message::Ack(Ack {
                        seq,
                        kind: AckedKind::EstopAsserted,
                        result: AckResult::Accepted,
                    });
                    self.mcu.handle_message(now, &ack);
                }
            }
            if now == t {
                break;
            }
            self.now_ms += 1;
        }
    }

    fn heartbeat(&mut self, armed: bool) {
        self.hb_seq += 1;
        let m = Message::CompanionHeartbeat(CompanionHeartbeat {
            seq: self.hb_seq,
            uptime_ms: self.now_ms as u32,
            armed,
        });
        self.mcu.handle_message(self.now_ms, &m);
    }

    fn run(&mut self, name: &str, steps: &[(u64, Step)]) {
        for (t, step) in steps {
            self.advance_to(*t);
            match *step {
                D(action) => self.apply(action),
                E(expect) => self.check(name, *t, expect),
            }
        }
    }

    fn apply(&mut self, action: Do) {
        let now = self.now_ms;
        match action {
            Do::Circuit(closed) => self.circuit_closed = closed,
            Do::Hello => self.mcu.handle_message(
                now,
                &Message::Hello(Hello::this_build(Role::Companion, [1, 0, 0], 0)),
            ),
            Do::HelloOtherVersion => {
                let mut hello = Hello::this_build(Role::Companion, [9, 0, 0], 0);
                hello.protocol_version = PROTOCOL_VERSION + 1;
                self.mcu.handle_message(now, &Message::Hello(hello));
            }
            Do::Heartbeats { armed } => {
                self.heartbeats = Some(armed);
                self.next_heartbeat_ms = now;
                self.heartbeat(armed);
                self.next_heartbeat_ms = now + 100;
            }
            Do::StopHeartbeats => self.heartbeats = None,
            Do::AckEvents(on) => self.ack_events = on,
            Do::Release => self
                .mcu
                .handle_message(now, &Message::ReleaseRequest { seq: 77 }),
        }
        // Replies go out at once.
        while let Some(m) = self.mcu.poll_transmit(now) {
            self.sent.push((now, m));
        }
    }

    fn check(&self, name: &str, t: u64, expect: Expect) {
        let context = || {
            std::format!(
                "scenario {name:?} at {t} ms: {expect:?}; sent: {:?}",
                self.sent
            )
        };
        match expect {
            Expect::Output(o) => assert_eq!(self.mcu.output(), o, "{}", context()),
            Expect::Latched(l) => assert_eq!(self.mcu.latched(), l, "{}", context()),
            Expect::Switch(s) => assert_eq!(self.mcu.switch(), s, "{}", context()),
            Expect::ReleaseAnswer(result) => {
                let last = self.sent.iter().rev().find_map(|(_, m)| match m {
                    Message::Ack(a) if a.kind == AckedKind::ReleaseRequest => Some(a),
                    _ => None,
                });
                assert_eq!(
                    last,
                    Some(&Ack {
                        seq: 77,
                        kind: AckedKind::ReleaseRequest,
                        result
                    }),
                    "{}",
                    context()
                );
            }
            Expect::EventSent { source, since_ms } => assert!(
                self.sent.iter().any(|(at, m)| *at >= since_ms
                    && matches!(m, Message::EstopAsserted { source: s, .. } if *s == source)),
                "{}",
                context()
            ),
            Expect::NoEventSent => assert!(
                !self
                    .sent
                    .iter()
                    .any(|(_, m)| matches!(m, Message::EstopAsserted { .. })),
                "{}",
                context()
            ),
            Expect::HelloRefused => assert!(
                self.sent.iter().any(|(_, m)| matches!(
                    m,
                    Message::Ack(Ack {
                        kind: AckedKind::Hello,
                        result: AckResult::Refused(RefuseReason::VersionMismatch),
                        ..
                    })
                )),
                "{}",
                context()
            ),
        }
    }
}

use EstopSource::{CompanionSilent, Switch};
use OutputState::{Asserted, Released};

/// A companion that said hello and heartbeats, disarmed, from t = 0.
fn healthy() -> [(u64, Step); 2] {
    [(0, D(Do::Hello)), (0, D(Do::Heartbeats { armed: false }))]
}

#[test]
fn debounce() {
    let cases: &[(&str, &[(u64, Step)])] = &[
        (
            "the switch reads closed only after the debounce time",
            &[
                (19, E(Expect::Switch(SwitchState::Unknown))),
                (20, E(Expect::Switch(SwitchState::Closed))),
            ],
        ),
        (
            "bounces shorter than the debounce time are ignored",
            &[
                (100, D(Do::Circuit(false))),
                (110, D(Do::Circuit(true))),
                (115, D(Do::Circuit(false))),
                (130, D(Do::Circuit(true))),
                (300, E(Expect::Switch(SwitchState::Closed))),
                (300, E(Expect::Latched(None))),
                (300, E(Expect::NoEventSent)),
            ],
        ),
        (
            "a press held for the debounce time latches and is reported at once",
            &[
                (100, D(Do::Circuit(false))),
                (119, E(Expect::Latched(None))),
                (120, E(Expect::Latched(Some(Switch)))),
                (
                    120,
                    E(Expect::EventSent {
                        source: Switch,
                        since_ms: 120,
                    }),
                ),
            ],
        ),
        (
            "a short press still latches: releasing the switch does not release the e-stop",
            &[
                (100, D(Do::Circuit(false))),
                (150, D(Do::Circuit(true))),
                (500, E(Expect::Switch(SwitchState::Closed))),
                (500, E(Expect::Latched(Some(Switch)))),
            ],
        ),
    ];
    for (name, steps) in cases {
        let mut runner = Runner::new(Config::default());
        runner.run(name, &healthy());
        runner.run(name, steps);
    }
}

#[test]
fn wire_cut_and_switch_output_rules() {
    let cases: &[(&str, Config, Scenario)] = &[
        (
            "a wire cut at boot (circuit never closed) latches after the debounce time",
            Config::default(),
            &[
                (0, D(Do::Circuit(false))),
                (20, E(Expect::Switch(SwitchState::Open))),
                (20, E(Expect::Latched(Some(Switch)))),
            ],
        ),
        (
            "a press acknowledged by a healthy companion leaves the output to the daemon",
            Config::default(),
            &[
                (100, D(Do::Circuit(false))),
                (2000, E(Expect::Latched(Some(Switch)))),
                (2000, E(Expect::Output(Released))),
            ],
        ),
        (
            "a press nobody acknowledges asserts the output after the ack timeout",
            Config::default(),
            &[
                (0, D(Do::AckEvents(false))),
                (100, D(Do::Circuit(false))),
                (619, E(Expect::Output(Released))),
                (620, E(Expect::Output(Asserted))),
            ],
        ),
        (
            "with switch_asserts_output the output follows the press at once",
            Config {
                switch_asserts_output: true,
                ..Config::default()
            },
            &[
                (100, D(Do::Circuit(false))),
                (120, E(Expect::Output(Asserted))),
            ],
        ),
        (
            "a latched switch with a companion going silent asserts the output, armed or not",
            Config::default(),
            &[
                (100, D(Do::Circuit(false))),
                (200, D(Do::StopHeartbeats)),
                (500, E(Expect::Output(Released))),
                (701, E(Expect::Output(Asserted))),
            ],
        ),
    ];
    for (name, config, steps) in cases {
        let mut runner = Runner::new(*config);
        runner.run(name, &healthy());
        runner.run(name, steps);
    }
}

#[test]
fn watchdog_acts_only_while_armed() {
    let cases: &[(&str, &[(u64, Step)])] = &[
        (
            "armed, heartbeats stop: latched and asserted just after the watchdog time",
            &[
                (0, D(Do::Heartbeats { armed: true })),
                (1000, D(Do::StopHeartbeats)),
                // The last heartbeat was at 1000 ms; the watchdog is 500 ms.
                (1500, E(Expect::Output(Released))),
                (1501, E(Expect::Output(Asserted))),
                (1501, E(Expect::Latched(Some(CompanionSilent)))),
                (
                    1501,
                    E(Expect::EventSent {
                        source: CompanionSilent,
                        since_ms: 1501,
                    }),
                ),
            ],
        ),
        (
            "disarmed, heartbeats stop: nothing happens",
            &[
                (1000, D(Do::StopHeartbeats)),
                (5000, E(Expect::Output(Released))),
                (5000, E(Expect::Latched(None))),
            ],
        ),
        (
            "disarmed before going silent: the last armed state counts",
            &[
                (0, D(Do::Heartbeats { armed: true })),
                (1000, D(Do::Heartbeats { armed: false })),
                (1050, D(Do::StopHeartbeats)),
                (5000, E(Expect::Latched(None))),
            ],
        ),
        (
            "never heard a heartbeat: the watchdog is not armed",
            &[(0, D(Do::StopHeartbeats)), (5000, E(Expect::Latched(None)))],
        ),
        (
            "heartbeats from an incompatible companion do not feed the watchdog",
            &[
                (0, D(Do::Heartbeats { armed: true })),
                (1000, D(Do::HelloOtherVersion)),
                (1000, E(Expect::HelloRefused)),
                (1501, E(Expect::Latched(Some(CompanionSilent)))),
            ],
        ),
        (
            "the companion coming back does not release the latch",
            &[
                (0, D(Do::Heartbeats { armed: true })),
                (1000, D(Do::StopHeartbeats)),
                (2000, D(Do::Heartbeats { armed: true })),
                (3000, E(Expect::Latched(Some(CompanionSilent)))),
                (3000, E(Expect::Output(Asserted))),
            ],
        ),
    ];
    for (name, steps) in cases {
        let mut runner = Runner::new(Config::default());
        runner.run(name, &[(0, D(Do::Hello))]);
        if !matches!(
            steps.first(),
            Some((0, D(Do::Heartbeats { .. } | Do::StopHeartbeats)))
        ) {
            runner.run(name, &[(0, D(Do::Heartbeats { armed: false }))]);
        }
        runner.run(name, steps);
    }
}

#[test]
fn release_rules() {
    let refused = |r| Expect::ReleaseAnswer(AckResult::Refused(r));
    let cases: &[(&str, &[(u64, Step)])] = &[
        (
            "nothing latched: refused",
            &[
                (100, D(Do::Release)),
                (100, E(refused(RefuseReason::NotLatched))),
            ],
        ),
        (
            "switch still open: refused, still latched",
            &[
                (100, D(Do::Circuit(false))),
                (200, D(Do::Release)),
                (200, E(refused(RefuseReason::SwitchOpen))),
                (200, E(Expect::Latched(Some(Switch)))),
            ],
        ),
        (
            "switch closed again and companion healthy: accepted, output released",
            &[
                (0, D(Do::AckEvents(false))),
                (100, D(Do::Circuit(false))),
                (200, D(Do::Circuit(true))),
                (800, E(Expect::Output(Asserted))),
                (800, D(Do::Release)),
                (800, E(Expect::ReleaseAnswer(AckResult::Accepted))),
                (800, E(Expect::Latched(None))),
                (800, E(Expect::Output(Released))),
            ],
        ),
        (
            "watchdog latch while the companion is still silent: refused",
            &[
                (0, D(Do::Heartbeats { armed: true })),
                (100, D(Do::StopHeartbeats)),
                (1000, D(Do::Release)),
                (1000, E(refused(RefuseReason::CompanionNotHealthy))),
                (1000, E(Expect::Output(Asserted))),
            ],
        ),
        (
            "watchdog latch, companion back and switch closed: accepted",
            &[
                (0, D(Do::Heartbeats { armed: true })),
                (100, D(Do::StopHeartbeats)),
                (1000, D(Do::Heartbeats { armed: true })),
                (1050, D(Do::Release)),
                (1050, E(Expect::ReleaseAnswer(AckResult::Accepted))),
                (1050, E(Expect::Output(Released))),
                (3000, E(Expect::Latched(None))),
            ],
        ),
        (
            "a wire cut cannot be released until repaired",
            &[
                (100, D(Do::Circuit(false))),
                (5000, D(Do::Release)),
                (5000, E(refused(RefuseReason::SwitchOpen))),
            ],
        ),
    ];
    for (name, steps) in cases {
        let mut runner = Runner::new(Config::default());
        runner.run(name, &healthy());
        runner.run(name, steps);
    }
}

#[test]
fn release_before_hello_is_refused_and_the_hello_is_repeated() {
    let mut runner = Runner::new(Config::default());
    runner.run(
        "no hello",
        &[
            (0, D(Do::Circuit(false))),
            (100, D(Do::Release)),
            (
                100,
                E(Expect::ReleaseAnswer(AckResult::Refused(
                    RefuseReason::HelloRequired,
                ))),
            ),
            // Nobody acknowledged and nobody is healthy: the MCU acts alone.
            (100, E(Expect::Output(Asserted))),
            (2500, E(Expect::Latched(Some(Switch)))),
        ],
    );
    let hellos = runner
        .sent
        .iter()
        .filter(|(_, m)| matches!(m, Message::Hello(_)))
        .count();
    assert_eq!(hellos, 3, "hello at 0, 1000 and 2000 ms: {:?}", runner.sent);
}

#[test]
fn an_unacknowledged_event_is_repeated_and_stops_once_acknowledged() {
    let mut runner = Runner::new(Config::default());
    runner.run("repeat", &healthy());
    runner.run(
        "repeat",
        &[
            (0, D(Do::AckEvents(false))),
            (100, D(Do::Circuit(false))),
            (420, D(Do::AckEvents(true))),
        ],
    );
    runner.advance_to(1000);
    let times: Vec<u64> = runner
        .sent
        .iter()
        .filter(|(_, m)| matches!(m, Message::EstopAsserted { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(times, [120, 220, 320, 420, 520], "{:?}", runner.sent);
}

#[test]
fn poll_timeout_names_the_next_deadline() {
    let mut mcu = Mcu::new(Config::default(), 0);
    while mcu.poll_transmit(0).is_some() {}
    assert_eq!(mcu.poll_timeout(), 100, "next heartbeat");
    mcu.handle_switch(50, false);
    assert_eq!(mcu.poll_timeout(), 70, "end of the debounce");
}
