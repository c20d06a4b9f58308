//! The simulator's MAVLink 2 signing, as ArduPilot keeps it (`GCS_Signing.cpp`), sans-IO:
//! the stored key and timestamp, and the rules for activating, saving and advancing them.
//!
//! - The key and a timestamp are kept together in storage (ArduPilot's `StorageKeys` area,
//!   the struct `SigningKey { magic 0x3852fcd1, timestamp, secret_key[32] }`; here a 44-byte
//!   file in the same little-endian layout, `sim --signing-store FILE`), written by
//!   SETUP_SIGNING (refused while armed) and kept across restarts (SITL's `-w` wipes the
//!   parameters, not this area).
//! - Loading it (at boot, and at once on every link after SETUP_SIGNING) starts each link
//!   one minute past the stored timestamp (`load_signing_key`); an all-zero key and
//!   timestamp is "signing off".
//! - Each channel signs with its own link id (the channel number) and accepts unsigned
//!   frames only on channel 0 and for RADIO_STATUS/RADIO (`accept_unsigned_callback`; see
//!   [`flight_companion_core::link::signing::Acceptance::ArduPilot`]).
//! - The stored timestamp is raised to the newest link timestamp every 30 s
//!   (`save_signing_timestamp`, called with each heartbeat), and the links' timestamps are
//!   raised to the GPS time when the GPS gives it (`update_signing_timestamp` from
//!   `AP_RTC::set_utc_usec`); SITL's GPS time is its start time plus the simulated time
//!   since boot (`SIM_GPS.cpp` `simulation_timeval`), so it runs ahead of the wall clock with
//!   `--speedup`.

use flight_companion_core::link::signing::{KEY_LEN, RESTART_MARGIN, SigningKey};

/// ArduPilot's version magic of the stored key (`SIGNING_KEY_MAGIC`).
pub const SIGNING_KEY_MAGIC: u32 = 0x3852_fcd1;
/// magic (4) + timestamp (8) + key (32).
pub const STORED_KEY_LEN: usize = 4 + 8 + KEY_LEN;

/// The key and timestamp in storage.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub timestamp: u64,
    pub key: [u8; KEY_LEN],
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("timestamp", &self.timestamp)
            .field("key", &self.signing_key().map(|k| k.fingerprint()))
            .finish()
    }
}

impl StoredKey {
    pub fn encode(&self) -> [u8; STORED_KEY_LEN] {
        let mut out = [0u8; STORED_KEY_LEN];
        out[..4].copy_from_slice(&SIGNING_KEY_MAGIC.to_le_bytes());
        out[4..12].copy_from_slice(&self.timestamp.to_le_bytes());
        out[12..].copy_from_slice(&self.key);
        out
    }

    /// What storage holds: `Ok(None)` when it holds no key (ArduPilot: a wrong magic is no
    /// key, `signing_key_load`); an error when it is not this storage at all.
    pub fn decode(bytes: &[u8]) -> Result<Option<StoredKey>, String> {
        let Ok(bytes) = <&[u8; STORED_KEY_LEN]>::try_from(bytes) else {
            return Err(format!(
                "holds {} bytes, not the {STORED_KEY_LEN} of a stored signing key",
                bytes.len()
            ));
        };
        let (magic, rest) = bytes.split_at(4);
        let (timestamp, key) = rest.split_at(8);
        if magic != SIGNING_KEY_MAGIC.to_le_bytes() {
            return Ok(None);
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(timestamp);
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(key);
        Ok(Some(StoredKey {
            timestamp: u64::from_le_bytes(t),
            key: k,
        }))
    }

    /// The key, unless it is the all-zero "signing off".
    pub fn signing_key(&self) -> Option<SigningKey> {
        SigningKey::new(self.key).ok()
    }

    /// What each link starts with when this is loaded: the key and the stored timestamp
    /// plus one minute; `None` when signing is off.
    pub fn activation(&self) -> Option<(SigningKey, u64)> {
        let key = self.signing_key()?;
        Some((key, self.timestamp.saturating_add(RESTART_MARGIN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_round_trip_in_ardupilots_layout() {
        let stored = StoredKey {
            timestamp: 0x0102_0304_0506,
            key: std::array::from_fn(|i| i as u8 + 1),
        };
        let bytes = stored.encode();
        assert_eq!(&bytes[..4], &[0xd1, 0xfc, 0x52, 0x38]);
        assert_eq!(&bytes[4..10], &[6, 5, 4, 3, 2, 1]);
        assert_eq!(StoredKey::decode(&bytes).unwrap(), Some(stored.clone()));
        let (key, start) = stored.activation().unwrap();
        assert_eq!(key.bytes(), &stored.key);
        // GCS_Signing.cpp load_signing_key: one minute past the stored timestamp.
        assert_eq!(start, 0x0102_0304_0506 + 6_000_000);
        let mut other = bytes;
        other[0] ^= 1;
        assert_eq!(
            StoredKey::decode(&other).unwrap(),
            None,
            "another magic: no key"
        );
        assert!(
            StoredKey::decode(&bytes[..43])
                .unwrap_err()
                .contains("43 bytes")
        );
        let off = StoredKey {
            timestamp: 0,
            key: [0; KEY_LEN],
        };
        assert_eq!(off.activation(), None, "the all-zero key turns signing off");
        assert!(!format!("{stored:?}").contains("0102030405"));
    }
}
