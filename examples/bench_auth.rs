//! Figures for BENCHMARKS.md: token verification and audit appends.
//!
//! `cargo run --release --example bench_auth [DIR]` (DIR: where to put the audit files,
//! default a temporary directory; use the real state directory's file system to measure it).

use std::time::{Duration, Instant};

use flight_companion::audit::log::{FsyncPolicy, LogWriter, WriterOptions};
use flight_companion::audit::{Call, Event};
use flight_companion::auth::token::{self, Claims, KeyAlg, TrustedKey, VerifierConfig};

fn main() {
    let now = 1_800_000_000;
    for alg in [KeyAlg::EdDsa, KeyAlg::Es256] {
        let (private, public) = token::keygen(alg).unwrap();
        let config = VerifierConfig {
            keys: vec![TrustedKey::from_pem("k", alg, public.as_bytes()).unwrap()],
            audiences: vec!["flight-companion/drone".into()],
            clock_skew_s: 30,
        };
        let claims = Claims {
            sub: "pilot".into(),
            aud: serde_json::json!("flight-companion/drone"),
            exp: now + 3600,
            iat: now,
            nbf: Some(now),
            jti: Some("bench".into()),
            role: "OPERATOR".into(),
        };
        let jwt = token::issue(private.as_bytes(), alg, "k", &claims).unwrap();
        let n = 2000;
        let started = Instant::now();
        for _ in 0..n {
            token::verify(&jwt, &config, now).unwrap();
        }
        let per = started.elapsed() / n;
        println!(
            "token verification {}: {:.1} us per token ({n} tokens)",
            alg.name(),
            per.as_secs_f64() * 1e6
        );
    }
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    for (policy, n) in [
        (FsyncPolicy::Never, 20_000u32),
        (FsyncPolicy::Interval, 20_000),
        (FsyncPolicy::Always, 500),
    ] {
        let dir = base.join(format!("fc-bench-audit-{}-{policy:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut log, _) = LogWriter::open(WriterOptions {
            dir: dir.clone(),
            file_bytes_max: 16 << 20,
            fsync: policy,
            fsync_interval: Duration::from_millis(1000),
            key: None,
            retention_bytes_max: u64::MAX,
            retention_age_max: None,
        })
        .unwrap();
        let (args_sha256, args) =
            Call::args_of(r#"{"latitude_deg":47.3977,"longitude_deg":8.5456,"altitude_m":30.0}"#);
        let event = Event::Call(Call {
            session: "ground-7f3a".into(),
            subject: "pilot".into(),
            role: "OPERATOR".into(),
            target: "tools/call:goto".into(),
            request_id: "1234".into(),
            args_sha256,
            args,
            decision: "allow".into(),
            reason: String::new(),
            outcome: "ok".into(),
            latency_us: 812,
        });
        let mut samples = Vec::with_capacity(n as usize);
        for i in 0..n {
            let t = Instant::now();
            log.append(u64::from(i), event.clone()).unwrap();
            samples.push(t.elapsed());
        }
        samples.sort_unstable();
        let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
        println!(
            "audit append, fsync {policy:?}: p50 {:.1} us, p99 {:.1} us, max {:.1} us ({n} records of ~300 bytes)",
            p(0.5),
            p(0.99),
            p(1.0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
