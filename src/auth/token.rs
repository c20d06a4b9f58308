//! Token verification (sans-IO): a pure function of (token, trusted keys, now).
//!
//! A token is a JWT signed with Ed25519 (`EdDSA`) or P-256 (`ES256`). The header's `kid`
//! selects one trusted key, and that key's algorithm is pinned: a header naming any other
//! algorithm (`none`, `HS256` "signed" with the public key, the other curve) is refused
//! before any signature check, which is what defeats algorithm confusion.
//! `exp`, `nbf` and `iat` are checked here against `now_unix_s` with the configured skew
//! (the library's own time checks are off because they read the clock).
//!
//! Claims: `sub` (person or agent, required), `aud` (this drone's server name or its fleet,
//! string or array, required), `exp` (required), `iat` (required), `nbf` (optional), `jti`
//! (optional, used for revocation) and `role` (`PUBLIC`, `READ_ONLY`, `OPERATOR`, `ADMIN`;
//! `SYSTEM` is never accepted from a token).

use std::collections::HashSet;
use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::role::Role;

/// Largest token accepted, so a hostile client cannot make us base64-decode megabytes.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Longest `sub` or `jti` kept (they go into every audit record).
pub const CLAIM_CHARS_MAX: usize = 128;

pub use flight_companion_core::config::KeyAlg;

/// The JOSE algorithm of a pinned key.
fn jose(alg: KeyAlg) -> Algorithm {
    match alg {
        KeyAlg::EdDsa => Algorithm::EdDSA,
        KeyAlg::Es256 => Algorithm::ES256,
    }
}

/// One public key the drone trusts, with its pinned algorithm.
#[derive(Clone)]
pub struct TrustedKey {
    pub kid: String,
    pub alg: KeyAlg,
    key: DecodingKey,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedKey({} {})", self.kid, self.alg.name())
    }
}

impl TrustedKey {
    /// Parses a PEM public key (SubjectPublicKeyInfo) for `alg`.
    pub fn from_pem(kid: &str, alg: KeyAlg, pem: &[u8]) -> Result<TrustedKey, String> {
        let key = match alg {
            KeyAlg::EdDsa => DecodingKey::from_ed_pem(pem),
            KeyAlg::Es256 => DecodingKey::from_ec_pem(pem),
        }
        .map_err(|e| format!("not a PEM {} public key: {e}", alg.name()))?;
        Ok(TrustedKey {
            kid: kid.to_owned(),
            alg,
            key,
        })
    }
}

/// What verification needs besides the token: keys, audiences, skew.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub keys: Vec<TrustedKey>,
    /// Accepted `aud` values: this drone's server name and, if any, its fleet.
    pub audiences: Vec<String>,
    /// Tolerated clock difference for `exp`, `nbf` and `iat`, seconds.
    pub clock_skew_s: u64,
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub subject: String,
    pub role: Role,
    pub jti: Option<String>,
    pub kid: String,
    /// `exp`, seconds since the Unix epoch.
    pub expires_unix_s: u64,
}

