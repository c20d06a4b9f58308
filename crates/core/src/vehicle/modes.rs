//! ArduCopter and PX4 flight modes: decoded from and encoded to a heartbeat's
//! `base_mode`/`custom_mode`, named in each autopilot's own terms.
//!
//! One `FlightMode` covers both firmwares so the rest of the daemon can reason about
//! "the vehicle is holding position" without caring who built it; the names shown to
//! people stay the autopilot's own (`LOITER` on ArduCopter, `AUTO.LOITER` on PX4), because
//! those are the words in the vehicle's manuals, its STATUSTEXTs and the pilot's head.
//!
//! Everything here is a pure function over two static tables; a mode missing from an
//! autopilot's table does not exist on that autopilot (`encode` returns `None`).

use schemars::JsonSchema;
use serde::Serialize;

/// Which autopilot firmware family answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutopilotKind {
    Ardupilot,
    Px4,
    Other,
}

/// `MAV_MODE_FLAG_CUSTOM_MODE_ENABLED`: `custom_mode` carries the autopilot's own mode.
pub const MODE_FLAG_CUSTOM_MODE_ENABLED: u8 = 1;

/// A flight mode, unified over ArduCopter and PX4 (multicopter).
///
/// Variants that exist on both firmwares mean the same behaviour: `Loiter` is ArduCopter
/// `LOITER` and PX4 `AUTO.LOITER` (Hold); `PosHold` is ArduCopter `POSHOLD` and PX4 `POSCTL`
/// (pilot flies, position held when the sticks are centred); `Guided` is ArduCopter `GUIDED`
/// and PX4 `OFFBOARD`; `Auto` is ArduCopter `AUTO` and PX4 `AUTO.MISSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlightMode {
    Stabilize,
    Acro,
    AltHold,
    Auto,
    Guided,
    Loiter,
    Rtl,
    Circle,
    Land,
    Drift,
    Sport,
    Flip,
    AutoTune,
    PosHold,
    Brake,
    Throw,
    AvoidAdsb,
    GuidedNoGps,
    SmartRtl,
    FlowHold,
    Follow,
    ZigZag,
    SystemId,
    Autorotate,
    AutoRtl,
    Turtle,
    /// PX4 `MANUAL` (ArduCopter has no such mode).
    Manual,
    /// PX4 `AUTO.TAKEOFF` (ArduCopter takes off inside `GUIDED` or `AUTO`).
    Takeoff,
    /// PX4 `AUTO.READY`.
    Ready,
    /// PX4 `AUTO.PRECLAND`.
    PrecisionLand,
    /// PX4 `AUTO.VTOL_TAKEOFF`.
    VtolTakeoff,
    /// PX4 `RATTITUDE`.
    Rattitude,
    /// A `custom_mode` this table does not know, or a heartbeat without
    /// `MAV_MODE_FLAG_CUSTOM_MODE_ENABLED`. Never encoded: the daemon does not command
    /// modes it cannot name.
    Other(u32),
}

/// ArduCopter `custom_mode` numbers (ArduCopter `mode.h`, `Mode::Number`).
const ARDUCOPTER: &[(FlightMode, &str, u32)] = &[
    (FlightMode::Stabilize, "STABILIZE", 0),
    (FlightMode::Acro, "ACRO", 1),
    (FlightMode::AltHold, "ALT_HOLD", 2),
    (FlightMode::Auto, "AUTO", 3),
    (FlightMode::Guided, "GUIDED", 4),
    (FlightMode::Loiter, "LOITER", 5),
    (FlightMode::Rtl, "RTL", 6),
    (FlightMode::Circle, "CIRCLE", 7),
    (FlightMode::Land, "LAND", 9),
    (FlightMode::Drift, "DRIFT", 11),
    (FlightMode::Sport, "SPORT", 13),
    (FlightMode::Flip, "FLIP", 14),
    (FlightMode::AutoTune, "AUTOTUNE", 15),
    (FlightMode::PosHold, "POSHOLD", 16),
    (FlightMode::Brake, "BRAKE", 17),
    (FlightMode::Throw, "THROW", 18),
    (FlightMode::AvoidAdsb, "AVOID_ADSB", 19),
    (FlightMode::GuidedNoGps, "GUIDED_NOGPS", 20),
    (FlightMode::SmartRtl, "SMART_RTL", 21),
    (FlightMode::FlowHold, "FLOWHOLD", 22),
    (FlightMode::Follow, "FOLLOW", 23),
    (FlightMode::ZigZag, "ZIGZAG", 24),
    (FlightMode::SystemId, "SYSTEMID", 25),
    (FlightMode::Autorotate, "AUTOROTATE", 26),
    (FlightMode::AutoRtl, "AUTO_RTL", 27),
    (FlightMode::Turtle, "TURTLE", 28),
];

