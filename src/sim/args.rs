//! The simulator's command line (`flight-companion sim`): here rather than in `cli`, so the
//! simulator's shell does not import the module that dispatches to it.

use std::path::PathBuf;

use clap::ValueEnum;

use crate::link::endpoint::Endpoint;

/// Which autopilot the simulator pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimAutopilot {
    Ardupilot,
    Px4,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Endpoint(s) the simulator serves; repeat for several (e.g. one for the daemon, one
    /// for a test harness that injects faults). Default `tcpin:127.0.0.1:5760`.
    #[arg(long = "link")]
    pub links: Vec<Endpoint>,
    /// Firmware personality.
    #[arg(long, value_enum, default_value = "ardupilot")]
    pub autopilot: SimAutopilot,
    /// Home position as LAT,LON,ALT_M (altitude above mean sea level).
    #[arg(long, default_value = "47.397742,8.545594,488.0", value_parser = parse_home, allow_hyphen_values = true)]
    pub home: (f64, f64, f64),
    /// Simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Seed of every random choice (sensor noise, wind gusts): same seed, same flight.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// MAVLink system id of the simulated vehicle.
    #[arg(long, default_value_t = 1)]
    pub system_id: u8,
    /// Simulated seconds from boot until the estimator trusts its position and arming is
    /// possible. Default: the firmware's own timeline (ArduCopter about 42 s, PX4 about 3 s);
    /// tests that are not about start-up give a short one.
    #[arg(long, value_name = "SECONDS")]
    pub ekf_ready_s: Option<f64>,
    /// Add `mono_ns=N` to each `sim: command` line: the `CLOCK_MONOTONIC` nanoseconds at which
    /// the command's bytes were read from the link (for latency benchmarks across processes).
    #[arg(long)]
    pub stamp_monotonic: bool,
    /// Where the MAVLink 2 signing key set by SETUP_SIGNING is kept across restarts (as
    /// ArduPilot keeps it in its storage; 44 bytes in its layout). Default: in memory only.
    #[arg(long, value_name = "FILE")]
    pub signing_store: Option<PathBuf>,
    /// Frames per second of ArduCopter's high-rate mix (ATTITUDE, GLOBAL_POSITION_INT,
    /// VFR_HUD, SYS_STATUS) sent on top of the streams the daemon asks for: a busy link for
    /// the soak (`hil soak`). Default 0.
    #[arg(long, default_value_t = 0.0, value_name = "HZ")]
    pub extra_telemetry_hz: f64,
}

/// `LAT,LON,ALT_M` (degrees, degrees, metres above mean sea level), checked.
pub fn parse_home(text: &str) -> Result<(f64, f64, f64), String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [lat, lon, alt] = parts.as_slice() else {
        return Err(format!(
            "expected LAT,LON,ALT_M, e.g. 47.397742,8.545594,488.0; got `{text}`"
        ));
    };
    let number = |name: &str, v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{name} `{v}` is not a number"))
    };
    let (lat, lon, alt) = (
        number("latitude", lat)?,
        number("longitude", lon)?,
        number("altitude", alt)?,
    );
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("latitude {lat} is outside -90..=90"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("longitude {lon} is outside -180..=180"));
    }
    if !(-500.0..=9000.0).contains(&alt) {
        return Err(format!("altitude {alt} m is outside -500..=9000 m"));
    }
    Ok((lat, lon, alt))
}