/// Why a token was refused. `Display` is the message the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    TooLarge(usize),
    Malformed(String),
    NoKid,
    UnknownKid(String),
    AlgorithmNotAllowed {
        kid: String,
        got: String,
        pinned: &'static str,
    },
    BadSignature,
    MissingClaim(&'static str),
    BadClaim(&'static str, String),
    Expired {
        exp: u64,
        now: u64,
    },
    NotYetValid {
        nbf: u64,
        now: u64,
    },
    IssuedInFuture {
        iat: u64,
        now: u64,
    },
    WrongAudience {
        got: Vec<String>,
        accepted: Vec<String>,
    },
    RoleNotAllowed(Role),
}

impl TokenError {
    /// A short stable name for audit records and the security summary.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing_token",
            TokenError::TooLarge(_) | TokenError::Malformed(_) => "malformed_token",
            TokenError::NoKid | TokenError::UnknownKid(_) => "unknown_key",
            TokenError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            TokenError::BadSignature => "bad_signature",
            TokenError::MissingClaim(_) | TokenError::BadClaim(..) => "bad_claims",
            TokenError::Expired { .. } => "expired_token",
            TokenError::NotYetValid { .. } | TokenError::IssuedInFuture { .. } => {
                "token_not_yet_valid"
            }
            TokenError::WrongAudience { .. } => "wrong_audience",
            TokenError::RoleNotAllowed(_) => "role_not_allowed",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Missing => write!(
                f,
                "no token: put a JWT in params._meta[\"{}\"] of initialize",
                super::TOKEN_META_KEY
            ),
            TokenError::TooLarge(n) => {
                write!(f, "token of {n} bytes; at most {TOKEN_BYTES_MAX} accepted")
            }
            TokenError::Malformed(why) => write!(f, "malformed token: {why}"),
            TokenError::NoKid => write!(f, "token header has no `kid`; name the signing key"),
            TokenError::UnknownKid(kid) => write!(f, "token signed by unknown key `{kid}`"),
            TokenError::AlgorithmNotAllowed { kid, got, pinned } => write!(
                f,
                "token algorithm {got} not allowed for key `{kid}`; only {pinned}"
            ),
            TokenError::BadSignature => write!(f, "token signature does not verify"),
            TokenError::MissingClaim(c) => write!(f, "token has no `{c}` claim"),
            TokenError::BadClaim(c, why) => write!(f, "token claim `{c}`: {why}"),
            TokenError::Expired { exp, now } => write!(
                f,
                "token expired {} s ago (exp {exp}); get a new token and initialize again",
                now.saturating_sub(*exp)
            ),
            TokenError::NotYetValid { nbf, now } => write!(
                f,
                "token not valid for another {} s (nbf {nbf})",
                nbf.saturating_sub(*now)
            ),
            TokenError::IssuedInFuture { iat, now } => write!(
                f,
                "token issued {} s in the future (iat {iat}); check the clocks",
                iat.saturating_sub(*now)
            ),
            TokenError::WrongAudience { got, accepted } => write!(
                f,
                "token audience {got:?} is not this drone; accepted: {accepted:?}"
            ),
            TokenError::RoleNotAllowed(role) => {
                write!(f, "role {role} cannot be granted by a token")
            }
        }
    }
}

/// The claims as signed. `aud` is a string or an array, as RFC 7519 allows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub aud: Value,
    pub exp: u64,
    pub iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    pub role: String,
}

fn claim<'a>(
    map: &'a serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<&'a Value, TokenError> {
    map.get(name).ok_or(TokenError::MissingClaim(name))
}

fn timestamp(
    map: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    match map.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| TokenError::BadClaim(name, "not a whole number of seconds".into())),
    }
}

fn short_string(v: &Value, name: &'static str) -> Result<String, TokenError> {
    let s = v
        .as_str()
        .ok_or_else(|| TokenError::BadClaim(name, "not a string".into()))?;
    if s.is_empty() || s.chars().count() > CLAIM_CHARS_MAX {
        return Err(TokenError::BadClaim(
            name,
            format!("must be 1 to {CLAIM_CHARS_MAX} characters"),
        ));
    }
    Ok(s.to_owned())
}

