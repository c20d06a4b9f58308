//! Records the git commit the binary is built from and the optional parts compiled in, for
//! `--version`. The commit's rule is the core crate's (`crates/core/git_commit.rs`), shared
//! so that `--version` and the status report's `daemon_version` name the same commit.

include!("crates/core/git_commit.rs");

fn main() {
    emit_git_commit("GIT_COMMIT");
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
}
