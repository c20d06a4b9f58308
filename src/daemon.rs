//! The supervisor: one loop, one closed set of inputs. (being written)

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(_config: Config, _shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the daemon loop is not written yet")
}