/// Verifies `token` at `now_unix_s`. Pure: no clock, no files.
pub fn verify(
    token: &str,
    config: &VerifierConfig,
    now_unix_s: u64,
) -> Result<Identity, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > TOKEN_BYTES_MAX {
        return Err(TokenError::TooLarge(token.len()));
    }
    // The raw header first: `alg: none` and unknown algorithms are not representable in the
    // library's header type, and we want to name them in the refusal.
    let header_b64 = token.split('.').next().unwrap_or_default();
    let header_json = base64_url_decode(header_b64)
        .ok_or_else(|| TokenError::Malformed("header is not base64url".into()))?;
    let header: Value = serde_json::from_slice(&header_json)
        .map_err(|_| TokenError::Malformed("header is not JSON".into()))?;
    if token.split('.').count() != 3 {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Malformed("header has no `alg`".into()))?
        .to_owned();
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(TokenError::NoKid)?;
    let key = config
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| TokenError::UnknownKid(kid.chars().take(64).collect()))?;
    if alg != key.alg.name() {
        return Err(TokenError::AlgorithmNotAllowed {
            kid: key.kid.clone(),
            got: alg.chars().take(16).collect(),
            pinned: key.alg.name(),
        });
    }
    let mut validation = Validation::new(jose(key.alg));
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed {
                kid: key.kid.clone(),
                got: alg.clone(),
                pinned: key.alg.name(),
            },
            _ => TokenError::Malformed(e.to_string()),
        })?;
    let claims = data.claims;
    let skew = config.clock_skew_s;
    let exp = timestamp(&claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    let iat = timestamp(&claims, "iat")?.ok_or(TokenError::MissingClaim("iat"))?;
    if exp.saturating_add(skew) <= now_unix_s {
        return Err(TokenError::Expired {
            exp,
            now: now_unix_s,
        });
    }
    if let Some(nbf) = timestamp(&claims, "nbf")?
        && nbf > now_unix_s.saturating_add(skew)
    {
        return Err(TokenError::NotYetValid {
            nbf,
            now: now_unix_s,
        });
    }
    if iat > now_unix_s.saturating_add(skew) {
        return Err(TokenError::IssuedInFuture {
            iat,
            now: now_unix_s,
        });
    }
    let aud: Vec<String> = match claim(&claims, "aud")? {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => return Err(TokenError::BadClaim("aud", "not a string or array".into())),
    };
    if !aud.iter().any(|a| config.audiences.contains(a)) {
        return Err(TokenError::WrongAudience {
            got: aud.into_iter().take(8).collect(),
            accepted: config.audiences.clone(),
        });
    }
    let subject = short_string(claim(&claims, "sub")?, "sub")?;
    let role_name = claim(&claims, "role")?
        .as_str()
        .ok_or_else(|| TokenError::BadClaim("role", "not a string".into()))?;
    let role = Role::from_name(role_name).ok_or_else(|| {
        TokenError::BadClaim(
            "role",
            "unknown role; one of PUBLIC, READ_ONLY, OPERATOR, ADMIN".into(),
        )
    })?;
    if role == Role::System {
        return Err(TokenError::RoleNotAllowed(role));
    }
    let jti = match claims.get("jti") {
        None => None,
        Some(v) => Some(short_string(v, "jti")?),
    };
    Ok(Identity {
        subject,
        role,
        jti,
        kid: key.kid.clone(),
        expires_unix_s: exp,
    })
}

fn base64_url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// Signs `claims` with a PKCS#8 PEM private key (for `token issue`, dev-setup and tests).
pub fn issue(
    private_pem: &[u8],
    alg: KeyAlg,
    kid: &str,
    claims: &Claims,
) -> Result<String, String> {
    let key = match alg {
        KeyAlg::EdDsa => EncodingKey::from_ed_pem(private_pem),
        KeyAlg::Es256 => EncodingKey::from_ec_pem(private_pem),
    }
    .map_err(|e| format!("not a PKCS#8 PEM {} private key: {e}", alg.name()))?;
    let mut header = Header::new(jose(alg));
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).map_err(|e| format!("cannot sign: {e}"))
}

/// Guesses the algorithm of a PKCS#8 PEM private key.
pub fn private_key_alg(private_pem: &[u8]) -> Option<KeyAlg> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let text = std::str::from_utf8(private_pem).ok()?;
    if ed25519_dalek::SigningKey::from_pkcs8_pem(text).is_ok() {
        Some(KeyAlg::EdDsa)
    } else if p256::SecretKey::from_pkcs8_pem(text).is_ok() {
        Some(KeyAlg::Es256)
    } else {
        None
    }
}

