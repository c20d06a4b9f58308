//! `flight-companion probe`. (being written)

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::ProbeArgs;

pub async fn run(_args: ProbeArgs, _shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    anyhow::bail!("probe is not written yet")
}
