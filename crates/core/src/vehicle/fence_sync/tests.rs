//! The procedure's own edges; the whole mirror against the simulated ArduCopter and PX4 is in
//! the simulator's crate (`crates/sim`, the `fence` tests).

use super::*;
use crate::safety::envelope_config::EnvelopeConfig;
use crate::safety::fence_mirror::{FenceAction, plan};
use crate::vehicle::modes::AutopilotKind;

fn sync() -> FenceSync {
    FenceSync::new(MissionOptions {
        item_timeout: Duration::from_millis(1500),
        retries_max: 2,
        source_system: 255,
        source_component: 190,
    })
}

fn target() -> MissionTarget {
    MissionTarget {
        system: 1,
        component: 1,
        autopilot: AutopilotKind::Ardupilot,
    }
}

#[test]
fn without_an_autopilot_nothing_starts() {
    let mut s = sync();
    let p = plan(
        &EnvelopeConfig::default(),
        AutopilotKind::Ardupilot,
        FenceAction::ReturnHome,
    )
    .unwrap();
    assert_eq!(
        s.mirror(Instant::now(), p).unwrap_err(),
        "no autopilot is connected"
    );
    assert!(!s.is_busy());
}

#[test]
fn a_silent_autopilot_ends_the_run_with_the_reason_and_an_unknown_match() {
    let mut s = sync();
    s.set_target(Some(target()));
    let p = plan(
        &EnvelopeConfig::default(),
        AutopilotKind::Ardupilot,
        FenceAction::ReturnHome,
    )
    .unwrap();
    let start = Instant::now();
    s.check(start, p.clone()).unwrap();
    assert!(s.check(start, p).unwrap_err().contains("already running"));
    let mut now = start;
    let mut sent = 0;
    while s.is_busy() && now < start + Duration::from_secs(60) {
        while s.poll_transmit(now).is_some() {
            sent += 1;
        }
        now = s
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100))
            .max(now);
        now += Duration::from_millis(1);
    }
    assert!(sent >= 2, "the request is re-sent");
    let Some(FenceSyncEvent::Finished {
        matches,
        error,
        job,
        ..
    }) = s.poll_event()
    else {
        panic!("one Finished");
    };
    assert_eq!((job, matches), (FenceJob::Check, None));
    assert!(error.unwrap().contains("fence download failed"));
    assert_eq!(s.status().matches_envelope, None);
    assert!(s.poll_event().is_none());
}

#[test]
fn link_loss_mid_run_ends_it_once() {
    let mut s = sync();
    s.set_target(Some(target()));
    let p = plan(
        &EnvelopeConfig::default(),
        AutopilotKind::Ardupilot,
        FenceAction::Land,
    )
    .unwrap();
    s.mirror(Instant::now(), p).unwrap();
    s.set_target(None);
    assert!(matches!(
        s.poll_event(),
        Some(FenceSyncEvent::Finished {
            job: FenceJob::Mirror,
            matches: None,
            ..
        })
    ));
    assert!(s.poll_event().is_none());
    assert!(!s.is_busy());
}
