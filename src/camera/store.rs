//! Captures kept onboard: full-resolution JPEGs with EXIF, plus a JSON sidecar each, in one
//! directory with a bounded total size (the oldest are deleted first).
//!
//! Blocking file IO: callers run these functions with `spawn_blocking`.
//! Ids are `YYYYMMDDTHHMMSSmmmZ-N` (UTC time, frame number), so names sort by time and an
//! id can be checked to contain no path separators before it touches the file system.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What is known about one saved capture (`list_captures`, `get_capture`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CaptureInfo {
    pub id: String,
    /// UTC, ISO 8601.
    pub time: String,
    /// Where the file is on the vehicle.
    pub path: String,
    pub bytes: u64,
    pub width_px: u32,
    pub height_px: u32,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Above mean sea level.
    pub altitude_m: f64,
    pub altitude_relative_m: f64,
    pub heading_deg: f64,
    pub roll_deg: f64,
    pub pitch_deg: f64,
    /// The position was stale at capture time.
    pub position_stale: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a capture id (ids look like 20261121T130509123Z-42; call list_captures)")]
    BadId(String),
    #[error(
        "no capture `{0}` (it may have been deleted to stay within camera.captures_bytes_max; call list_captures)"
    )]
    NotFound(String),
    #[error("capture {bytes} bytes is larger than camera.captures_bytes_max ({bytes_max})")]
    TooLarge { bytes: u64, bytes_max: u64 },
    #[error(
        "the capture was not saved: {dir} is full ({error}); nothing else is affected (the \
         flight, the audit log); free space there or take the picture with save = false"
    )]
    Full { dir: PathBuf, error: std::io::Error },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| match error.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StoreError::Full {
            dir: path.parent().unwrap_or(path).to_owned(),
            error,
        },
        _ => StoreError::Io {
            path: path.to_owned(),
            error,
        },
    }
}

/// True for ids this store could have made.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Saves `jpeg` (already tagged) as `id`, then deletes the oldest captures until the total
/// is within `bytes_max`. Returns the info with its path and size filled in, and the ids
/// deleted.
pub fn save(
    dir: &Path,
    mut info: CaptureInfo,
    jpeg: &[u8],
    bytes_max: u64,
) -> Result<(CaptureInfo, Vec<String>), StoreError> {
    if !valid_id(&info.id) {
        return Err(StoreError::BadId(info.id));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let image_path = dir.join(format!("{}.jpg", info.id));
    info.path = image_path.display().to_string();
    info.bytes = jpeg.len() as u64;
    let sidecar = serde_json::to_vec_pretty(&info).unwrap_or_default();
    let total = info.bytes + sidecar.len() as u64;
    if total > bytes_max {
        return Err(StoreError::TooLarge {
            bytes: total,
            bytes_max,
        });
    }
    // Write to a temporary name and rename, so a reader never sees half a file. A failed
    // write (a full disk) removes what it left: half a file would hold the space it lacks.
    let temporary = dir.join(format!(".{}.jpg.tmp", info.id));
    if let Err(e) = std::fs::write(&temporary, jpeg) {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(&temporary)(e));
    }
    std::fs::rename(&temporary, &image_path).map_err(io(&image_path))?;
    let sidecar_path = dir.join(format!("{}.json", info.id));
    if let Err(e) = std::fs::write(&sidecar_path, sidecar) {
        // An image without its sidecar is not a capture (`list` reads the sidecars).
        let _ = std::fs::remove_file(&sidecar_path);
        let _ = std::fs::remove_file(&image_path);
        return Err(io(&sidecar_path)(e));
    }
    let evicted = evict(dir, bytes_max)?;
    Ok((info, evicted))
}

/// Ids and sizes (image + sidecar) of the stored captures, oldest first.
fn entries(dir: &Path) -> Result<Vec<(String, u64)>, StoreError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".jpg") else {
            continue;
        };
        if !valid_id(id) {
            continue;
        }
        let image = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let sidecar = std::fs::metadata(dir.join(format!("{id}.json")))
            .map(|m| m.len())
            .unwrap_or(0);
        out.push((id.to_owned(), image + sidecar));
    }
    out.sort();
    Ok(out)
}

