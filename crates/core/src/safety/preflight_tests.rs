//! Table-driven: each misconfiguration of the autopilot against the envelope, and what the
//! check says about it (parameter, severity, the value to set).

use std::collections::HashMap;

use super::*;

/// SITL's ArduCopter as `copter.parm` leaves it, but with the speeds, return altitude, battery
/// failsafe and fence a careful operator sets for the default envelope (5 m/s, 120 m, 30 %).
fn ardupilot_good() -> HashMap<&'static str, f64> {
    HashMap::from([
        ("WPNAV_SPEED", 500.0),
        ("RTL_SPEED", 500.0),
        ("RTL_ALT", 1500.0),
        ("BATT_MONITOR", 4.0),
        ("BATT_CAPACITY", 3300.0),
        ("BATT_LOW_MAH", 990.0),
        ("BATT_FS_LOW_ACT", 2.0),
        ("FENCE_ENABLE", 1.0),
        ("FENCE_TYPE", 3.0),
        ("FENCE_ACTION", 1.0),
        ("FENCE_ALT_MAX", 120.0),
        ("FENCE_RADIUS", 300.0),
    ])
}

fn px4_good() -> HashMap<&'static str, f64> {
    HashMap::from([
        ("MPC_XY_CRUISE", 5.0),
        ("MPC_XY_VEL_MAX", 12.0),
        ("RTL_RETURN_ALT", 60.0),
        ("BAT1_CAPACITY", 5000.0),
        ("BAT_LOW_THR", 0.3),
        ("COM_LOW_BAT_ACT", 3.0),
        ("GF_ACTION", 3.0),
        ("GF_MAX_HOR_DIST", 300.0),
        ("GF_MAX_VER_DIST", 120.0),
    ])
}

fn run(
    kind: AutopilotKind,
    params: &HashMap<&'static str, f64>,
    missing: &[&'static str],
    config: &EnvelopeConfig,
) -> (Vec<Finding>, MarginSpeed, f64) {
    let value = |name: &str| params.get(name).copied();
    check(
        &Parameters {
            kind,
            value: &value,
            reading: false,
            missing,
        },
        config,
    )
}

#[test]
fn a_well_configured_autopilot_has_no_findings() {
    let config = EnvelopeConfig::default();
    for (kind, params) in [
        (AutopilotKind::Ardupilot, ardupilot_good()),
        (AutopilotKind::Px4, px4_good()),
    ] {
        let (findings, basis, margin) = run(kind, &params, &[], &config);
        assert!(findings.is_empty(), "{kind:?}: {findings:#?}");
        assert_eq!(basis.source, "envelope.speed_horizontal_m_s_max");
        assert_eq!(margin, config.margin_horizontal_m);
    }
}

/// (name, autopilot, changes, expected parameter, severity, text in set_to, text in message)
type Case<'a> = (
    &'a str,
    AutopilotKind,
    &'a [(&'a str, f64)],
    &'a str,
    Severity,
    &'a str,
    &'a str,
);

