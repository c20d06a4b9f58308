//! The certificates of a trial or a small deployment: a CA, one certificate per identity
//! (the broker, the drone, each ground user or station), a certificate revocation list the
//! broker checks, and the `flight-companion cert` commands that issue and revoke more later.
//!
//! The certificate's common name (CN) is the identity the broker authenticates: with
//! Mosquitto's `use_identity_as_username` it is the MQTT user name, with
//! `use_username_as_clientid` also the MQTT client id, and the ACL binds every client's
//! topics to it (`%u`). So a name is restricted to what is safe in a topic level and in an
//! ACL substitution ([`valid_identity_name`]).
//!
//! Layout of a certificates directory (`DIR/certs` of `dev-setup`):
//! - `ca.pem`, `ca.key` (0600): the CA; the key signs certificates and the CRL.
//! - `broker.pem|key`, `drone.pem|key`: the broker (server auth) and the drone (client auth).
//! - `clients/NAME.pem|key`: a ground identity (client auth), CN `NAME`.
//! - `crl.pem`: the revocation list (Mosquitto `crlfile`), re-signed on every change.
//! - `index.json`: every certificate issued (name, serial, kind, expiry, revocation).
//!
//! Files are written with their final mode (keys 0600) and replaced by rename, so a reader
//! (the broker) never sees half a file.

use std::path::{Path, PathBuf};

#[cfg(feature = "dev-setup")]
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
#[cfg(feature = "dev-setup")]
use time::OffsetDateTime;

/// Lifetime of the CA (five years): it outlives every certificate it signs.
pub const CA_DAYS: u32 = 5 * 365;
/// Lifetime of the broker's and the drone's certificates.
pub const SERVICE_DAYS: u32 = 365;
/// Default lifetime of a ground identity's certificate (`cert issue --days`).
pub const CLIENT_DAYS_DEFAULT: u32 = 90;
/// Longest lifetime `cert issue` accepts for a ground identity.
pub const CLIENT_DAYS_MAX: u32 = 825;
/// The CRL's `nextUpdate`: a broker refuses every client once its CRL has expired, so it is
/// re-signed on every issue and revoke, and `cert crl` renews it.
pub const CRL_DAYS: u32 = 365;
pub use flight_companion_core::config::NAME_CHARS_MAX;
/// The CN of the dev CA.
pub const CA_NAME: &str = "flight-companion dev CA";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The broker's TLS server certificate.
    Broker,
    /// The drone's client certificate (its CN is its MQTT client id and server-id).
    Drone,
    /// A ground user or station.
    Client,
}

/// One issued certificate, as `index.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub not_after_unix_s: i64,
    /// When it was revoked (Unix seconds); `None` while valid.
    pub revoked_unix_s: Option<i64>,
}

#[cfg(feature = "dev-setup")]
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Monotonic CRL number (RFC 5280 5.2.3).
    crl_number: u64,
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[cfg(feature = "dev-setup")]
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

// Only the PKI reads and writes files here; reading a CN is the MQTT crate's.
#[cfg(feature = "dev-setup")]
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |e| CertError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

pub use flight_companion_core::config::valid_identity_name;

#[cfg(feature = "dev-setup")]
fn now_utc(now_unix_s: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(now_unix_s)
        .map_err(|e| CertError::Invalid(format!("the clock is out of range: {e}")))
}

#[cfg(feature = "dev-setup")]
fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

#[cfg(feature = "dev-setup")]
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    // Positive and without a leading zero byte: 16 octets in DER, as RFC 5280 wants.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

#[cfg(feature = "dev-setup")]
fn hex(bytes: &[u8]) -> String {
    flight_companion_core::escape::hex(bytes).to_uppercase()
}

#[cfg(feature = "dev-setup")]
fn unhex(text: &str) -> Result<Vec<u8>, CertError> {
    if text.len() % 2 != 0 {
        return Err(CertError::Invalid(format!("serial `{text}` is not hex")));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| CertError::Invalid(format!("serial `{text}` is not hex")))
        })
        .collect()
}

#[cfg(feature = "dev-setup")]
fn set_mode(path: &Path, mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(feature = "dev-setup")]
/// Writes `contents` to `path` with `mode`, through a temporary file and a rename.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    set_mode(&tmp, mode)?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(feature = "dev-setup")]
/// A certificates directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

#[cfg(feature = "dev-setup")]
/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    pub name: &'a str,
    pub kind: Kind,
    /// Subject alternative names (the broker's host names and addresses).
    pub sans: Vec<String>,
    pub days: u32,
    pub now_unix_s: i64,
}

