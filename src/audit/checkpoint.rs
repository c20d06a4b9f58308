//! Checkpoints: the drone's signed statement "my log had N records with this Merkle root"
//! (pure, apart from reading and writing key files).
//!
//! The format is C2SP's, as transparency logs (Certificate Transparency's static logs, Go's
//! checksum database, Sigstore) publish theirs, so standard tools read them:
//! - a [tlog-checkpoint](https://c2sp.org/tlog-checkpoint): the note text `origin\nsize\n
//!   base64(root)\n`, the root being RFC 9162's Merkle tree hash over the records (see
//!   `merkle`);
//! - signed as a [signed note](https://c2sp.org/signed-note): a blank line, then
//!   `— <origin> base64(key ID || Ed25519 signature)`; the key ID is
//!   `SHA-256(name || 0x0A || 0x01 || public key)[:4]` and the verifier key (what the ground
//!   trusts) is the `name+hex(key ID)+base64(0x01 || public key)` text of Go's `sumdb/note`;
//! - sent to the ground as the body of C2SP [tlog-witness](https://c2sp.org/tlog-witness)'s
//!   `add-checkpoint`: `old <size>`, the consistency proof lines (base64), a blank line, the
//!   note. Over MQTT there is no answer: the witness keeps what verifies.
//!
//! The note itself is built and verified by the `signed_note` crate (Cloudflare's port of
//! Go's `golang.org/x/mod/sumdb/note`, the reference implementation); the key is an
//! `ed25519-dalek` key in a PKCS#8 PEM file, as `token keygen` writes them.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use signed_note::{Note, StandardVerifier, Verifier, VerifierList};

use super::merkle::Hash;

/// Largest note or witness message accepted from the network (a checkpoint is ~200 bytes).
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024;
/// The tlog-witness limit on consistency proof lines.
pub const PROOF_LINES_MAX: usize = 63;

/// A tree head: the log's name, its size and its Merkle root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text (three lines, no extension lines).
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a note text (extension lines are ignored, as the spec allows).
    pub fn parse_text(text: &str) -> Result<Checkpoint, String> {
        let mut lines = text.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err("the checkpoint has no origin line".into());
        }
        let size_text = lines.next().ok_or("the checkpoint has no size line")?;
        if size_text.is_empty()
            || !size_text.bytes().all(|b| b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(format!("`{size_text}` is not a tree size"));
        }
        let size: u64 = size_text
            .parse()
            .map_err(|_| format!("`{size_text}` is not a tree size"))?;
        let root_text = lines.next().ok_or("the checkpoint has no root hash line")?;
        let root: Hash = B64
            .decode(root_text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("`{root_text}` is not a base64 SHA-256 hash"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

pub use flight_companion_core::config::origin_is_valid;

/// The drone's signing key, with the name it signs as.
pub struct AuditKey {
    name: String,
    id: u32,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.verifier_key())
    }
}

impl signed_note::Signer for AuditKey {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

impl AuditKey {
    /// `origin` must pass [`origin_is_valid`].
    pub fn new(key: ed25519_dalek::SigningKey, origin: &str) -> Result<AuditKey, String> {
        if !origin_is_valid(origin) {
            return Err(format!(
                "`{}` cannot be a checkpoint origin: it must be non-empty, without spaces, `+` \
                 or control characters",
                crate::audit::escape(origin)
            ));
        }
        let vkey = signed_note::new_ed25519_verifier_key(origin, &key.verifying_key());
        let id = StandardVerifier::new(&vkey)
            .map_err(|e| format!("verifier key: {e}"))?
            .key_id();
        Ok(AuditKey {
            name: origin.to_owned(),
            id,
            key,
        })
    }

    /// The verifier key the ground trusts: `origin+keyid+base64(0x01||public key)`.
    pub fn verifier_key(&self) -> String {
        signed_note::new_ed25519_verifier_key(&self.name, &self.key.verifying_key())
    }

    pub fn origin(&self) -> &str {
        &self.name
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, String> {
        let mut note = Note::new(checkpoint.text().as_bytes(), &[])
            .map_err(|e| format!("checkpoint note: {e}"))?;
        note.add_sigs(&[self as &dyn signed_note::Signer])
            .map_err(|e| format!("signing the checkpoint: {e}"))?;
        String::from_utf8(note.to_bytes()).map_err(|e| e.to_string())
    }
}

/// Reads a PKCS#8 PEM Ed25519 private key.
pub fn load_signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        format!(
            "{}: not a PKCS#8 PEM Ed25519 private key ({e}); `flight-companion audit keygen \
             --out FILE` writes one",
            path.display()
        )
    })
}

/// Writes a new PKCS#8 PEM Ed25519 private key (mode 0600, refusing to overwrite).
pub fn generate_signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "no system randomness".to_string())?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| format!("encoding the key: {e}"))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// Verifier keys, one per line (`#` comments and blank lines skipped).
pub fn parse_verifier_keys(text: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        StandardVerifier::new(line).map_err(|e| {
            format!(
                "`{}` is not a verifier key ({e}); expected name+keyid+base64",
                crate::audit::escape(line)
            )
        })?;
        keys.push(line.to_owned());
    }
    if keys.is_empty() {
        return Err("no verifier key".into());
    }
    Ok(keys)
}

/// A checkpoint whose signature verified, with the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub checkpoint: Checkpoint,
    pub key_name: String,
    pub key_id: u32,
}