fn evict(dir: &Path, bytes_max: u64) -> Result<Vec<String>, StoreError> {
    let entries = entries(dir)?;
    let mut total: u64 = entries.iter().map(|(_, b)| b).sum();
    let mut evicted = Vec::new();
    for (id, bytes) in entries {
        if total <= bytes_max {
            break;
        }
        for ext in ["jpg", "json"] {
            let path = dir.join(format!("{id}.{ext}"));
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io(&path)(e));
            }
        }
        total = total.saturating_sub(bytes);
        evicted.push(id);
    }
    Ok(evicted)
}

/// The stored captures, newest first, at most `limit`.
pub fn list(dir: &Path, limit: usize) -> Result<Vec<CaptureInfo>, StoreError> {
    let mut entries = entries(dir)?;
    entries.reverse();
    Ok(entries
        .into_iter()
        .take(limit)
        .filter_map(|(id, _)| info(dir, &id).ok())
        .collect())
}

/// One capture's info.
pub fn info(dir: &Path, id: &str) -> Result<CaptureInfo, StoreError> {
    if !valid_id(id) {
        return Err(StoreError::BadId(id.to_owned()));
    }
    let path = dir.join(format!("{id}.json"));
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        Err(e) => return Err(io(&path)(e)),
    };
    serde_json::from_slice(&text).map_err(|e| StoreError::Io {
        path,
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// One capture's JPEG and info.
pub fn read(dir: &Path, id: &str) -> Result<(Vec<u8>, CaptureInfo), StoreError> {
    let info = info(dir, id)?;
    let path = dir.join(format!("{id}.jpg"));
    match std::fs::read(&path) {
        Ok(jpeg) => Ok((jpeg, info)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StoreError::NotFound(id.to_owned()))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> CaptureInfo {
        CaptureInfo {
            id: id.into(),
            time: "t".into(),
            path: String::new(),
            bytes: 0,
            width_px: 1,
            height_px: 1,
            latitude_deg: 1.0,
            longitude_deg: 2.0,
            altitude_m: 3.0,
            altitude_relative_m: 4.0,
            heading_deg: 5.0,
            roll_deg: 0.0,
            pitch_deg: 0.0,
            position_stale: false,
        }
    }

    #[test]
    fn saves_lists_reads_and_evicts_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let bytes_max = 3 * (1000 + 600);
        let mut all_evicted = Vec::new();
        for i in 0..5 {
            let id = format!("20260101T00000{i}000Z-{i}");
            let (saved, evicted) =
                save(dir.path(), info(&id), &[i as u8; 1000], bytes_max).unwrap();
            assert_eq!(saved.bytes, 1000);
            assert!(saved.path.ends_with(&format!("{id}.jpg")));
            all_evicted.extend(evicted);
        }
        assert_eq!(
            all_evicted,
            vec!["20260101T000000000Z-0", "20260101T000001000Z-1"]
        );
        let listed: Vec<String> = list(dir.path(), 10)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            listed,
            vec![
                "20260101T000004000Z-4",
                "20260101T000003000Z-3",
                "20260101T000002000Z-2"
            ]
        );
        let (jpeg, got) = read(dir.path(), "20260101T000003000Z-3").unwrap();
        assert_eq!(jpeg, vec![3u8; 1000]);
        assert_eq!(got.latitude_deg, 1.0);
        assert!(matches!(
            read(dir.path(), "20260101T000000000Z-0"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn ids_cannot_reach_outside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for id in ["../etc/passwd", "a/b", "", ".hidden", "x.jpg"] {
            assert!(
                matches!(read(dir.path(), id), Err(StoreError::BadId(_))),
                "{id}"
            );
        }
        assert!(list(&dir.path().join("missing"), 10).unwrap().is_empty());
        assert!(matches!(
            save(dir.path(), info("big"), &[0; 100], 50),
            Err(StoreError::TooLarge { .. })
        ));
    }
}