/// A new key pair: (PKCS#8 private key PEM, SubjectPublicKeyInfo public key PEM).
pub fn keygen(alg: KeyAlg) -> Result<(String, String), String> {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let line = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
    // A P-256 scalar from 32 random bytes is out of range with probability ~2^-32: retry.
    for _ in 0..8 {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed)
            .map_err(|_| "the system random generator failed".to_string())?;
        match alg {
            KeyAlg::EdDsa => {
                let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
                let private = signing.to_pkcs8_pem(line).map_err(|e| e.to_string())?;
                let public = signing
                    .verifying_key()
                    .to_public_key_pem(line)
                    .map_err(|e| e.to_string())?;
                return Ok((private.to_string(), public));
            }
            KeyAlg::Es256 => {
                let Ok(secret) = p256::SecretKey::from_slice(&seed) else {
                    continue;
                };
                let private = secret.to_pkcs8_pem(line).map_err(|e| e.to_string())?;
                let public = secret
                    .public_key()
                    .to_public_key_pem(line)
                    .map_err(|e| e.to_string())?;
                return Ok((private.to_string(), public));
            }
        }
    }
    Err("could not draw a valid P-256 key".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const NOW: u64 = 1_800_000_000;

    pub struct Fixture {
        pub ed_private: String,
        pub ed_public: String,
        pub ec_private: String,
        pub config: VerifierConfig,
    }

    pub fn fixture() -> Fixture {
        let (ed_private, ed_public) = keygen(KeyAlg::EdDsa).unwrap();
        let (ec_private, ec_public) = keygen(KeyAlg::Es256).unwrap();
        let config = VerifierConfig {
            keys: vec![
                TrustedKey::from_pem("ed1", KeyAlg::EdDsa, ed_public.as_bytes()).unwrap(),
                TrustedKey::from_pem("ec1", KeyAlg::Es256, ec_public.as_bytes()).unwrap(),
            ],
            audiences: vec!["fleet/drone-7".into(), "fleet".into()],
            clock_skew_s: 30,
        };
        Fixture {
            ed_private,
            ed_public,
            ec_private,
            config,
        }
    }

    pub fn claims(role: &str) -> Claims {
        Claims {
            sub: "alice".into(),
            aud: Value::String("fleet/drone-7".into()),
            exp: NOW + 600,
            iat: NOW - 10,
            nbf: None,
            jti: Some("t-1".into()),
            role: role.into(),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn good_tokens_of_both_algorithms_verify() {
        let f = fixture();
        let t = issue(
            f.ed_private.as_bytes(),
            KeyAlg::EdDsa,
            "ed1",
            &claims("operator"),
        )
        .unwrap();
        let id = verify(&t, &f.config, NOW).unwrap();
        assert_eq!(id.role, Role::Operator);
        assert_eq!(id.subject, "alice");
        assert_eq!(id.jti.as_deref(), Some("t-1"));
        let mut c = claims("ADMIN");
        c.aud = serde_json::json!(["other", "fleet"]);
        let t = issue(f.ec_private.as_bytes(), KeyAlg::Es256, "ec1", &c).unwrap();
        assert_eq!(verify(&t, &f.config, NOW).unwrap().role, Role::Admin);
        assert_eq!(
            private_key_alg(f.ec_private.as_bytes()),
            Some(KeyAlg::Es256)
        );
        assert_eq!(
            private_key_alg(f.ed_private.as_bytes()),
            Some(KeyAlg::EdDsa)
        );
    }

    #[test]
    fn bad_credentials_are_refused_with_their_reason() {
        let f = fixture();
        let good = issue(
            f.ed_private.as_bytes(),
            KeyAlg::EdDsa,
            "ed1",
            &claims("OPERATOR"),
        )
        .unwrap();
        let payload = good.split('.').nth(1).unwrap().to_string();
        let (other_private, _) = keygen(KeyAlg::EdDsa).unwrap();
        let with = |c: Claims| issue(f.ed_private.as_bytes(), KeyAlg::EdDsa, "ed1", &c).unwrap();
        // HS256 "signed" with the public key PEM as the secret: the classic confusion.
        let hs = {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("ed1".into());
            jsonwebtoken::encode(
                &h,
                &claims("OPERATOR"),
                &EncodingKey::from_secret(f.ed_public.as_bytes()),
            )
            .unwrap()
        };
        let none = format!(
            "{}.{payload}.",
            b64(br#"{"alg":"none","kid":"ed1","typ":"JWT"}"#)
        );
        let es_as_ed = issue(
            f.ec_private.as_bytes(),
            KeyAlg::Es256,
            "ed1",
            &claims("OPERATOR"),
        )
        .unwrap();
        let mut tampered = good.clone();
        tampered.replace_range(
            good.find('.').unwrap() + 3..good.find('.').unwrap() + 4,
            "A",
        );
        let cases: Vec<(&str, String, &str)> = vec![
            ("none", String::new(), "missing_token"),
            ("garbage", "garbage".into(), "malformed_token"),
            (
                "wrong signature",
                issue(
                    other_private.as_bytes(),
                    KeyAlg::EdDsa,
                    "ed1",
                    &claims("OPERATOR"),
                )
                .unwrap(),
                "bad_signature",
            ),
            ("tampered payload", tampered, "bad_signature"),
            (
                "unknown kid",
                issue(
                    f.ed_private.as_bytes(),
                    KeyAlg::EdDsa,
                    "zz",
                    &claims("OPERATOR"),
                )
                .unwrap(),
                "unknown_key",
            ),
            ("alg none", none, "algorithm_not_allowed"),
            ("HS256 with public key", hs, "algorithm_not_allowed"),
            ("ES256 on an EdDSA kid", es_as_ed, "algorithm_not_allowed"),
            (
                "expired",
                with(Claims {
                    exp: NOW - 31,
                    ..claims("OPERATOR")
                }),
                "expired_token",
            ),
            (
                "not yet valid",
                with(Claims {
                    nbf: Some(NOW + 31),
                    ..claims("OPERATOR")
                }),
                "token_not_yet_valid",
            ),
            (
                "issued in future",
                with(Claims {
                    iat: NOW + 3600,
                    ..claims("OPERATOR")
                }),
                "token_not_yet_valid",
            ),
            (
                "wrong audience",
                with(Claims {
                    aud: Value::String("fleet/drone-8".into()),
                    ..claims("OPERATOR")
                }),
                "wrong_audience",
            ),
            ("system role", with(claims("SYSTEM")), "role_not_allowed"),
            ("unknown role", with(claims("root")), "bad_claims"),
            (
                "empty subject",
                with(Claims {
                    sub: String::new(),
                    ..claims("OPERATOR")
                }),
                "bad_claims",
            ),
            ("huge", "a".repeat(TOKEN_BYTES_MAX + 1), "malformed_token"),
        ];
        for (name, token, kind) in cases {
            let err = verify(&token, &f.config, NOW).expect_err(name);
            assert_eq!(err.kind(), kind, "{name}: {err}");
            assert!(!err.to_string().is_empty());
        }
        // Within the skew both ways is accepted.
        assert!(
            verify(
                &with(Claims {
                    exp: NOW - 29,
                    ..claims("OPERATOR")
                }),
                &f.config,
                NOW
            )
            .is_ok()
        );
        assert!(
            verify(
                &with(Claims {
                    nbf: Some(NOW + 29),
                    ..claims("OPERATOR")
                }),
                &f.config,
                NOW
            )
            .is_ok()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_input_never_panics(s in ".{0,300}") {
            let f = fixture_cached();
            let _ = verify(&s, f, NOW);
            let _ = verify(&format!("{s}.{s}.{s}"), f, NOW);
        }
    }

    fn fixture_cached() -> &'static VerifierConfig {
        static F: std::sync::OnceLock<VerifierConfig> = std::sync::OnceLock::new();
        F.get_or_init(|| fixture().config)
    }
}
