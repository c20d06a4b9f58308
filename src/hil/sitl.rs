//! `hil run --sitl-command CMD`: a fresh SITL for every scenario, started from the command
//! line the user gives and stopped when the scenario ends.
//!
//! A scenario leaves the vehicle wherever it ended (in the air, in BRAKE, with its parameters
//! changed), so against SITL each scenario gets a new process in a new, empty directory; with
//! ArduPilot's `-w` (wipe stored parameters) nothing leaks from one scenario to the next.
//!
//! The command is run with `sh -c` in that directory, in a process group of its own (so a
//! wrapper script and the simulator it starts are stopped together: SIGTERM, then SIGKILL
//! after 3 s), with stdin from `/dev/null` (a backgrounded ArduPilot SITL otherwise exits at its
//! first TCP connection) and its output in `sitl.log` of the scenario's directory.
//!
//! Placeholders (also exported as environment variables, e.g. `$SITL_HOME`):
//!
//! | placeholder | variable | value |
//! |---|---|---|
//! | `{dir}` | `SITL_DIR` | the scenario's fresh SITL directory (also the working directory), shell-quoted |
//! | `{home}` | `SITL_HOME` | `LAT,LON,ALT_M,HEADING_DEG`, as ArduPilot's `--home` takes it |
//! | `{lat}`, `{lon}`, `{alt_m}` | `SITL_LAT`, `SITL_LON`, `SITL_ALT_M` | home, one by one (PX4's `PX4_HOME_LAT`, ...) |
//! | `{seed}` | `SITL_SEED` | the run's seed |
//!
//! The home is the one the starter scenarios and the dev envelope are drawn around
//! (`dev_setup::SIM_HOME_*`), so the same files fly against the simulator and SITL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// The placeholders a command may use.
pub const PLACEHOLDERS: [&str; 6] = ["dir", "home", "lat", "lon", "alt_m", "seed"];

/// Where the simulated vehicle starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SitlHome {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub altitude_m: f64,
    pub heading_deg: f64,
}

impl SitlHome {
    /// The simulator's home, around which the starter scenarios are written.
    pub fn starter() -> SitlHome {
        SitlHome {
            latitude_deg: crate::dev_setup::SIM_HOME_LAT_DEG,
            longitude_deg: crate::dev_setup::SIM_HOME_LON_DEG,
            altitude_m: crate::dev_setup::SIM_HOME_ALT_M,
            heading_deg: 0.0,
        }
    }
}

/// A checked command template.
#[derive(Debug, Clone, PartialEq)]
pub struct SitlCommand {
    template: String,
}

impl SitlCommand {
    /// Checks the template: not empty, and every `{word}` one of [`PLACEHOLDERS`] (so a typo
    /// is an error before anything starts, not a SITL started with `{hom}` as its home).
    pub fn parse(text: &str) -> Result<SitlCommand, String> {
        if text.trim().is_empty() {
            return Err("--sitl-command is empty".into());
        }
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            // `${NAME}` is the shell's.
            if rest[..open].ends_with('$') {
                rest = after.find('}').map_or("", |close| &after[close + 1..]);
                continue;
            }
            let Some(close) = after.find('}') else {
                return Err(format!(
                    "--sitl-command: `{{` without `}}` in `{text}`; placeholders are {}",
                    list()
                ));
            };
            let word = &after[..close];
            if !PLACEHOLDERS.contains(&word) {
                return Err(format!(
                    "--sitl-command: unknown placeholder `{{{word}}}`; placeholders are {}",
                    list()
                ));
            }
            rest = &after[close + 1..];
        }
        Ok(SitlCommand {
            template: text.to_owned(),
        })
    }

    /// The command line with every placeholder replaced.
    pub fn render(&self, dir: &Path, home: SitlHome, seed: u64) -> String {
        let mut out = self.template.clone();
        for (name, value) in values(dir, home, seed) {
            let value = if name == "dir" {
                shell_quote(&value)
            } else {
                value
            };
            out = out.replace(&format!("{{{name}}}"), &value);
        }
        out
    }
}

