//! Serves the simulated autopilot over real MAVLink bytes. (being written)

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::SimArgs;

pub async fn run(_args: SimArgs, _shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the simulator is not written yet")
}
