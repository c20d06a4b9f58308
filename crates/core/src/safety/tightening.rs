//! An ADMIN's change to the envelope in force (`set_envelope`), before the envelope judges it
//! (pure): which `[envelope]` keys may change at run time, and the new section with the
//! changes applied, parsed and checked as the configuration file's is.
//!
//! Only the limits and zones that [`super::tighten`] compares may change: each must end at
//! least as strict as it was, and `tighten` says so. Everything else (how often the monitor
//! checks, the link latency and braking the margins are sized from, the breach action) is the
//! configuration file's, read at start: a change there is not a tightening `tighten` can
//! judge.

use serde_json::{Map, Value};

use crate::config::EnvelopeConfig;

/// The `[envelope]` keys `set_envelope` may change.
pub const TIGHTENABLE: &[&str] = &[
    "altitude_m_min",
    "altitude_m_max",
    "margin_horizontal_m",
    "margin_vertical_m",
    "speed_horizontal_m_s_max",
    "speed_vertical_m_s_max",
    "distance_from_home_m_max",
    "battery_reserve_percent",
    "gps_fix_type_min",
    "gps_satellites_min",
    "gps_hdop_max",
    "breach_hold_s",
    "keep_in",
    "keep_out",
];

/// `current` with `changes` applied: each key given replaces its value (a zone list replaces
/// the whole list: to add a zone, send the current ones too), the others stay. Refused, with
/// what would be accepted, when nothing is given, a key is not [`TIGHTENABLE`], a value does
/// not parse, or the result breaks a rule of the configuration (`check_config`).
pub fn changed_config(
    current: &EnvelopeConfig,
    changes: &Map<String, Value>,
) -> Result<EnvelopeConfig, String> {
    if changes.is_empty() {
        return Err(format!(
            "nothing to change: give the [envelope] keys to tighten with their new values, \
             e.g. {{\"altitude_m_max\": 60}} (keys: {})",
            TIGHTENABLE.join(", ")
        ));
    }
    if let Some(key) = changes.keys().find(|k| !TIGHTENABLE.contains(&k.as_str())) {
        return Err(format!(
            "`{key}` cannot be changed at run time: set_envelope tightens {}; anything else \
             changes in the [envelope] section of the configuration, read at start",
            TIGHTENABLE.join(", ")
        ));
    }
    let mut section = serde_json::to_value(current).map_err(|e| format!("internal error: {e}"))?;
    if let Value::Object(fields) = &mut section {
        for (key, value) in changes {
            fields.insert(key.clone(), value.clone());
        }
    }
    let changed: EnvelopeConfig = serde_path_to_error::deserialize(section)
        .map_err(|e| format!("envelope.{}: {}", e.path(), e.inner()))?;
    super::envelope::check_config(&changed)
        .map_err(|(key, message)| format!("{key}: {message}"))?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changes(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn changes_apply_to_the_current_section_and_the_rest_stays() {
        let current = EnvelopeConfig::default();
        let changed = changed_config(
            &current,
            &changes(json!({"altitude_m_max": 60.0, "gps_satellites_min": 10})),
        )
        .unwrap();
        assert_eq!(changed.altitude_m_max, 60.0);
        assert_eq!(changed.gps_satellites_min, 10);
        assert_eq!(
            EnvelopeConfig {
                altitude_m_max: current.altitude_m_max,
                gps_satellites_min: current.gps_satellites_min,
                ..changed
            },
            current
        );
        // Every field of the section round-trips through the JSON it is changed in.
        assert_eq!(
            serde_json::from_value::<EnvelopeConfig>(serde_json::to_value(&current).unwrap())
                .unwrap(),
            current
        );
    }

    #[test]
    fn refusals_say_what_would_be_accepted() {
        let current = EnvelopeConfig::default();
        let e = changed_config(&current, &Map::new()).unwrap_err();
        assert!(
            e.contains("nothing to change") && e.contains("altitude_m_max"),
            "{e}"
        );
        let e = changed_config(&current, &changes(json!({"check_interval_s": 1.0}))).unwrap_err();
        assert!(
            e.contains("`check_interval_s` cannot be changed at run time"),
            "{e}"
        );
        let e = changed_config(&current, &changes(json!({"breach_action": "land"}))).unwrap_err();
        assert!(e.contains("`breach_action`"), "{e}");
        let e = changed_config(&current, &changes(json!({"altitude_m_max": "low"}))).unwrap_err();
        assert!(
            e.starts_with("envelope.altitude_m_max: invalid type"),
            "{e}"
        );
        let e = changed_config(
            &current,
            &changes(json!({"keep_out": [{"name": "x", "radius_m": 5.0}]})),
        )
        .unwrap_err();
        assert!(e.starts_with("envelope.keep_out"), "{e}");
        let e = changed_config(&current, &changes(json!({"altitude_m_max": -5.0}))).unwrap_err();
        assert!(e.contains("altitude_m_max"), "{e}");
    }
}
