use super::*;
use crate::link::dialect::PARAM_VALUE_DATA;

const NAMES: &[(&str, f64, MavParamType)] = &[
    ("ARMING_CHECK", 1.0, MavParamType::MAV_PARAM_TYPE_INT32),
    ("BATT_CAPACITY", 3300.0, MavParamType::MAV_PARAM_TYPE_INT32),
    ("RTL_ALT", 1500.0, MavParamType::MAV_PARAM_TYPE_INT32),
    ("WPNAV_SPEED", 1000.0, MavParamType::MAV_PARAM_TYPE_REAL32),
    ("WPNAV_SPEED_DN", 150.0, MavParamType::MAV_PARAM_TYPE_REAL32),
];

fn autopilot() -> MavHeader {
    MavHeader {
        system_id: 1,
        component_id: 1,
        sequence: 0,
    }
}

fn value_at(kind: AutopilotKind, index: u16) -> MavMessage {
    let (name, value, kind_of_value) = NAMES[usize::from(index)];
    MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
        param_value: encode(Some(kind), kind_of_value, value),
        param_count: NAMES.len() as u16,
        param_index: index,
        param_id: name.into(),
        param_type: kind_of_value,
    })
}

/// What went out, as text: `list`, `read N`, `set NAME WIRE`.
fn drain(t: &mut ParamTable, now: Instant) -> Vec<String> {
    std::iter::from_fn(|| t.poll_transmit(now))
        .map(|m| match m {
            MavMessage::PARAM_REQUEST_LIST(p) => {
                assert_eq!((p.target_system, p.target_component), (1, 1));
                "list".to_owned()
            }
            MavMessage::PARAM_REQUEST_READ(p) => format!("read {}", p.param_index),
            MavMessage::PARAM_SET(p) => {
                format!("set {} {}", p.param_id.to_str().unwrap(), p.param_value)
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

fn started(kind: AutopilotKind, t0: Instant) -> ParamTable {
    let mut t = ParamTable::new();
    assert_eq!(t.progress().state, DownloadState::NotStarted);
    assert!(t.poll_transmit(t0).is_none());
    t.start(t0, kind, 1, 1);
    assert_eq!(drain(&mut t, t0), ["list"]);
    t
}

/// The stream's losses, as table rows: which indices arrive in the stream, which answer
/// their gap request (and at which attempt), and what the download ends as.
#[test]
fn downloads_fill_gaps_by_index_and_report_progress() {
    struct Row {
        name: &'static str,
        streamed: &'static [u16],
        /// (index, attempt that is answered; 0: never)
        gaps: &'static [(u16, u8)],
        state: DownloadState,
        missing: usize,
    }
    let rows = [
        Row {
            name: "whole stream",
            streamed: &[0, 1, 2, 3, 4],
            gaps: &[],
            state: DownloadState::Complete,
            missing: 0,
        },
        Row {
            name: "two lost, answered at once",
            streamed: &[0, 2, 4],
            gaps: &[(1, 1), (3, 1)],
            state: DownloadState::Complete,
            missing: 0,
        },
        Row {
            name: "the last lost, answered at the third ask",
            streamed: &[0, 1, 2, 3],
            gaps: &[(4, 3)],
            state: DownloadState::Complete,
            missing: 0,
        },
        Row {
            name: "out of order, one never answered",
            streamed: &[4, 0, 2, 1],
            gaps: &[(3, 0)],
            state: DownloadState::Incomplete,
            missing: 1,
        },
    ];
    for kind in [AutopilotKind::Ardupilot, AutopilotKind::Px4] {
        for row in &rows {
            let t0 = Instant::now();
            let mut t = started(kind, t0);
            let mut now = t0;
            for index in row.streamed {
                now += Duration::from_millis(10);
                t.handle_message(now, &autopilot(), &value_at(kind, *index));
                assert!(drain(&mut t, now).is_empty(), "{}", row.name);
            }
            let p = t.progress();
            assert_eq!(p.state, DownloadState::Downloading, "{}", row.name);
            assert_eq!(p.received, row.streamed.len(), "{}", row.name);
            assert_eq!(p.count, Some(NAMES.len() as u16), "{}", row.name);
            // Quiet: the gaps are asked for by index.
            assert_eq!(t.poll_timeout(), Some(now + LIST_QUIET), "{}", row.name);
            now += LIST_QUIET;
            let mut attempt = 1;
            let mut asked = drain(&mut t, now);
            loop {
                let expected: Vec<String> = (row.gaps.iter())
                    .filter(|(_, answered)| *answered == 0 || *answered >= attempt)
                    .map(|(i, _)| format!("read {i}"))
                    .collect();
                assert_eq!(asked, expected, "{} attempt {attempt}", row.name);
                for (index, answered) in row.gaps {
                    if *answered == attempt {
                        t.handle_message(now, &autopilot(), &value_at(kind, *index));
                    }
                }
                now += RETRY_AFTER;
                attempt += 1;
                asked = drain(&mut t, now);
                if asked.is_empty() {
                    break;
                }
            }
            let p = t.progress();
            assert_eq!(
                (p.state, p.missing),
                (row.state, row.missing),
                "{}",
                row.name
            );
            assert!(t.poll_timeout().is_none(), "{}", row.name);
            // Every value decoded as the firmware encodes it.
            if row.state == DownloadState::Complete {
                assert_eq!(t.get("RTL_ALT").unwrap().value, 1500.0, "{}", row.name);
                assert_eq!(t.get("RTL_ALT").unwrap().kind, "int32");
            }
        }
    }
}

#[test]
fn a_silent_autopilot_is_asked_again_then_given_up() {
    let t0 = Instant::now();
    let mut t = started(AutopilotKind::Ardupilot, t0);
    let mut now = t0;
    let mut sent = 1;
    for _ in 0..5 {
        now += LIST_QUIET;
        sent += drain(&mut t, now).len();
    }
    assert_eq!(sent, usize::from(LIST_ATTEMPTS));
    assert_eq!(t.progress().state, DownloadState::Incomplete);
    assert_eq!(t.progress().count, None);
}

#[test]
fn broadcasts_strangers_and_bad_values() {
    let t0 = Instant::now();
    let mut t = started(AutopilotKind::Ardupilot, t0);
    // ArduPilot's broadcast of a changed value has index 65535: taken by name.
    let broadcast = MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
        param_value: 700.0,
        param_count: NAMES.len() as u16,
        param_index: u16::MAX,
        param_id: "WPNAV_SPEED".into(),
        param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
    });
    t.handle_message(t0, &autopilot(), &broadcast);
    assert_eq!(t.get("WPNAV_SPEED").unwrap().value, 700.0);
    assert_eq!(t.get("WPNAV_SPEED").unwrap().index, None);
    assert_eq!(t.progress().received, 0);
    // Another sender (a GCS's echo), a NaN, an empty name, an absurd count: ignored.
    let gcs = MavHeader {
        system_id: 255,
        ..autopilot()
    };
    t.handle_message(t0, &gcs, &value_at(AutopilotKind::Ardupilot, 0));
    assert!(t.get("ARMING_CHECK").is_none());
    for (name, value, count) in [("RTL_ALT", f32::NAN, 5), ("", 1.0, 5)] {
        t.handle_message(
            t0,
            &autopilot(),
            &MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
                param_value: value,
                param_count: count,
                param_index: 2,
                param_id: name.into(),
                param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
            }),
        );
    }
    assert!(t.get("RTL_ALT").is_none());
    t.handle_message(
        t0,
        &autopilot(),
        &MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
            param_value: 1.0,
            param_count: u16::MAX,
            param_index: 60000,
            param_id: "HUGE".into(),
            param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
        }),
    );
    // The broadcast's count stands; the absurd one is not taken.
    assert_eq!(t.progress().count, Some(5));
    // Listing by prefix, bounded.
    for i in 0..5 {
        t.handle_message(t0, &autopilot(), &value_at(AutopilotKind::Ardupilot, i));
    }
    let (page, total) = t.list("WPNAV_", 1);
    assert_eq!(total, 2);
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].name, "WPNAV_SPEED");
    assert_eq!(t.list("", 100).1, 6);
    assert_eq!(t.list("ZZ", 100).1, 0);
}

