//! The signing key and timestamp on disk (the shell side of [`super::signing`]).
//!
//! - The key is a file of its own (a path, or a systemd credential with `credential:NAME`),
//!   never a configuration value: 32 raw bytes or 64 hex digits, readable by its owner alone.
//! - The link's timestamp is persisted in a small text file (decimal, one line), written
//!   atomically (temporary file, fsync, rename, fsync of the directory) every
//!   [`PERSIST_INTERVAL`](super::signing::PERSIST_INTERVAL) and at shutdown, so that after a
//!   restart the link starts beyond every timestamp it used before, even on a machine whose
//!   clock restarts in the past (a Raspberry Pi has no real-time clock).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::signing::{KEY_LEN, RESTART_MARGIN, SigningKey, TIMESTAMP_MAX};

/// A key file larger than this is not a key; it is refused before it is read.
const KEY_FILE_BYTES_MAX: u64 = 1024;
/// Likewise for the timestamp file.
const TIMESTAMP_FILE_BYTES_MAX: u64 = 64;

/// Reads a signing key file: a regular file, not readable or writable by group or others,
/// holding 32 raw bytes or 64 hex digits.
pub fn load_key(path: &Path) -> Result<SigningKey, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("signing key {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("signing key {shown}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "signing key {shown}: mode {mode:04o} lets other users read or change it; \
             `chmod 600 {shown}` (or pass it as a systemd credential)"
        ));
    }
    if meta.len() > KEY_FILE_BYTES_MAX {
        return Err(format!(
            "signing key {shown}: {} bytes is not a key (32 bytes raw, or 64 hex digits)",
            meta.len()
        ));
    }
    let contents = std::fs::read(path).map_err(|e| format!("signing key {shown}: {e}"))?;
    SigningKey::parse(&contents).map_err(|e| format!("signing key {shown} {e}"))
}

/// Writes a new random key as 64 hex digits and a newline (mode 0600, refusing to overwrite).
pub fn generate_key(path: &Path) -> Result<SigningKey, String> {
    let mut bytes = [0u8; KEY_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no system randomness".to_string())?;
    let key = SigningKey::new(bytes).map_err(|e| format!("the random key {e}"))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// Where a link's signing timestamp is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampStore {
    pub path: PathBuf,
}

impl TimestampStore {
    pub fn new(path: PathBuf) -> TimestampStore {
        TimestampStore { path }
    }

    /// The persisted timestamp; `None` when there is none yet. A file that is there but
    /// does not hold a timestamp is an error: starting from the clock instead could reuse
    /// timestamps an attacker recorded, so a person decides (delete it to start afresh).
    pub fn load(&self) -> Result<Option<u64>, String> {
        let shown = self.path.display();
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("signing timestamp {shown}: {e}")),
        };
        if !meta.is_file() || meta.len() > TIMESTAMP_FILE_BYTES_MAX {
            return Err(format!(
                "signing timestamp {shown}: not a timestamp file (one decimal number); delete \
                 it to start from the clock"
            ));
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("signing timestamp {shown}: {e}"))?;
        match text.trim().parse::<u64>() {
            Ok(t) if t <= TIMESTAMP_MAX => Ok(Some(t)),
            _ => Err(format!(
                "signing timestamp {shown}: `{}` is not a 48-bit timestamp; delete the file to \
                 start from the clock",
                crate::audit::escape(text.trim())
            )),
        }
    }

    /// Where a link restarts: beyond every timestamp it may have used since the last save.
    pub fn start_timestamp(&self) -> Result<u64, String> {
        Ok(self
            .load()?
            .map_or(0, |t| t.saturating_add(RESTART_MARGIN).min(TIMESTAMP_MAX)))
    }

    /// Persists `timestamp` atomically.
    pub fn save(&self, timestamp: u64) -> Result<(), String> {
        let shown = self.path.display();
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(format!("{timestamp}\n").as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("signing timestamp {shown}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn key_files_of_the_wrong_size_or_mode_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = generate_key(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_key(&path).unwrap(), key);
        // generate_key never overwrites.
        assert!(generate_key(&path).unwrap_err().contains("exists"));

        let rows: [(&str, &[u8], u32, &str); 6] = [
            ("readable by others", b"", 0o644, "mode 0644"),
            ("group-writable", b"", 0o620, "mode 0620"),
            ("31 raw bytes", &[7u8; 31], 0o600, "holds 31 bytes"),
            (
                "a passphrase",
                b"correct horse battery staple\n",
                0o400,
                "32 bytes",
            ),
            ("all zeros", &[0u8; 32], 0o600, "all zeros"),
            ("huge", &[b'a'; 4096], 0o600, "is not a key"),
        ];
        for (what, contents, mode, expected) in rows {
            let bad = dir.path().join(what.replace(' ', "-"));
            let contents = if contents.is_empty() {
                format!("{}\n", key.to_hex()).into_bytes()
            } else {
                contents.to_vec()
            };
            write(&bad, &contents, mode);
            let error = load_key(&bad).unwrap_err();
            assert!(error.contains(expected), "{what}: {error}");
            assert!(
                error.contains(&bad.display().to_string()),
                "{what}: {error}"
            );
        }
        assert!(
            load_key(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(
            load_key(&dir.path().join("missing"))
                .unwrap_err()
                .contains("No such file")
        );
        // A credential as systemd makes it (0400) is fine.
        let credential = dir.path().join("credential");
        write(&credential, key.bytes(), 0o400);
        assert_eq!(load_key(&credential).unwrap(), key);
    }

    #[test]
    fn the_timestamp_survives_a_restart_with_the_margin() {
        let dir = tempfile::tempdir().unwrap();
        let store = TimestampStore::new(dir.path().join("state/ts"));
        assert_eq!(store.load().unwrap(), None);
        assert_eq!(store.start_timestamp().unwrap(), 0);
        store.save(123_456).unwrap();
        assert_eq!(store.load().unwrap(), Some(123_456));
        assert_eq!(store.start_timestamp().unwrap(), 123_456 + RESTART_MARGIN);
        store.save(TIMESTAMP_MAX).unwrap();
        assert_eq!(store.start_timestamp().unwrap(), TIMESTAMP_MAX);
        for junk in ["", "abc", "-5", "281474976710656", "12 13"] {
            std::fs::write(&store.path, junk).unwrap();
            let error = store.load().unwrap_err();
            assert!(error.contains("delete"), "{junk:?}: {error}");
        }
    }
}
