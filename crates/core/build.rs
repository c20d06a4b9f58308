//! Records the git commit the crate is built from, for `VERSION` (the status report's
//! `daemon_version`, which the Core fills in).

include!("git_commit.rs");

fn main() {
    emit_git_commit("../../GIT_COMMIT");
}