#[test]
fn each_misconfiguration_is_reported_with_the_parameter_and_the_value_to_set() {
    use AutopilotKind::{Ardupilot as AP, Px4 as PX4};
    use Severity::{Error as E, Warning as W};
    // (name, autopilot, changes, expected parameter, severity, text in set_to, text in message)
    let cases: &[Case] = &[
        (
            "guided speed above the limit",
            AP,
            &[("WPNAV_SPEED", 1000.0)],
            "WPNAV_SPEED",
            W,
            "500 or less",
            "grow from 10 m to 24.4 m",
        ),
        (
            "RTL speed above the limit",
            AP,
            &[("RTL_SPEED", 800.0)],
            "RTL_SPEED",
            W,
            "500 or less",
            "autopilot's own return",
        ),
        (
            "RTL speed 0 follows a fast WPNAV_SPEED",
            AP,
            &[("RTL_SPEED", 0.0), ("WPNAV_SPEED", 1000.0)],
            "RTL_SPEED",
            W,
            "not 0",
            "fly at WPNAV_SPEED (10 m/s)",
        ),
        (
            "return altitude above the ceiling",
            AP,
            &[("RTL_ALT", 15000.0)],
            "RTL_ALT",
            E,
            "11500 or less",
            "climb through the ceiling",
        ),
        (
            "voltage-only battery monitor",
            AP,
            &[("BATT_MONITOR", 3.0)],
            "BATT_MONITOR",
            E,
            "measures current",
            "30% reserve cannot be checked",
        ),
        (
            "no battery monitor",
            AP,
            &[("BATT_MONITOR", 0.0)],
            "BATT_MONITOR",
            E,
            "4 (analog",
            "disabled",
        ),
        (
            "no battery capacity",
            AP,
            &[("BATT_CAPACITY", 0.0)],
            "BATT_CAPACITY",
            E,
            "capacity in mAh",
            "no percentage",
        ),
        (
            "no battery failsafe",
            AP,
            &[("BATT_FS_LOW_ACT", 0.0)],
            "BATT_FS_LOW_ACT",
            W,
            "2 (RTL)",
            "BATT_LOW_MAH to 990",
        ),
        (
            "battery failsafe after the reserve",
            AP,
            &[("BATT_LOW_MAH", 300.0)],
            "BATT_LOW_MAH",
            W,
            "990 or more",
            "after the daemon's 30% reserve",
        ),
        (
            "fence off",
            AP,
            &[("FENCE_ENABLE", 0.0)],
            "FENCE_ENABLE",
            W,
            "1",
            "FENCE_ALT_MAX 120 or less",
        ),
        (
            "fence ceiling above the envelope's",
            AP,
            &[("FENCE_ALT_MAX", 150.0)],
            "FENCE_ALT_MAX",
            W,
            "120 or less",
            "above the envelope's",
        ),
        (
            "fence without a ceiling",
            AP,
            &[("FENCE_TYPE", 2.0)],
            "FENCE_TYPE",
            W,
            "3",
            "no ceiling",
        ),
        (
            "fence circle wider than the envelope",
            AP,
            &[("FENCE_RADIUS", 500.0)],
            "FENCE_RADIUS",
            W,
            "300 or less",
            "wider",
        ),
        (
            "fence that only reports",
            AP,
            &[("FENCE_ACTION", 0.0)],
            "FENCE_ACTION",
            W,
            "1 (RTL or land)",
            "only reports",
        ),
        (
            "PX4 cruise above the limit",
            PX4,
            &[("MPC_XY_CRUISE", 8.0)],
            "MPC_XY_CRUISE",
            W,
            "5 or less",
            "grow from 10 m to 16.72 m",
        ),
        (
            "PX4 return altitude above the ceiling",
            PX4,
            &[("RTL_RETURN_ALT", 130.0)],
            "RTL_RETURN_ALT",
            E,
            "115 or less",
            "climb through the ceiling",
        ),
        (
            "PX4 voltage-only estimate",
            PX4,
            &[("BAT1_CAPACITY", -1.0)],
            "BAT1_CAPACITY",
            W,
            "capacity in mAh",
            "voltage alone",
        ),
        (
            "PX4 battery warning only",
            PX4,
            &[("COM_LOW_BAT_ACT", 0.0)],
            "COM_LOW_BAT_ACT",
            W,
            "3 (return",
            "only warns",
        ),
        (
            "PX4 low threshold after the reserve",
            PX4,
            &[("BAT_LOW_THR", 0.15)],
            "BAT_LOW_THR",
            W,
            "0.3 or more",
            "low at 15%",
        ),
        (
            "PX4 geofence does nothing",
            PX4,
            &[("GF_ACTION", 1.0)],
            "GF_ACTION",
            W,
            "2 (hold)",
            "does nothing",
        ),
        (
            "PX4 geofence without a distance",
            PX4,
            &[("GF_MAX_HOR_DIST", 0.0)],
            "GF_MAX_HOR_DIST",
            W,
            "300 or less",
            "no distance limit",
        ),
        (
            "PX4 geofence ceiling above the envelope's",
            PX4,
            &[("GF_MAX_VER_DIST", 200.0)],
            "GF_MAX_VER_DIST",
            W,
            "120 or less",
            "above the envelope's",
        ),
    ];
    let config = EnvelopeConfig::default();
    for (name, kind, changes, parameter, severity, set_to, message) in cases {
        let mut params = match kind {
            AP => ardupilot_good(),
            _ => px4_good(),
        };
        for (key, value) in *changes {
            params.insert(key, *value);
        }
        let (findings, _, _) = run(*kind, &params, &[], &config);
        let found = findings
            .iter()
            .find(|f| f.parameter == *parameter)
            .unwrap_or_else(|| panic!("{name}: no finding on {parameter}: {findings:#?}"));
        assert_eq!(found.severity, *severity, "{name}: {found:?}");
        assert!(
            found.set_to.contains(set_to),
            "{name}: set_to {:?}",
            found.set_to
        );
        assert!(
            found.message.contains(message),
            "{name}: {:?}",
            found.message
        );
        assert_eq!(found.value, params.get(parameter).copied(), "{name}");
        // Nothing else is blamed: every finding is about a parameter the case changed.
        assert!(
            findings
                .iter()
                .all(|f| changes.iter().any(|(key, _)| *key == f.parameter)),
            "{name}: {findings:#?}"
        );
    }
}