/// Verifies a signed note against trusted verifier keys (unknown keys' signatures are
/// ignored, as the spec says) and parses its checkpoint. The origin must be the name of a
/// key that signed it.
pub fn open(note: &[u8], trusted: &[String]) -> Result<Verified, String> {
    if note.len() > MESSAGE_BYTES_MAX {
        return Err(format!("a note of {} bytes is too large", note.len()));
    }
    let verifiers: Vec<Box<dyn Verifier>> = trusted
        .iter()
        .filter_map(|k| StandardVerifier::new(k).ok())
        .map(|v| Box::new(v) as Box<dyn Verifier>)
        .collect();
    let list = VerifierList::new(verifiers);
    let note = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    let (verified, _) = note.verify(&list).map_err(|e| match e {
        signed_note::NoteError::UnverifiedNote => {
            "no signature by a trusted key (wrong --key, or not this log's checkpoint)".to_string()
        }
        e => format!("signature: {e}"),
    })?;
    let text = std::str::from_utf8(note.text()).map_err(|e| e.to_string())?;
    let checkpoint = Checkpoint::parse_text(text)?;
    let signer = verified
        .iter()
        .find(|s| s.name() == checkpoint.origin)
        .ok_or_else(|| {
            format!(
                "the checkpoint's origin `{}` is not the name of the key that signed it",
                crate::audit::escape(&checkpoint.origin)
            )
        })?;
    Ok(Verified {
        key_name: signer.name().to_owned(),
        key_id: signer.id(),
        checkpoint,
    })
}

/// What the drone publishes: a tlog-witness `add-checkpoint` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessMessage {
    /// The size of the checkpoint the proof starts from (0: no proof).
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed note.
    pub note: String,
}

impl WitnessMessage {
    pub fn encode(&self) -> String {
        let mut s = format!("old {}\n", self.old_size);
        for h in &self.proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.note);
        s
    }

    pub fn decode(bytes: &[u8]) -> Result<WitnessMessage, String> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(format!("a message of {} bytes is too large", bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let (head, note) = text
            .split_once("\n\n")
            .ok_or("no blank line between the proof and the checkpoint")?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or("the first line is not `old <size>`")?;
        if old.is_empty()
            || !old.bytes().all(|b| b.is_ascii_digit())
            || (old.len() > 1 && old.starts_with('0'))
        {
            return Err(format!("`old {}` is not a size", crate::audit::escape(old)));
        }
        let old_size: u64 = old.parse().map_err(|_| "the old size is too large")?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == PROOF_LINES_MAX {
                return Err(format!("more than {PROOF_LINES_MAX} proof lines"));
            }
            let hash: Hash = B64
                .decode(line)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    format!("proof line `{}` is not a hash", crate::audit::escape(line))
                })?;
            proof.push(hash);
        }
        if old_size == 0 && !proof.is_empty() {
            return Err("a proof from size 0 must be empty".into());
        }
        Ok(WitnessMessage {
            old_size,
            proof,
            note: note.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::new(
            ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
            "example.net/drone-1/audit",
        )
        .unwrap()
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_only() {
        let k = key();
        let cp = Checkpoint {
            origin: "example.net/drone-1/audit".into(),
            size: 42,
            root: [9; 32],
        };
        let note = k.sign(&cp).unwrap();
        // The C2SP layout: three lines, a blank line, one signature line with an em dash.
        let lines: Vec<&str> = note.split('\n').collect();
        assert_eq!(lines[0], "example.net/drone-1/audit");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[3], "");
        assert!(
            lines[4].starts_with("\u{2014} example.net/drone-1/audit "),
            "{note}"
        );
        let vkey = k.verifier_key();
        assert!(vkey.starts_with("example.net/drone-1/audit+"), "{vkey}");
        let opened = open(note.as_bytes(), std::slice::from_ref(&vkey)).unwrap();
        assert_eq!(opened.checkpoint, cp);
        // Another key, a changed size, a changed root: refused.
        let other = AuditKey::new(
            ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]),
            "example.net/drone-1/audit",
        )
        .unwrap();
        assert!(open(note.as_bytes(), &[other.verifier_key()]).is_err());
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(open(forged.as_bytes(), std::slice::from_ref(&vkey)).is_err());
        // A checkpoint whose origin differs from the signing key's name.
        let foreign = Checkpoint {
            origin: "someone-else".into(),
            ..cp.clone()
        };
        let note = k.sign(&foreign).unwrap();
        assert!(open(note.as_bytes(), &[vkey]).is_err());
    }

    #[test]
    fn witness_messages_round_trip_and_bad_ones_are_refused() {
        let m = WitnessMessage {
            old_size: 5,
            proof: vec![[1; 32], [2; 32]],
            note: key()
                .sign(&Checkpoint {
                    origin: "example.net/drone-1/audit".into(),
                    size: 9,
                    root: [3; 32],
                })
                .unwrap(),
        };
        assert_eq!(WitnessMessage::decode(m.encode().as_bytes()).unwrap(), m);
        for bad in [
            "",
            "old 5\n",
            "old 05\n\nx",
            "new 5\n\nx",
            "old 0\nAAAA\n\nx",
            "old 1\nnot base64!\n\nx",
        ] {
            assert!(WitnessMessage::decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(WitnessMessage::decode(&[0xff; 10]).is_err());
    }

    #[test]
    fn checkpoint_texts_are_strict() {
        for bad in ["", "o\n", "o\n01\nAAAA\n", "o\n-1\n", "o\n1\nAAAA\n"] {
            assert!(Checkpoint::parse_text(bad).is_err(), "{bad:?}");
        }
        assert!(!origin_is_valid("a b"));
        assert!(!origin_is_valid("a+b"));
        assert!(!origin_is_valid(""));
        assert!(origin_is_valid("fleet-a/drone-01/audit"));
    }

    #[test]
    fn keys_are_written_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/audit.pem");
        let written = generate_signing_key(&path).unwrap();
        let read = load_signing_key(&path).unwrap();
        assert_eq!(written.to_bytes(), read.to_bytes());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(generate_signing_key(&path).is_err(), "overwrote a key");
    }
}
