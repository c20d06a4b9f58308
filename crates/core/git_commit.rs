// The git commit a build is made from: one rule for both build scripts (the core crate's,
// for `VERSION` in the status report, and the daemon package's, for `--version`), which
// `include!` this file, so the two can never name different commits.
//
// In order: `FC_GIT_COMMIT` from the environment (a packager who knows it), `git` in a
// checkout, the `GIT_COMMIT` file that `git archive` fills in for a source tarball
// (`export-subst` in `.gitattributes`), and `unknown` when none of them knows.

fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The commit `git archive` wrote into `GIT_COMMIT` (at `path`); in a checkout the file
/// still holds the unexpanded placeholder, which is not a commit.
fn archived_commit(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let commit = text.trim();
    (!commit.is_empty() && commit.chars().all(|c| c.is_ascii_hexdigit())).then(|| commit.to_owned())
}

/// Sets `FC_GIT_COMMIT` for the crate being built; `git_commit_file` is the repository's
/// `GIT_COMMIT`, relative to the package. Rebuilds when HEAD moves (a commit, a checkout),
/// not on every edit.
fn emit_git_commit(git_commit_file: &str) {
    println!("cargo:rerun-if-env-changed=FC_GIT_COMMIT");
    println!("cargo:rerun-if-changed={git_commit_file}");
    let commit = std::env::var("FC_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .or_else(|| archived_commit(git_commit_file))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FC_GIT_COMMIT={commit}");
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