/// Writes, as table rows: the value asked, the autopilot's echoes by attempt, the outcome.
#[test]
fn writes_are_confirmed_by_their_echo_or_reported() {
    struct Row {
        name: &'static str,
        kind: AutopilotKind,
        param: &'static str,
        value: f64,
        /// The wire value the PARAM_SET carries, as printed.
        wire: &'static str,
        /// (attempt, the echoed value) — an echo of another value is a stale broadcast.
        echoes: &'static [(u8, f64)],
        outcome: WriteOutcome,
    }
    let rows = [
        Row {
            name: "float, echoed at once",
            kind: AutopilotKind::Ardupilot,
            param: "WPNAV_SPEED",
            value: 500.0,
            wire: "500",
            echoes: &[(1, 500.0)],
            outcome: WriteOutcome::Confirmed {
                old: 1000.0,
                new: 500.0,
            },
        },
        Row {
            name: "ArduPilot integer cast, first lost",
            kind: AutopilotKind::Ardupilot,
            param: "RTL_ALT",
            value: 2000.0,
            wire: "2000",
            echoes: &[(2, 2000.0)],
            outcome: WriteOutcome::Confirmed {
                old: 1500.0,
                new: 2000.0,
            },
        },
        Row {
            name: "PX4 integer bytewise",
            kind: AutopilotKind::Px4,
            param: "RTL_ALT",
            value: 2000.0,
            // 2000 as the bytes of an i32: a denormal float.
            wire: "0.000000000000000000000000000000000000000002803",
            echoes: &[(1, 2000.0)],
            outcome: WriteOutcome::Confirmed {
                old: 1500.0,
                new: 2000.0,
            },
        },
        Row {
            name: "the autopilot keeps its value",
            kind: AutopilotKind::Ardupilot,
            param: "WPNAV_SPEED",
            value: 500.0,
            wire: "500",
            echoes: &[(1, 1000.0), (2, 1000.0), (3, 1000.0)],
            outcome: WriteOutcome::NotConfirmed {
                asked: 500.0,
                autopilot: 1000.0,
            },
        },
    ];
    for row in rows {
        let t0 = Instant::now();
        let mut t = started(row.kind, t0);
        for i in 0..5 {
            t.handle_message(t0, &autopilot(), &value_at(row.kind, i));
        }
        let id = t.set(row.param, row.value).unwrap();
        let mut now = t0;
        let mut outcome = None;
        for attempt in 1..=ATTEMPTS_MAX + 1 {
            let sent = drain(&mut t, now);
            if attempt <= ATTEMPTS_MAX && outcome.is_none() {
                assert_eq!(
                    sent,
                    [format!("set {} {}", row.param, row.wire)],
                    "{}",
                    row.name
                );
            }
            for (_, echo) in row.echoes.iter().filter(|(a, _)| *a == attempt) {
                let (_, _, kind_of_value) = NAMES.iter().find(|n| n.0 == row.param).unwrap();
                let message = MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
                    param_value: encode(Some(row.kind), *kind_of_value, *echo),
                    param_count: 5,
                    param_index: u16::MAX,
                    param_id: row.param.into(),
                    param_type: *kind_of_value,
                });
                t.handle_message(now, &autopilot(), &message);
            }
            if let Some((got, o)) = t.poll_outcome() {
                assert_eq!(got, id);
                outcome = Some(o);
            }
            now += RETRY_AFTER;
        }
        assert_eq!(outcome, Some(row.outcome), "{}", row.name);
    }
}

