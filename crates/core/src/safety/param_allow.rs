//! `[parameters]`: the autopilot parameters an ADMIN may write (`set_parameter`, and a ground
//! station's `PARAM_SET` through the daemon), each with its bounds, and the never-write
//! families no configuration can open.
//!
//! The whitelist holds the one table (`Whitelist::with_parameters`): the configured entries,
//! plus the built-in speed and return-altitude parameters bounded by the envelope
//! (`whitelist::PARAM_ALLOWLIST`). A name in both must satisfy both.

use serde::{Deserialize, Serialize};

/// Parameter families never writable from the ground, even if someone adds them to the
/// allowlist by mistake: fence, failsafe, arming checks, signing, circuit breakers.
pub const PARAM_FORBIDDEN_PREFIXES: &[&str] = &[
    "FENCE_",
    "GF_",
    "FS_",
    "BATT_FS",
    "BATT_LOW",
    "BATT_CRT",
    "ARMING_",
    "CBRK_",
    "COM_",
    "NAV_DLL",
    "NAV_RCL",
    "MAV_SIGN",
    "SIGNING",
    "BRD_SAFETY",
    "AVOID_",
    "SYSID_",
    "SCR_",
    "SERIAL",
];

/// `[parameters]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParametersConfig {
    /// `[[parameters.allow]]`: each parameter an ADMIN may write, with its bounds in the
    /// firmware's own units (as `get_parameter` shows them). Default none.
    pub allow: Vec<ParamAllow>,
}

/// One writable parameter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamAllow {
    /// The autopilot's name (at most 16 characters), e.g. `WPNAV_SPEED`.
    pub name: String,
    /// Smallest value accepted, firmware units.
    pub min: f64,
    /// Largest value accepted, firmware units.
    pub max: f64,
}

/// The never-write family `name` belongs to, if any (fence, failsafe, arming checks,
/// signing...).
pub fn never_writable(name: &str) -> Option<&'static str> {
    PARAM_FORBIDDEN_PREFIXES
        .iter()
        .copied()
        .find(|prefix| name.starts_with(prefix))
}

impl ParametersConfig {
    /// An entry naming a never-write parameter, a bad name or bad bounds is a config error.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        const KEY: &str = "parameters.allow";
        for (i, entry) in self.allow.iter().enumerate() {
            let name = &entry.name;
            let valid = !name.is_empty()
                && name.len() <= 16
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err((
                    KEY,
                    format!(
                        "entry {i}: name `{name}` must be 1 to 16 characters of A-Z, 0-9 and _"
                    ),
                ));
            }
            if let Some(prefix) = never_writable(name) {
                return Err((
                    KEY,
                    format!(
                        "entry {i}: `{name}` is a {prefix}* parameter (fence, failsafe, \
                         arming checks, signing): never writable from the ground; remove it"
                    ),
                ));
            }
            if !(entry.min.is_finite() && entry.max.is_finite() && entry.min <= entry.max) {
                return Err((
                    KEY,
                    format!(
                        "entry {i} (`{name}`): min and max must be numbers with min <= max, \
                         got {} and {}",
                        entry.min, entry.max
                    ),
                ));
            }
            if self.allow[..i].iter().any(|e| e.name == *name) {
                return Err((KEY, format!("entry {i}: `{name}` is listed twice")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(name: &str, min: f64, max: f64) -> ParamAllow {
        ParamAllow {
            name: name.into(),
            min,
            max,
        }
    }

    #[test]
    fn never_write_names_and_bad_bounds_are_config_errors() {
        let rows: &[(ParamAllow, Option<&str>)] = &[
            (allow("WPNAV_SPEED", 100.0, 1000.0), None),
            (allow("LOIT_SPEED", 0.0, 0.0), None),
            (allow("FENCE_ALT_MAX", 10.0, 100.0), Some("FENCE_")),
            (allow("GF_ACTION", 0.0, 5.0), Some("GF_")),
            (allow("ARMING_CHECK", 0.0, 1.0), Some("ARMING_")),
            (allow("FS_GCS_ENABLE", 0.0, 1.0), Some("FS_")),
            (allow("COM_DL_LOSS_T", 5.0, 30.0), Some("COM_")),
            (allow("MAV_SIGN_CFG", 0.0, 1.0), Some("MAV_SIGN")),
            (allow("wpnav_speed", 1.0, 2.0), Some("A-Z")),
            (allow("A_NAME_LONGER_THAN_16", 1.0, 2.0), Some("16")),
            (allow("RTL_ALT", 2.0, 1.0), Some("min <= max")),
            (allow("RTL_ALT", f64::NAN, 1.0), Some("min <= max")),
        ];
        for (entry, error) in rows {
            let config = ParametersConfig {
                allow: vec![entry.clone()],
            };
            match (config.check(), error) {
                (Ok(()), None) => {}
                (Err((key, why)), Some(part)) => {
                    assert_eq!(key, "parameters.allow");
                    assert!(why.contains(part), "{why}");
                }
                (got, _) => panic!("{}: {got:?}", entry.name),
            }
        }
        let twice = ParametersConfig {
            allow: vec![allow("RTL_ALT", 1.0, 2.0), allow("RTL_ALT", 1.0, 3.0)],
        };
        assert!(twice.check().unwrap_err().1.contains("twice"));
    }
}