#[test]
fn the_margins_are_sized_from_the_fastest_speed_and_name_it() {
    let config = EnvelopeConfig::default();
    let mut params = ardupilot_good();
    params.insert("WPNAV_SPEED", 1000.0);
    params.insert("RTL_SPEED", 1200.0);
    let (_, basis, margin) = run(AutopilotKind::Ardupilot, &params, &[], &config);
    assert_eq!(basis.source, "RTL_SPEED");
    assert_eq!(basis.speed_m_s, 12.0);
    // 12 × 0.24 + 144 / 5 + 2 = 33.68 m.
    assert!((margin - 33.68).abs() < 1e-9, "{margin}");
    // PX4's cruise is capped by MPC_XY_VEL_MAX.
    let mut params = px4_good();
    params.insert("MPC_XY_CRUISE", 9.0);
    params.insert("MPC_XY_VEL_MAX", 7.0);
    let (_, basis, _) = run(AutopilotKind::Px4, &params, &[], &config);
    assert_eq!((basis.source, basis.speed_m_s), ("MPC_XY_CRUISE", 7.0));
    // A margin that leaves no room is an error naming the speed that drove it.
    let small = EnvelopeConfig {
        distance_from_home_m_max: 20.0,
        ..EnvelopeConfig::default()
    };
    let mut params = ardupilot_good();
    params.insert("WPNAV_SPEED", 1000.0);
    let (findings, _, _) = run(AutopilotKind::Ardupilot, &params, &[], &small);
    let error = findings.first().unwrap();
    assert_eq!(error.severity, Severity::Error);
    assert!(
        error.message.contains("sized from WPNAV_SPEED"),
        "{error:?}"
    );
    assert_eq!(error.set_to, "500 or less");
}

#[test]
fn parameters_the_autopilot_does_not_answer_are_named() {
    let config = EnvelopeConfig::default();
    let mut params = ardupilot_good();
    params.remove("RTL_ALT");
    let (findings, _, _) = run(AutopilotKind::Ardupilot, &params, &["RTL_ALT"], &config);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].parameter, "RTL_ALT");
    assert_eq!(findings[0].value, None);
    assert!(is_readable("RTL_ALT") && is_readable("MPC_XY_CRUISE"));
    assert!(!is_readable("SYSID_THISMAV"));
}