/// PX4 main modes (`px4_custom_mode.h`).
const PX4_MAIN_MANUAL: u8 = 1;
const PX4_MAIN_ALTCTL: u8 = 2;
const PX4_MAIN_POSCTL: u8 = 3;
const PX4_MAIN_AUTO: u8 = 4;
const PX4_MAIN_ACRO: u8 = 5;
const PX4_MAIN_OFFBOARD: u8 = 6;
const PX4_MAIN_STABILIZED: u8 = 7;
const PX4_MAIN_RATTITUDE: u8 = 8;

/// PX4 modes: (mode, name, main mode, sub mode). Sub mode 0 means "none" except under
/// `AUTO`, where every mode has a sub mode.
const PX4: &[(FlightMode, &str, u8, u8)] = &[
    (FlightMode::Manual, "MANUAL", PX4_MAIN_MANUAL, 0),
    (FlightMode::AltHold, "ALTCTL", PX4_MAIN_ALTCTL, 0),
    (FlightMode::PosHold, "POSCTL", PX4_MAIN_POSCTL, 0),
    (FlightMode::Circle, "POSCTL.ORBIT", PX4_MAIN_POSCTL, 1),
    (FlightMode::Ready, "AUTO.READY", PX4_MAIN_AUTO, 1),
    (FlightMode::Takeoff, "AUTO.TAKEOFF", PX4_MAIN_AUTO, 2),
    (FlightMode::Loiter, "AUTO.LOITER", PX4_MAIN_AUTO, 3),
    (FlightMode::Auto, "AUTO.MISSION", PX4_MAIN_AUTO, 4),
    (FlightMode::Rtl, "AUTO.RTL", PX4_MAIN_AUTO, 5),
    (FlightMode::Land, "AUTO.LAND", PX4_MAIN_AUTO, 6),
    (FlightMode::Follow, "AUTO.FOLLOW_TARGET", PX4_MAIN_AUTO, 8),
    (FlightMode::PrecisionLand, "AUTO.PRECLAND", PX4_MAIN_AUTO, 9),
    (
        FlightMode::VtolTakeoff,
        "AUTO.VTOL_TAKEOFF",
        PX4_MAIN_AUTO,
        10,
    ),
    (FlightMode::Acro, "ACRO", PX4_MAIN_ACRO, 0),
    (FlightMode::Guided, "OFFBOARD", PX4_MAIN_OFFBOARD, 0),
    (FlightMode::Stabilize, "STABILIZED", PX4_MAIN_STABILIZED, 0),
    (FlightMode::Rattitude, "RATTITUDE", PX4_MAIN_RATTITUDE, 0),
];

/// Extra spellings people and ground stations use for PX4 modes (QGroundControl's labels).
const PX4_ALIASES: &[(&str, FlightMode)] = &[
    ("HOLD", FlightMode::Loiter),
    ("LOITER", FlightMode::Loiter),
    ("MISSION", FlightMode::Auto),
    ("TAKEOFF", FlightMode::Takeoff),
    ("RTL", FlightMode::Rtl),
    ("RETURN", FlightMode::Rtl),
    ("LAND", FlightMode::Land),
    ("POSITION", FlightMode::PosHold),
    ("ALTITUDE", FlightMode::AltHold),
    ("ORBIT", FlightMode::Circle),
    ("PRECLAND", FlightMode::PrecisionLand),
    ("FOLLOW_TARGET", FlightMode::Follow),
];

