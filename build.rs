//! Records the git commit the binary is built from, for `--version`.
//!
//! In order: `FC_GIT_COMMIT` from the environment (a packager who knows it), `git` in a
//! checkout, the `GIT_COMMIT` file that `git archive` fills in for a source tarball
//! (`export-subst` in `.gitattributes`), and `unknown` when none of them knows.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The commit `git archive` wrote into `GIT_COMMIT`; in a checkout the file still holds the
/// unexpanded placeholder, which is not a commit.
fn archived_commit() -> Option<String> {
    let text = std::fs::read_to_string("GIT_COMMIT").ok()?;
    let commit = text.trim();
    (!commit.is_empty() && commit.chars().all(|c| c.is_ascii_hexdigit())).then(|| commit.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=FC_GIT_COMMIT");
    println!("cargo:rerun-if-changed=GIT_COMMIT");
    let commit = std::env::var("FC_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .or_else(archived_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FC_GIT_COMMIT={commit}");
    // The optional parts compiled in, for `--version` (cargo runs this again per feature set).
    let features: Vec<&str> = ["sim", "hil", "dev-setup"]
        .into_iter()
        .filter(|f| {
            let var = format!("CARGO_FEATURE_{}", f.to_uppercase().replace('-', "_"));
            std::env::var_os(var).is_some()
        })
        .collect();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(" ")
    };
    println!("cargo:rustc-env=FC_FEATURES={features}");
    // Rebuild the version string when HEAD moves (a commit, a checkout), not on every edit.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for file in ["HEAD", "logs/HEAD"] {
            let path = format!("{dir}/{file}");
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
}