#[cfg(feature = "dev-setup")]
impl Pki {
    pub fn new(dir: impl Into<PathBuf>) -> Pki {
        Pki { dir: dir.into() }
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// Where a certificate and its key go.
    pub fn paths(&self, name: &str, kind: Kind) -> (PathBuf, PathBuf) {
        match kind {
            Kind::Broker => (self.dir.join("broker.pem"), self.dir.join("broker.key")),
            Kind::Drone => (self.dir.join("drone.pem"), self.dir.join("drone.key")),
            Kind::Client => {
                let dir = self.dir.join("clients");
                (
                    dir.join(format!("{name}.pem")),
                    dir.join(format!("{name}.key")),
                )
            }
        }
    }

    fn read_index(&self) -> Result<Index, CertError> {
        let path = self.index_path();
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text)
            .map_err(|e| CertError::Invalid(format!("{}: {e}", path.display())))
    }

    fn write_index(&self, index: &Index) -> Result<(), CertError> {
        let text = serde_json::to_string_pretty(index)
            .map_err(|e| CertError::Invalid(format!("index: {e}")))?;
        write_atomic(&self.index_path(), text.as_bytes(), 0o644)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CertError> {
        let key_path = self.ca_key_path();
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let cert_path = self.ca_cert_path();
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        Ok(Issuer::from_ca_cert_pem(&cert_pem, key)?)
    }

    /// Makes the directory, the CA, an empty index and an empty CRL.
    pub fn create(&self, now_unix_s: i64) -> Result<(), CertError> {
        std::fs::create_dir_all(self.dir.join("clients")).map_err(io(&self.dir))?;
        set_mode(&self.dir, 0o700)?;
        let now = now_utc(now_unix_s)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(CA_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(i64::from(CA_DAYS));
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        let ca = CertifiedIssuer::self_signed(params, key)?;
        write_atomic(&self.ca_cert_path(), ca.pem().as_bytes(), 0o644)?;
        write_atomic(
            &self.ca_key_path(),
            ca.key().serialize_pem().as_bytes(),
            0o600,
        )?;
        self.write_index(&Index::default())?;
        self.write_crl(now_unix_s)
    }

    /// Issues a certificate signed by the CA; refuses a name that is already valid.
    pub fn issue(&self, request: &IssueRequest) -> Result<Entry, CertError> {
        valid_identity_name(request.name).map_err(CertError::Invalid)?;
        if request.kind == Kind::Client && !(1..=CLIENT_DAYS_MAX).contains(&request.days) {
            return Err(CertError::Invalid(format!(
                "a ground certificate lives 1 to {CLIENT_DAYS_MAX} days; got {}",
                request.days
            )));
        }
        let mut index = self.read_index()?;
        if let Some(e) = index.entries.iter().find(|e| {
            e.name == request.name
                && e.revoked_unix_s.is_none()
                && e.not_after_unix_s > request.now_unix_s
        }) {
            return Err(CertError::Invalid(format!(
                "`{}` already has a valid certificate (serial {}, {}); revoke it first \
                 (`flight-companion cert revoke`) or choose another name",
                e.name,
                e.serial,
                e.cert_path.display()
            )));
        }
        let issuer = self.issuer()?;
        let now = now_utc(request.now_unix_s)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(request.sans.clone())?;
        params.distinguished_name = dn(request.name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match request.kind {
            Kind::Broker => ExtendedKeyUsagePurpose::ServerAuth,
            Kind::Drone | Kind::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(i64::from(request.days));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = self.paths(request.name, request.kind);
        if let Some(parent) = cert_path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
        let entry = Entry {
            name: request.name.to_owned(),
            kind: request.kind,
            serial: hex(&serial.to_bytes()),
            cert_path,
            key_path,
            not_after_unix_s: params.not_after.unix_timestamp(),
            revoked_unix_s: None,
        };
        index.entries.push(entry.clone());
        self.write_index(&index)?;
        // Re-signed on every change: a fresh nextUpdate.
        self.write_crl(request.now_unix_s)?;
        Ok(entry)
    }

    /// Revokes every valid certificate of `name` and re-signs the CRL. Returns them.
    pub fn revoke(&self, name: &str, now_unix_s: i64) -> Result<Vec<Entry>, CertError> {
        let mut index = self.read_index()?;
        let mut revoked = Vec::new();
        for e in &mut index.entries {
            if e.name == name && e.revoked_unix_s.is_none() {
                e.revoked_unix_s = Some(now_unix_s);
                revoked.push(e.clone());
            }
        }
        if revoked.is_empty() {
            let known: Vec<&str> = index.entries.iter().map(|e| e.name.as_str()).collect();
            return Err(CertError::Invalid(format!(
                "no valid certificate named `{name}`; issued: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        self.write_index(&index)?;
        self.write_crl(now_unix_s)?;
        Ok(revoked)
    }

    /// Every certificate issued, in order.
    pub fn list(&self) -> Result<Vec<Entry>, CertError> {
        Ok(self.read_index()?.entries)
    }

    /// Signs a new CRL listing every revoked serial, with a fresh `nextUpdate`.
    pub fn write_crl(&self, now_unix_s: i64) -> Result<(), CertError> {
        let mut index = self.read_index()?;
        index.crl_number += 1;
        let now = now_utc(now_unix_s)?;
        let revoked_certs = index
            .entries
            .iter()
            .filter_map(|e| e.revoked_unix_s.map(|t| (e, t)))
            .map(|(e, t)| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(&e.serial)?),
                    revocation_time: now_utc(t)?,
                    reason_code: Some(RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CertError>>()?;
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(i64::from(CRL_DAYS)),
            crl_number: SerialNumber::from_slice(&index.crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer()?)?;
        write_atomic(&self.crl_path(), crl.pem()?.as_bytes(), 0o644)?;
        self.write_index(&index)
    }
}

/// The common name (CN) of the first certificate in a PEM file: the identity the broker
/// authenticates (its user name, and its client id with `use_username_as_clientid`).
/// The MQTT crate's, which the ground bridge shares; here with this module's error.
pub fn common_name(pem_path: &Path) -> Result<String, CertError> {
    Ok(flight_companion_mqtt::common_name(pem_path)?)
}

impl From<flight_companion_mqtt::CommonNameError> for CertError {
    fn from(e: flight_companion_mqtt::CommonNameError) -> Self {
        use flight_companion_mqtt::CommonNameError;
        match e {
            CommonNameError::Io { path, message } => CertError::Io { path, message },
            CommonNameError::Invalid(message) => CertError::Invalid(message),
        }
    }
}

#[cfg(feature = "dev-setup")]
#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn temp_pki(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "fc-cert-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        Pki::new(dir)
    }

    fn client(name: &str) -> IssueRequest<'_> {
        IssueRequest {
            name,
            kind: Kind::Client,
            sans: vec![],
            days: CLIENT_DAYS_DEFAULT,
            now_unix_s: NOW,
        }
    }

    #[test]
    fn names_that_would_change_a_topic_or_an_acl_are_refused() {
        for good in ["ground-1", "alice", "gcs.field_2", "A9"] {
            assert!(valid_identity_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(NAME_CHARS_MAX + 1);
        for bad in [
            "", "a/b", "a+", "#", "$SYS", "a b", "-x", ".x", "é", "a\0b", &long,
        ] {
            assert!(valid_identity_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn issue_revoke_and_the_crl() {
        let pki = temp_pki("ok");
        pki.create(NOW).unwrap();
        let alice = pki.issue(&client("alice")).unwrap();
        assert_eq!(common_name(&alice.cert_path).unwrap(), "alice");
        assert_eq!(
            alice.not_after_unix_s,
            NOW + i64::from(CLIENT_DAYS_DEFAULT) * 86_400
        );
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&alice.key_path), 0o600);
        assert_eq!(mode(&pki.dir.join("ca.key")), 0o600);
        // A second valid certificate for the same name is refused.
        let e = pki.issue(&client("alice")).unwrap_err().to_string();
        assert!(e.contains("already has a valid certificate"), "{e}");
        // A bad name or lifetime is refused before anything is written.
        assert!(pki.issue(&client("a/b")).is_err());
        assert!(
            pki.issue(&IssueRequest {
                days: CLIENT_DAYS_MAX + 1,
                ..client("bob")
            })
            .is_err()
        );
        let crl_before = std::fs::read_to_string(pki.crl_path()).unwrap();
        let revoked = pki.revoke("alice", NOW + 10).unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].serial, alice.serial);
        let crl_after = std::fs::read_to_string(pki.crl_path()).unwrap();
        assert_ne!(crl_before, crl_after);
        // The CRL names the revoked serial.
        let der =
            rustls::pki_types::CertificateRevocationListDer::from_pem_slice(crl_after.as_bytes())
                .unwrap();
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![alice.serial.clone()]);
        // Revoking twice says there is nothing left to revoke; the name can be issued again.
        assert!(pki.revoke("alice", NOW + 20).is_err());
        pki.issue(&client("alice")).unwrap();
        assert_eq!(pki.list().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&pki.dir);
    }

    use rustls::pki_types::pem::PemObject as _;
    use x509_parser::prelude::FromDer as _;
}