fn px4_custom_mode(main: u8, sub: u8) -> u32 {
    (u32::from(main) << 16) | (u32::from(sub) << 24)
}

impl FlightMode {
    /// The mode a heartbeat reports.
    ///
    /// Without `MAV_MODE_FLAG_CUSTOM_MODE_ENABLED` the `custom_mode` field means nothing
    /// (MAVLink spec), so the result is `Other(custom_mode)` rather than a guess.
    pub fn decode(autopilot: AutopilotKind, base_mode: u8, custom_mode: u32) -> FlightMode {
        if base_mode & MODE_FLAG_CUSTOM_MODE_ENABLED == 0 {
            return FlightMode::Other(custom_mode);
        }
        match autopilot {
            AutopilotKind::Ardupilot => ARDUCOPTER
                .iter()
                .find(|(_, _, number)| *number == custom_mode)
                .map(|(mode, _, _)| *mode),
            AutopilotKind::Px4 => {
                // Bits 0..16 are reserved and zero on PX4; a heartbeat that sets them is
                // not one this table understands.
                let main = ((custom_mode >> 16) & 0xff) as u8;
                let sub = ((custom_mode >> 24) & 0xff) as u8;
                if custom_mode & 0xffff != 0 {
                    None
                } else {
                    PX4.iter()
                        .find(|(_, _, m, s)| *m == main && *s == sub)
                        .map(|(mode, _, _, _)| *mode)
                }
            }
            AutopilotKind::Other => None,
        }
        .unwrap_or(FlightMode::Other(custom_mode))
    }

    /// `(base_mode, custom_mode)` for `SET_MODE` / `MAV_CMD_DO_SET_MODE`, or `None` when the
    /// autopilot has no such mode (or the mode is `Other`).
    pub fn encode(autopilot: AutopilotKind, mode: FlightMode) -> Option<(u8, u32)> {
        let custom_mode = match autopilot {
            AutopilotKind::Ardupilot => ARDUCOPTER
                .iter()
                .find(|(m, _, _)| *m == mode)
                .map(|(_, _, number)| *number)?,
            AutopilotKind::Px4 => PX4
                .iter()
                .find(|(m, _, _, _)| *m == mode)
                .map(|(_, _, main, sub)| px4_custom_mode(*main, *sub))?,
            AutopilotKind::Other => return None,
        };
        Some((MODE_FLAG_CUSTOM_MODE_ENABLED, custom_mode))
    }

    /// `MAV_CMD_DO_SET_MODE`'s seven parameters for `mode`, or `None` when the autopilot has
    /// no such mode. The one place they are written: the stop and the command protocol both
    /// send them, and the whitelist reads them back with [`FlightMode::from_set_mode_params`].
    ///
    /// param1 is the base mode (custom mode enabled); ArduPilot takes its mode number in
    /// param2 (`GCS_MAVLINK::handle_command_do_set_mode`: `_set_mode_common(base_mode,
    /// param2)`); PX4 takes its main mode in param2 and its sub mode in param3
    /// (`Commander::handle_command`, `VEHICLE_CMD_DO_SET_MODE`: `custom_main_mode =
    /// param2`, `custom_sub_mode = param3`), the two upper bytes of its `custom_mode`.
    pub fn set_mode_params(autopilot: AutopilotKind, mode: FlightMode) -> Option<[f32; 7]> {
        let (base_mode, custom_mode) = FlightMode::encode(autopilot, mode)?;
        let mut params = [0.0f32; 7];
        params[0] = f32::from(base_mode);
        match autopilot {
            AutopilotKind::Px4 => {
                params[1] = f32::from(((custom_mode >> 16) & 0xff) as u8);
                params[2] = f32::from(((custom_mode >> 24) & 0xff) as u8);
            }
            // ArduPilot mode numbers are small: exact as f32.
            _ => params[1] = custom_mode as f32,
        }
        Some(params)
    }

