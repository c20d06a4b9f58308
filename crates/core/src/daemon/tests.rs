//! The Core's own decisions that no flight shows: the sensor input, the bridge's start-up
//! rule, the watchdog's schedule. Flights with the e-stop are `flight::tests::stop_during`.

use std::time::{Duration, Instant};

use super::*;

fn options() -> CoreOptions {
    CoreOptions::from_config(&Config::default(), None)
}

fn report(core: &mut Core, now: Instant) -> StatusReport {
    core.status(now, FrameCounters::default(), 0)
}

#[test]
fn the_cpu_temperature_is_an_input_and_the_health_alert_follows_it_with_hysteresis() {
    let t0 = Instant::now();
    let mut core = Core::new(options(), t0);
    let hot = |summary: &HealthSummary| summary.recent_alerts.iter().any(|a| a.alert == "cpu_hot");
    let summary = {
        let report = report(&mut core, t0);
        core.assess_health(&report)
    };
    assert!(!hot(&summary), "no reading, no alert: {summary:?}");
    core.handle(t0, Input::CpuTemperature(Some(80.0)));
    let summary = {
        let report = report(&mut core, t0);
        core.assess_health(&report)
    };
    assert!(
        hot(&summary),
        "80 °C is over the default 75 °C: {summary:?}"
    );
    assert!(
        summary.reasons.iter().any(|r| r.contains("CPU at 80.0")),
        "{summary:?}"
    );
    // Just under the threshold is still hot (hysteresis); well under clears the reason.
    core.handle(t0, Input::CpuTemperature(Some(74.0)));
    let summary = {
        let report = report(&mut core, t0);
        core.assess_health(&report)
    };
    assert!(
        summary.reasons.iter().any(|r| r.contains("CPU at 74.0")),
        "{summary:?}"
    );
    core.handle(t0, Input::CpuTemperature(Some(50.0)));
    let summary = {
        let report = report(&mut core, t0);
        core.assess_health(&report)
    };
    assert!(
        !summary.reasons.iter().any(|r| r.contains("CPU")),
        "{summary:?}"
    );
}

#[test]
fn a_required_bridge_that_never_says_hello_stops_the_daemon_once_after_its_timeout() {
    let t0 = Instant::now();
    let mut config = Config::default();
    config.bridge.enabled = true;
    config.bridge.required = true;
    config.bridge.startup_timeout_ms = 3000;
    let mut core = Core::new(CoreOptions::from_config(&config, None), t0);
    let fatal = |core: &mut Core, now: Instant| {
        while core.poll_transmit(now).is_some() {}
        std::iter::from_fn(|| core.poll_event())
            .filter_map(|e| match e {
                Event::Fatal { reason, .. } => Some(reason),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    core.handle(t0, Input::Bridge(BridgeInput::Connected));
    assert!(fatal(&mut core, t0).is_empty());
    let late = t0 + Duration::from_millis(3001);
    core.handle(late, Input::Tick);
    let reasons = fatal(&mut core, late);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("bridge.required = true but no compatible bridge")
            && reasons[0].contains("within 3000 ms"),
        "{reasons:?}"
    );
    core.handle(late, Input::Tick);
    assert!(fatal(&mut core, late).is_empty(), "reported once");
}

#[test]
fn the_watchdog_ping_is_an_event_at_once_then_every_interval() {
    let t0 = Instant::now();
    let mut core = Core::new(
        CoreOptions::from_config(&Config::default(), Some(Duration::from_secs(5))),
        t0,
    );
    let pings = |core: &mut Core, now: Instant| {
        core.handle(now, Input::Tick);
        while core.poll_transmit(now).is_some() {}
        std::iter::from_fn(|| core.poll_event())
            .filter(|e| *e == Event::WatchdogPing)
            .count()
    };
    assert_eq!(pings(&mut core, t0), 1);
    assert_eq!(pings(&mut core, t0 + Duration::from_secs(4)), 0);
    assert!(core.poll_timeout() <= t0 + Duration::from_secs(5));
    assert_eq!(pings(&mut core, t0 + Duration::from_secs(5)), 1);
}
