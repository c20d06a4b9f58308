//! `flight-companion hil run`: the command-line face of the rig.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::hil::report::{self, Outcome, ScenarioResult};
use crate::hil::runner::{self, RunOptions, Target};
use crate::hil::scenario;

#[derive(Debug, Clone, clap::Args)]
pub struct HilRunArgs {
    /// What to run against: `sim` (the built-in simulator, started by the rig),
    /// `sitl:ENDPOINT` (ArduPilot/PX4 SITL, e.g. `sitl:tcpout:127.0.0.1:5760`) or
    /// `serial:DEVICE:BAUD` (a bench autopilot, propellers off).
    #[arg(long, default_value = "sim")]
    pub target: String,
    /// Seed of every random choice of the rig and the simulator; a failure prints it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the summary (`summary.txt`), the JUnit XML (`junit.xml`) and each scenario's
    /// logs go.
    #[arg(long, default_value = "target/hil")]
    pub out: PathBuf,
    /// Allow scenarios that arm and fly against a serial (bench) autopilot.
    #[arg(long)]
    pub allow_flight: bool,
    /// Simulated seconds per wall-clock second of the built-in simulator (`--target sim`).
    /// Flights take less time; the daemon's timers and every figure stay in wall-clock time.
    /// Above 2 the daemon's 1 Hz heartbeat is more than 3 simulated seconds apart and the
    /// simulator reports it lost.
    #[arg(long, default_value_t = 1.0)]
    pub sim_speedup: f64,
    /// Simulated seconds the built-in simulator's estimator takes to trust its position after
    /// boot (`sim --ekf-ready-s`). The firmware's own timeline (ArduCopter about 40 s) is what
    /// SITL shows; the starter scenarios are not about start-up, so the default is short.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub sim_ekf_ready_s: f64,
    /// With `--target sitl:ENDPOINT`: the command that starts a fresh SITL for each scenario
    /// (run with `sh -c` in a new directory, stopped when the scenario ends). Placeholders:
    /// {dir}, {home} (LAT,LON,ALT_M,HEADING_DEG), {lat}, {lon}, {alt_m}, {seed}. E.g.
    /// `arducopter --model quad --defaults PATH/copter.parm -I0 -w --home {home}`.
    /// Without it the rig connects to a SITL you started (and restart between runs).
    #[arg(long, value_name = "COMMAND")]
    pub sitl_command: Option<String>,
    /// Scenario files or directories of them (default `hil/scenarios`).
    pub scenarios: Vec<PathBuf>,
}

pub async fn run(args: HilRunArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let target = Target::parse(&args.target).map_err(|e| anyhow::anyhow!(e))?;
    if !(args.sim_speedup.is_finite() && (0.1..=10.0).contains(&args.sim_speedup)) {
        anyhow::bail!("--sim-speedup {}: expected 0.1 to 10", args.sim_speedup);
    }
    if !(args.sim_ekf_ready_s.is_finite() && (0.0..=600.0).contains(&args.sim_ekf_ready_s)) {
        anyhow::bail!(
            "--sim-ekf-ready-s {}: expected 0 to 600 simulated seconds",
            args.sim_ekf_ready_s
        );
    }
    let sitl_command = match (&args.sitl_command, &target) {
        (None, _) => None,
        (Some(text), Target::Sitl(_)) => {
            Some(crate::hil::sitl::SitlCommand::parse(text).map_err(|e| anyhow::anyhow!(e))?)
        }
        (Some(_), other) => anyhow::bail!(
            "--sitl-command starts SITL, so it needs --target sitl:ENDPOINT (the endpoint the \
             SITL it starts listens on, e.g. sitl:tcpout:127.0.0.1:5760), not {}",
            other.label()
        ),
    };
    let paths = if args.scenarios.is_empty() {
        vec![PathBuf::from("hil/scenarios")]
    } else {
        args.scenarios.clone()
    };
    let files = runner::scenario_files(&paths)?;
    if files.is_empty() {
        anyhow::bail!("no scenario files in {paths:?}");
    }
    // Every file is read and checked before anything starts.
    let mut scenarios = Vec::new();
    for file in &files {
        scenarios.push((file.clone(), scenario::load(file)?));
    }
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(1..1_000_000));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    // Absolute, because the generated configuration resolves its relative paths against
    // its own directory and the children run from wherever they are started.
    let out = std::path::absolute(&args.out)
        .with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let options = RunOptions {
        target: target.clone(),
        work_dir: out.join("scenarios"),
        seed,
        allow_flight: args.allow_flight,
        sim_speedup: args.sim_speedup,
        sim_ekf_ready_s: args.sim_ekf_ready_s,
        sitl_command,
        exe: std::env::current_exe().context("cannot find this program's own path")?,
    };
    println!(
        "hil: {} scenarios against {} (seed {seed}), logs in {}",
        scenarios.len(),
        target.label(),
        out.display()
    );
    let mut results: Vec<ScenarioResult> = Vec::new();
    for (file, s) in &scenarios {
        let result = tokio::select! {
            r = runner::run_scenario(file, s, &options) => r,
            _ = shutdown.cancelled() => {
                println!("hil: interrupted");
                break;
            }
        };
        let tag = match &result.outcome {
            Outcome::Passed => "PASS".to_owned(),
            Outcome::Failed { reason } => format!("FAIL: {reason}"),
            Outcome::Skipped { reason } => format!("SKIP: {reason}"),
        };
        println!(
            "hil: {} ({:.1} s) {tag}",
            result.name,
            result.duration.as_secs_f64()
        );
        results.push(result);
    }
    let summary = report::summary(&target.label(), &results);
    let junit = report::junit(&target.label(), &results);
    let summary_path = out.join("summary.txt");
    let junit_path = out.join("junit.xml");
    std::fs::write(&summary_path, &summary)
        .with_context(|| format!("cannot write {}", summary_path.display()))?;
    std::fs::write(&junit_path, &junit)
        .with_context(|| format!("cannot write {}", junit_path.display()))?;
    println!("{summary}");
    println!(
        "hil: summary in {}, JUnit XML in {}",
        summary_path.display(),
        junit_path.display()
    );
    let totals = report::totals(&results);
    Ok(if totals.failed == 0 && results.len() == scenarios.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