    /// The mode a `MAV_CMD_DO_SET_MODE` with these parameters asks for (the inverse of
    /// [`FlightMode::set_mode_params`]); `None` when they are not numbers a mode can be
    /// (negative, not finite, PX4's bytes above 255).
    pub fn from_set_mode_params(autopilot: AutopilotKind, params: &[f32; 7]) -> Option<FlightMode> {
        let byte = |v: f32| v.is_finite() && (0.0..=255.0).contains(&v);
        let numbers_ok = match autopilot {
            AutopilotKind::Px4 => byte(params[0]) && byte(params[1]) && byte(params[2]),
            _ => byte(params[0]) && params[1].is_finite() && params[1] >= 0.0,
        };
        if !numbers_ok {
            return None;
        }
        let custom_mode = match autopilot {
            AutopilotKind::Px4 => ((params[1] as u32) << 16) | ((params[2] as u32) << 24),
            _ => params[1] as u32,
        };
        Some(FlightMode::decode(autopilot, params[0] as u8, custom_mode))
    }

    /// The mode's name in the autopilot's own terms; `UNKNOWN` for a mode the autopilot
    /// does not have (the raw `custom_mode` is reported next to it in the snapshot).
    pub fn name(self, autopilot: AutopilotKind) -> &'static str {
        let found = match autopilot {
            AutopilotKind::Ardupilot => ARDUCOPTER
                .iter()
                .find(|(m, _, _)| *m == self)
                .map(|(_, name, _)| *name),
            AutopilotKind::Px4 => PX4
                .iter()
                .find(|(m, _, _, _)| *m == self)
                .map(|(_, name, _, _)| *name),
            AutopilotKind::Other => None,
        };
        found.unwrap_or("UNKNOWN")
    }

    /// Parses a mode name as the autopilot spells it, ignoring case (`guided`, `AUTO.LOITER`);
    /// PX4 also accepts QGroundControl's short labels (`HOLD`, `MISSION`, `RETURN`, ...).
    pub fn from_name(autopilot: AutopilotKind, name: &str) -> Option<FlightMode> {
        let name = name.trim();
        match autopilot {
            AutopilotKind::Ardupilot => ARDUCOPTER
                .iter()
                .find(|(_, n, _)| n.eq_ignore_ascii_case(name))
                .map(|(mode, _, _)| *mode),
            AutopilotKind::Px4 => PX4
                .iter()
                .find(|(_, n, _, _)| n.eq_ignore_ascii_case(name))
                .map(|(mode, _, _, _)| *mode)
                .or_else(|| {
                    PX4_ALIASES
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, mode)| *mode)
                }),
            AutopilotKind::Other => None,
        }
    }

    /// True when the pilot flies the vehicle from the RC in this mode: the daemon must not
    /// fight a pilot who switched to one of these (the product's "pilot takeover" rule).
    pub fn is_manual(autopilot: AutopilotKind, mode: FlightMode) -> bool {
        match autopilot {
            AutopilotKind::Ardupilot => matches!(
                mode,
                FlightMode::Stabilize
                    | FlightMode::Acro
                    | FlightMode::AltHold
                    | FlightMode::Drift
                    | FlightMode::Sport
                    | FlightMode::Flip
                    | FlightMode::PosHold
                    | FlightMode::FlowHold
                    | FlightMode::Turtle
            ),
            AutopilotKind::Px4 => matches!(
                mode,
                FlightMode::Manual
                    | FlightMode::Stabilize
                    | FlightMode::Acro
                    | FlightMode::Rattitude
                    | FlightMode::AltHold
                    | FlightMode::PosHold
            ),
            // An unknown firmware: assume nothing about who flies.
            AutopilotKind::Other => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: AutopilotKind = AutopilotKind::Ardupilot;
    const P: AutopilotKind = AutopilotKind::Px4;

    #[test]
    fn do_set_mode_parameters_round_trip_for_every_mode_of_both_autopilots() {
        for (mode, _, _) in ARDUCOPTER {
            let params = FlightMode::set_mode_params(A, *mode).expect("encodable");
            assert_eq!(FlightMode::from_set_mode_params(A, &params), Some(*mode));
        }
        for (mode, _, _, _) in PX4 {
            let params = FlightMode::set_mode_params(P, *mode).expect("encodable");
            assert_eq!(FlightMode::from_set_mode_params(P, &params), Some(*mode));
        }
        // PX4's hold: main mode AUTO (4) in param2, sub mode LOITER (3) in param3.
        let hold = FlightMode::set_mode_params(P, FlightMode::Loiter).unwrap();
        assert_eq!(&hold[..3], &[1.0, 4.0, 3.0]);
        // ArduCopter's BRAKE: mode number 17 in param2.
        let brake = FlightMode::set_mode_params(A, FlightMode::Brake).unwrap();
        assert_eq!(&brake[..2], &[1.0, 17.0]);
        assert_eq!(FlightMode::set_mode_params(P, FlightMode::Brake), None);
        let mut bad = hold;
        bad[2] = 256.0;
        assert_eq!(FlightMode::from_set_mode_params(P, &bad), None);
        bad[2] = f32::NAN;
        assert_eq!(FlightMode::from_set_mode_params(P, &bad), None);
        assert_eq!(
            FlightMode::from_set_mode_params(A, &[1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            None
        );
    }

    #[test]
    fn arducopter_table_decodes_names_and_encodes() {
        let cases = [
            (0, FlightMode::Stabilize, "STABILIZE", true),
            (1, FlightMode::Acro, "ACRO", true),
            (2, FlightMode::AltHold, "ALT_HOLD", true),
            (3, FlightMode::Auto, "AUTO", false),
            (4, FlightMode::Guided, "GUIDED", false),
            (5, FlightMode::Loiter, "LOITER", false),
            (6, FlightMode::Rtl, "RTL", false),
            (9, FlightMode::Land, "LAND", false),
            (16, FlightMode::PosHold, "POSHOLD", true),
            (17, FlightMode::Brake, "BRAKE", false),
            (21, FlightMode::SmartRtl, "SMART_RTL", false),
            (20, FlightMode::GuidedNoGps, "GUIDED_NOGPS", false),
        ];
        for (custom, mode, name, manual) in cases {
            assert_eq!(FlightMode::decode(A, 1 | 128, custom), mode, "{name}");
            assert_eq!(mode.name(A), name);
            assert_eq!(FlightMode::encode(A, mode), Some((1, custom)), "{name}");
            assert_eq!(FlightMode::from_name(A, name), Some(mode));
            assert_eq!(
                FlightMode::from_name(A, &name.to_lowercase()),
                Some(mode),
                "{name} in lower case"
            );
            assert_eq!(FlightMode::is_manual(A, mode), manual, "{name}");
        }
    }

    #[test]
    fn px4_table_decodes_names_and_encodes() {
        let cases = [
            (1, 0, FlightMode::Manual, "MANUAL", true),
            (2, 0, FlightMode::AltHold, "ALTCTL", true),
            (3, 0, FlightMode::PosHold, "POSCTL", true),
            (4, 2, FlightMode::Takeoff, "AUTO.TAKEOFF", false),
            (4, 3, FlightMode::Loiter, "AUTO.LOITER", false),
            (4, 4, FlightMode::Auto, "AUTO.MISSION", false),
            (4, 5, FlightMode::Rtl, "AUTO.RTL", false),
            (4, 6, FlightMode::Land, "AUTO.LAND", false),
            (5, 0, FlightMode::Acro, "ACRO", true),
            (6, 0, FlightMode::Guided, "OFFBOARD", false),
            (7, 0, FlightMode::Stabilize, "STABILIZED", true),
        ];
        for (main, sub, mode, name, manual) in cases {
            let custom: u32 = (main << 16) | (sub << 24);
            assert_eq!(FlightMode::decode(P, 1, custom), mode, "{name}");
            assert_eq!(mode.name(P), name);
            assert_eq!(FlightMode::encode(P, mode), Some((1, custom)), "{name}");
            assert_eq!(FlightMode::from_name(P, name), Some(mode));
            assert_eq!(FlightMode::is_manual(P, mode), manual, "{name}");
        }
        // PX4 AUTO.LOITER is the well-known 0x0304_0000 on the wire.
        assert_eq!(
            FlightMode::encode(P, FlightMode::Loiter),
            Some((1, 0x0304_0000))
        );
    }

    #[test]
    fn px4_accepts_ground_station_labels() {
        assert_eq!(FlightMode::from_name(P, "hold"), Some(FlightMode::Loiter));
        assert_eq!(FlightMode::from_name(P, "Mission"), Some(FlightMode::Auto));
        assert_eq!(FlightMode::from_name(P, "RETURN"), Some(FlightMode::Rtl));
        assert_eq!(FlightMode::from_name(P, "GUIDED"), None);
    }

    #[test]
    fn unknown_and_flagless_modes_are_other_and_never_encoded() {
        assert_eq!(FlightMode::decode(A, 1, 8), FlightMode::Other(8));
        assert_eq!(FlightMode::decode(A, 1, 999), FlightMode::Other(999));
        // GUIDED's number without the custom-mode flag is not GUIDED.
        assert_eq!(FlightMode::decode(A, 128, 4), FlightMode::Other(4));
        // PX4 reserved low bits set.
        assert_eq!(
            FlightMode::decode(P, 1, 0x0304_0001),
            FlightMode::Other(0x0304_0001)
        );
        assert_eq!(
            FlightMode::decode(P, 1, 9 << 16),
            FlightMode::Other(9 << 16)
        );
        assert_eq!(
            FlightMode::decode(AutopilotKind::Other, 1, 4),
            FlightMode::Other(4)
        );
        assert_eq!(FlightMode::encode(A, FlightMode::Other(4)), None);
        assert_eq!(FlightMode::Other(4).name(A), "UNKNOWN");
    }

    #[test]
    fn modes_an_autopilot_lacks_are_not_encoded() {
        assert_eq!(FlightMode::encode(A, FlightMode::Manual), None);
        assert_eq!(FlightMode::encode(A, FlightMode::Takeoff), None);
        assert_eq!(FlightMode::encode(P, FlightMode::Brake), None);
        assert_eq!(
            FlightMode::encode(AutopilotKind::Other, FlightMode::Guided),
            None
        );
        assert_eq!(FlightMode::from_name(A, "OFFBOARD"), None);
        assert_eq!(FlightMode::from_name(A, ""), None);
    }

    #[test]
    fn every_table_entry_round_trips() {
        for (mode, name, _) in ARDUCOPTER {
            let (base, custom) = FlightMode::encode(A, *mode).unwrap();
            assert_eq!(FlightMode::decode(A, base, custom), *mode, "{name}");
            assert_eq!(FlightMode::from_name(A, name), Some(*mode));
        }
        for (mode, name, _, _) in PX4 {
            let (base, custom) = FlightMode::encode(P, *mode).unwrap();
            assert_eq!(FlightMode::decode(P, base, custom), *mode, "{name}");
            assert_eq!(FlightMode::from_name(P, name), Some(*mode));
        }
    }

    #[test]
    fn tables_have_no_duplicates() {
        for (i, (mode, name, number)) in ARDUCOPTER.iter().enumerate() {
            for (other, other_name, other_number) in &ARDUCOPTER[i + 1..] {
                assert!(mode != other && name != other_name && number != other_number);
            }
        }
        for (i, (mode, name, main, sub)) in PX4.iter().enumerate() {
            for (other, other_name, m, s) in &PX4[i + 1..] {
                assert!(mode != other && name != other_name && (main, sub) != (m, s));
            }
        }
    }
}
