//! The supervisor: one loop, one closed set of inputs. (being written by the lead)
//!
//! Interim, branch `mcp` only: starts the MCP server with a status of "nothing heard from
//! the autopilot yet" so the MQTT side can be tested end to end. The lead's loop replaces
//! this and feeds the real status.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::status::StatusReport;

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let (_status_tx, status_rx) = tokio::sync::watch::channel(StatusReport::without_vehicle());
    if config.mqtt.enabled {
        crate::mcp::serve(&config, status_rx, shutdown).await?;
    } else {
        shutdown.cancelled().await;
    }
    Ok(ExitCode::SUCCESS)
}
