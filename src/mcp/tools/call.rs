//! One tool call as its handler sees it: the arguments, the daemon's ends, who calls, the
//! progress reporter; and the helpers every family uses to read arguments.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rmcp::model::{CallToolResult, JsonObject, ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;
use rmcp::{ErrorData, RoleServer};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::camera::CameraHandle;
use crate::control::{Caller, ControlClient};
use crate::mcp::errors::tool_error;
use crate::mcp::guard::Guard;
use crate::mcp::version::Features;
use crate::status::StatusReport;

/// What a tool handler receives.
pub struct ToolCall {
    pub arguments: JsonObject,
    pub status: watch::Receiver<StatusReport>,
    pub progress: Progress,
    pub cancel: CancellationToken,
    /// The camera, when one is configured.
    pub camera: Option<CameraHandle>,
    /// The decision loop; `None` when the server runs without a vehicle (tests).
    pub control: Option<ControlClient>,
    /// Who calls, as the decision loop and the e-stop see it: the role the gate verified and
    /// the subject (never the client id).
    pub caller: Caller,
    /// The session the gate verified (the lease and revocation tools act on it).
    pub session: crate::auth::Caller,
    /// Authorization and audit, shared by all sessions.
    pub guard: Arc<Guard>,
    /// The e-stop channel (not the control channel); `None` without a vehicle (tests).
    pub estop: Option<crate::estop::StopClient>,
}

/// A handler's answer: a result (tool errors included), or a JSON-RPC error.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<CallToolResult, ErrorData>> + Send>>;

/// A handler whose every answer is a result (the JSON-RPC errors are the server's).
pub fn answer(result: impl Future<Output = CallToolResult> + Send + 'static) -> ToolFuture {
    Box::pin(async move { Ok(result.await) })
}

/// The arguments as `T`; a bad argument is a tool error that says what is expected.
pub fn parse<T: serde::de::DeserializeOwned>(
    arguments: &JsonObject,
    expected: &str,
) -> Result<T, CallToolResult> {
    serde_json::from_value(Value::Object(arguments.clone()))
        .map_err(|e| tool_error(format!("invalid arguments: {e}. Expected {expected}.")))
}

/// The arguments of `tool` as `T`; the refusal's text names the tool and what is expected.
pub fn parse_text<T: serde::de::DeserializeOwned>(
    arguments: &JsonObject,
    tool: &str,
    expected: &str,
) -> Result<T, String> {
    serde_json::from_value(Value::Object(arguments.clone()))
        .map_err(|e| format!("invalid arguments for {tool}: {e}. Expected {expected}."))
}

/// A tool that takes no arguments got none; otherwise the refusal names what it got.
pub fn no_args(arguments: &JsonObject, tool: &str) -> Result<(), String> {
    if arguments.is_empty() {
        Ok(())
    } else {
        let names: Vec<&String> = arguments.keys().collect();
        Err(format!(
            "{tool} takes no arguments; got {names:?}. Call it with {{}}."
        ))
    }
}

/// Progress notifications of one call: numbered 1, 2, 3... so they are monotonic even if a
/// client reorders nothing else.
#[derive(Clone)]
pub struct Progress {
    target: Option<ProgressTarget>,
    sent: Arc<AtomicU64>,
    /// The session's negotiated version: `message` exists from 2025-03-26.
    features: Features,
}

/// Where a call's progress goes.
#[derive(Clone)]
enum ProgressTarget {
    /// The session's client, with the request's `progressToken`.
    Peer(Peer<RoleServer>, ProgressToken),
    /// A channel, for the tests of the server.
    #[cfg(test)]
    Channel(tokio::sync::mpsc::UnboundedSender<ProgressNotificationParam>),
}

/// A call with a `progressToken` that has reported nothing for this long reports that it is
/// still running: a client (or the ground bridge) that times out on silence then keeps a
/// long call alive however long it runs, and a silent call means a stuck daemon.
pub const PROGRESS_KEEPALIVE: Duration = Duration::from_secs(5);

impl Progress {
    /// The progress of a call from `peer`, sent only when the request had a `progressToken`.
    pub fn new(peer: &Peer<RoleServer>, token: Option<ProgressToken>, features: Features) -> Self {
        Progress {
            target: token.map(|t| ProgressTarget::Peer(peer.clone(), t)),
            sent: Arc::new(AtomicU64::new(0)),
            features,
        }
    }

    /// Sends the next progress notification (no-op without a `progressToken`).
    pub async fn report(&self, total: Option<f64>, message: String) {
        let Some(target) = &self.target else {
            return;
        };
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let token = match target {
            ProgressTarget::Peer(_, token) => token.clone(),
            #[cfg(test)]
            ProgressTarget::Channel(_) => ProgressToken(rmcp::model::NumberOrString::Number(0)),
        };
        let mut param = ProgressNotificationParam::new(token, n as f64);
        param.total = total;
        if self.features.progress_message() {
            param.message = Some(message);
        }
        match target {
            ProgressTarget::Peer(peer, _) => {
                let _ = peer.notify_progress(param).await;
            }
            #[cfg(test)]
            ProgressTarget::Channel(tx) => {
                let _ = tx.send(param);
            }
        }
    }

    fn count(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Progress into a channel (tests of the server).
    #[cfg(test)]
    pub fn channel(
        features: Features,
    ) -> (
        Progress,
        tokio::sync::mpsc::UnboundedReceiver<ProgressNotificationParam>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let progress = Progress {
            target: Some(ProgressTarget::Channel(tx)),
            sent: Arc::new(AtomicU64::new(0)),
            features,
        };
        (progress, rx)
    }
}

/// Runs a tool's future; while it runs, reports "still running" whenever `period`
/// ([`PROGRESS_KEEPALIVE`]) went by without any other progress (only with a `progressToken`).
pub async fn with_keepalive(
    run: ToolFuture,
    progress: &Progress,
    tool: &str,
    period: Duration,
) -> Result<CallToolResult, ErrorData> {
    if progress.target.is_none() {
        return run.await;
    }
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(started + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = progress.count();
    tokio::pin!(run);
    loop {
        tokio::select! {
            result = &mut run => return result,
            _ = tick.tick() => {
                if progress.count() == seen {
                    let running_s = started.elapsed().as_secs();
                    progress.report(None, format!("{tool}: still running ({running_s} s)")).await;
                }
                seen = progress.count();
            }
        }
    }
}