#[test]
fn writes_that_do_not_fit_or_lose_the_link() {
    let t0 = Instant::now();
    let mut t = started(AutopilotKind::Ardupilot, t0);
    assert!(t.set("RTL_ALT", 1.0).unwrap_err().contains("not been read"));
    for i in 0..5 {
        t.handle_message(t0, &autopilot(), &value_at(AutopilotKind::Ardupilot, i));
    }
    for bad in [1.5, f64::NAN, 3e9, f64::INFINITY] {
        let why = t.set("RTL_ALT", bad).unwrap_err();
        assert!(why.contains("integer (int32)"), "{why}");
    }
    assert!(t.set("WPNAV_SPEED", f64::NAN).is_err());
    let first = t.set("WPNAV_SPEED", 600.0).unwrap();
    let second = t.set("WPNAV_SPEED", 700.0).unwrap();
    assert!(matches!(t.poll_outcome(), Some((id, WriteOutcome::Aborted(_))) if id == first));
    assert_eq!(drain(&mut t, t0), ["set WPNAV_SPEED 700"]);
    t.stop();
    assert!(matches!(t.poll_outcome(), Some((id, WriteOutcome::Aborted(_))) if id == second));
    assert!(t.poll_transmit(t0).is_none());
    // What was read stands.
    assert_eq!(t.get("WPNAV_SPEED").unwrap().value, 1000.0);
}
