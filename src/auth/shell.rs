//! The IO around the gate: reading keys and the persisted denylist, writing the denylist,
//! and the `token` commands.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::revocation::Denylist;
use super::token::{Claims, KeyAlg, TrustedKey, VerifierConfig};
use super::{GateConfig, RateLimits};
use crate::config::Config;
use crate::role::Role;

/// Seconds since the Unix epoch (shells only).
pub fn unix_s_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the gate's configuration: reads the key files and the persisted denylist.
pub fn gate_config(config: &Config) -> Result<GateConfig, String> {
    let a = &config.auth;
    let mut keys = Vec::new();
    for k in &a.keys {
        let pem = std::fs::read(&k.public_key_path).map_err(|e| {
            format!(
                "auth.keys `{}`: cannot read {}: {e}",
                k.kid,
                k.public_key_path.display()
            )
        })?;
        keys.push(TrustedKey::from_pem(&k.kid, k.alg, &pem).map_err(|e| {
            format!(
                "auth.keys `{}` ({}): {e}",
                k.kid,
                k.public_key_path.display()
            )
        })?);
    }
    let mut audiences = vec![config.mcp.server_name.clone()];
    audiences.extend(a.fleet.iter().cloned());
    let mut denylist = Denylist::default();
    denylist.jtis.extend(a.revoked_jtis.iter().cloned());
    denylist.subjects.extend(a.revoked_subjects.iter().cloned());
    if let Some(path) = &a.revocation_path {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let persisted: Denylist = serde_json::from_str(&text)
                    .map_err(|e| format!("auth.revocation_path {}: {e}", path.display()))?;
                denylist.merge(&persisted);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("auth.revocation_path {}: {e}", path.display())),
        }
    }
    Ok(GateConfig {
        verifier: VerifierConfig {
            keys,
            audiences,
            clock_skew_s: a.clock_skew_s,
        },
        denylist,
        allow_anonymous: a.danger_allow_anonymous,
        lease_timeout: Duration::from_millis(a.control_lease_timeout_ms),
        limits: RateLimits {
            calls_per_s: a.calls_per_s,
            calls_burst: a.calls_burst,
            motion_calls_per_s: a.motion_calls_per_s,
            motion_calls_burst: a.motion_calls_burst,
        },
        broker_identities: a
            .broker_identity
            .iter()
            .map(|b| (b.client_id.clone(), (b.subject.clone(), b.role)))
            .collect(),
        sessions: crate::auth::SessionLimits {
            sessions_max: config.mcp.sessions_max,
            reserved_admin: config.mcp.sessions_reserved_admin,
            identity_sessions_max: config.mcp.identity_sessions_max,
        },
    })
}

/// Writes the denylist atomically (temporary file, fsync, rename).
pub fn persist_denylist(path: &Path, denylist: &Denylist) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(denylist).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Parses `90s`, `15m`, `8h`, `30d` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 8h or 30d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("`{text}`: unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err("the duration must be above 0".into());
    }
    Ok(Duration::from_secs(secs))
}

/// `token keygen`: writes `DIR/<kid>.key` (PKCS#8, mode 0600) and `DIR/<kid>.pub`.
pub fn keygen_to(
    dir: &Path,
    alg: KeyAlg,
    kid: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    if kid.is_empty() || kid.contains(['/', '\\']) || kid.starts_with('.') {
        return Err(format!("kid `{kid}` cannot be a file name"));
    }
    let (private, public) = super::token::keygen(alg)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key_path = dir.join(format!("{kid}.key"));
    let pub_path = dir.join(format!("{kid}.pub"));
    write_private(&key_path, private.as_bytes())?;
    std::fs::write(&pub_path, public).map_err(|e| format!("{}: {e}", pub_path.display()))?;
    Ok((key_path, pub_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What `token issue` needs.
pub struct IssueRequest<'a> {
    pub key_path: &'a Path,
    pub kid: Option<&'a str>,
    pub role: Role,
    pub subject: &'a str,
    pub audience: &'a str,
    pub ttl: Duration,
    pub jti: Option<String>,
    pub now_unix_s: u64,
}

/// Signs a token with the private key file; the kid defaults to the file's stem.
pub fn issue_from_file(req: &IssueRequest<'_>) -> Result<String, String> {
    if req.role == Role::System {
        return Err("SYSTEM is never granted to the ground; use ADMIN at most".into());
    }
    let pem =
        std::fs::read(req.key_path).map_err(|e| format!("{}: {e}", req.key_path.display()))?;
    let alg = super::token::private_key_alg(&pem).ok_or_else(|| {
        format!(
            "{}: not a PKCS#8 Ed25519 or P-256 private key",
            req.key_path.display()
        )
    })?;
    let stem = req
        .key_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("key")
        .to_owned();
    let kid = req.kid.map(str::to_owned).unwrap_or(stem);
    let jti = req
        .jti
        .clone()
        .unwrap_or_else(|| format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)));
    let claims = Claims {
        sub: req.subject.to_owned(),
        aud: serde_json::Value::String(req.audience.to_owned()),
        exp: req.now_unix_s.saturating_add(req.ttl.as_secs()),
        iat: req.now_unix_s,
        nbf: Some(req.now_unix_s),
        jti: Some(jti),
        role: req.role.name().to_owned(),
    };
    super::token::issue(&pem, alg, &kid, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("8h").unwrap(), Duration::from_secs(8 * 3600));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn keygen_issue_and_verify_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = keygen_to(dir.path(), KeyAlg::Es256, "ground-2026").unwrap();
        let now = 1_800_000_000;
        let token = issue_from_file(&IssueRequest {
            key_path: &key,
            kid: None,
            role: Role::Operator,
            subject: "pilot",
            audience: "fleet",
            ttl: Duration::from_secs(60),
            jti: None,
            now_unix_s: now,
        })
        .unwrap();
        let verifier = VerifierConfig {
            keys: vec![
                TrustedKey::from_pem(
                    "ground-2026",
                    KeyAlg::Es256,
                    &std::fs::read(public).unwrap(),
                )
                .unwrap(),
            ],
            audiences: vec!["fleet".into()],
            clock_skew_s: 0,
        };
        let id = super::super::token::verify(&token, &verifier, now).unwrap();
        assert_eq!((id.role, id.subject.as_str()), (Role::Operator, "pilot"));
        assert!(super::super::token::verify(&token, &verifier, now + 61).is_err());
    }
}