fn list() -> String {
    PLACEHOLDERS
        .iter()
        .map(|p| format!("{{{p}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn values(dir: &Path, home: SitlHome, seed: u64) -> [(&'static str, String); 6] {
    [
        ("dir", dir.display().to_string()),
        (
            "home",
            format!(
                "{},{},{},{}",
                home.latitude_deg, home.longitude_deg, home.altitude_m, home.heading_deg
            ),
        ),
        ("lat", home.latitude_deg.to_string()),
        ("lon", home.longitude_deg.to_string()),
        ("alt_m", home.altitude_m.to_string()),
        ("seed", seed.to_string()),
    ]
}

/// `'text'` for `sh`, with embedded single quotes closed, escaped and reopened.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// One running SITL.
pub struct SitlProcess {
    child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl SitlProcess {
    /// Starts `command` in a new, empty `dir` (removed first if it exists).
    pub fn start(
        command: &SitlCommand,
        dir: &Path,
        log: &Path,
        home: SitlHome,
        seed: u64,
    ) -> anyhow::Result<SitlProcess> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let line = command.render(dir, home, seed);
        let output = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let errors = output.try_clone()?;
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(&line)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            // Its own group: a wrapper and what it starts are stopped together.
            .process_group(0)
            .kill_on_drop(true);
        for (name, value) in values(dir, home, seed) {
            sh.env(format!("SITL_{}", name.to_uppercase()), value);
        }
        let child = sh
            .spawn()
            .with_context(|| format!("cannot start the SITL command `{line}`"))?;
        Ok(SitlProcess {
            child,
            dir: dir.to_owned(),
            log: log.to_owned(),
        })
    }

    /// `Some(why)` once the command has ended (SITL died or the wrapper exited).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "the SITL command ended ({status}); its output is in {}",
                self.log.display()
            )),
            Ok(None) => None,
            Err(e) => Some(format!("cannot watch the SITL command: {e}")),
        }
    }

    /// The last lines of its output, for a failure report.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM to its process group, SIGKILL after 3 s.
    pub async fn stop(mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let group = -(pid as libc::pid_t);
        // SAFETY: kill(2) on the process group we created, with valid signals.
        unsafe {
            libc::kill(group, libc::SIGCONT);
            libc::kill(group, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            // SAFETY: as above.
            unsafe {
                libc::kill(group, libc::SIGKILL);
            }
            let _ = self.child.wait().await;
        }
        // Children of the group that outlived the shell (a simulator started in the
        // background by a wrapper) get the same end.
        // SAFETY: as above; ESRCH when the group is gone is ignored.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_checked_and_filled() {
        let home = SitlHome::starter();
        let c = SitlCommand::parse(
            "arducopter --model quad -w --home {home} --defaults copter.parm # {dir} {seed}",
        )
        .unwrap();
        let line = c.render(Path::new("/tmp/x y/sitl"), home, 7);
        assert_eq!(
            line,
            "arducopter --model quad -w --home 47.397742,8.545594,488,0 --defaults copter.parm \
             # '/tmp/x y/sitl' 7"
        );
        let c =
            SitlCommand::parse("PX4_HOME_LAT={lat} PX4_HOME_LON={lon} PX4_HOME_ALT={alt_m} px4")
                .unwrap();
        assert_eq!(
            c.render(Path::new("/d"), home, 1),
            "PX4_HOME_LAT=47.397742 PX4_HOME_LON=8.545594 PX4_HOME_ALT=488 px4"
        );
        let quoted = c.render(Path::new("/it's"), home, 1);
        assert!(!quoted.contains("{"), "{quoted}");
        assert_eq!(shell_quote("/it's"), r"'/it'\''s'");

        let e = SitlCommand::parse("arducopter --home {hom}").unwrap_err();
        assert!(e.contains("unknown placeholder `{hom}`"), "{e}");
        assert!(e.contains("{home}"), "it lists the valid ones: {e}");
        assert!(
            SitlCommand::parse("x {dir")
                .unwrap_err()
                .contains("without")
        );
        assert!(SitlCommand::parse("  ").is_err());
        // The shell's own `${NAME}` is left alone.
        let c = SitlCommand::parse("cd ${HOME} && run --home \"${SITL_HOME}\" {seed}").unwrap();
        assert_eq!(
            c.render(Path::new("/d"), home, 3),
            "cd ${HOME} && run --home \"${SITL_HOME}\" 3"
        );
    }
}
