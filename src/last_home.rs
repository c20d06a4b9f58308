//! The autopilot's last home, kept on disk (`vehicle.last_home_path`) so that
//! `check-config` can tell, before a flight, that the envelope was drawn for another place.
//!
//! The daemon writes it (off its decision loop) whenever the autopilot reports a home that
//! moved by more than [`MOVED_M`]; the file is small JSON, written to a temporary file and
//! renamed, so a power cut leaves the old one or the new one, never half of one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::safety::geo::GeoPoint;

/// A home that moved less than this is the same home (GPS noise between power cycles).
pub const MOVED_M: f64 = 5.0;

/// A home the autopilot reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastHome {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub altitude_msl_m: f64,
    /// When the daemon saw it, seconds since the Unix epoch.
    pub seen_unix_s: u64,
}

impl LastHome {
    pub fn point(&self) -> GeoPoint {
        GeoPoint {
            latitude_deg: self.latitude_deg,
            longitude_deg: self.longitude_deg,
        }
    }
}

/// The home kept at `path`; `Ok(None)` when there is no file yet.
pub fn read(path: &Path) -> Result<Option<LastHome>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let home: LastHome = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a home the daemon wrote: {e}", path.display()))?;
    if !home.point().is_valid() {
        return Err(format!(
            "{} holds an invalid position ({}, {})",
            path.display(),
            home.latitude_deg,
            home.longitude_deg
        ));
    }
    Ok(Some(home))
}

/// Writes `home` to `path` (temporary file, fsync, rename).
pub fn write(path: &Path, home: &LastHome) -> std::io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(home).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
}

/// `check-config`'s warnings about where the envelope is: against the configured home
/// (`envelope.expected_home_lat_lon_deg`) and the last home the daemon saw.
pub fn site_warnings(config: &Config) -> Vec<String> {
    use crate::safety::site;
    let mut warnings = Vec::new();
    let configured = config
        .envelope
        .expected_home_lat_lon_deg
        .map(|[lat, lon]| GeoPoint {
            latitude_deg: lat,
            longitude_deg: lon,
        });
    if let Some(home) = configured {
        warnings.extend(site::warnings(&config.envelope, home, "configured"));
    }
    if let Some(path) = &config.vehicle.last_home_path {
        match read(path) {
            Ok(Some(last)) => {
                // The same place as the configured home: said once already.
                let same =
                    configured.is_some_and(|c| site::great_circle_m(c, last.point()) < 100.0);
                if !same {
                    warnings.extend(site::warnings(&config.envelope, last.point(), "last known"));
                }
            }
            Ok(None) => {}
            Err(e) => warnings.push(format!("vehicle.last_home_path: {e}")),
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-home.json");
        assert_eq!(read(&path), Ok(None));
        let home = LastHome {
            latitude_deg: 47.397742,
            longitude_deg: 8.545594,
            altitude_msl_m: 488.0,
            seen_unix_s: 1_800_000_000,
        };
        write(&path, &home).unwrap();
        assert_eq!(read(&path), Ok(Some(home)));
        assert!(!dir.path().join("last-home.json.tmp").exists());
        std::fs::write(&path, "{\"latitude_deg\": 95.0").unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .contains("is not a home the daemon wrote")
        );
        std::fs::write(
            &path,
            "{\"latitude_deg\": 95.0, \"longitude_deg\": 0.0, \"altitude_msl_m\": 0.0, \"seen_unix_s\": 0}",
        )
        .unwrap();
        assert!(read(&path).unwrap_err().contains("invalid position"));
    }
}
