//! The emergency stop and the daemon's own failsafes.
//!
//! - `core`: [`EmergencyStop`], the sans-IO stop-and-failsafe state machine (triggers, the
//!   action ladder, the latch, reset, arbitration, pilot takeover, ground-link failsafes).
//! - `wire`: stop commands as MAVLink messages.
//! - `local`: the Unix socket of `flight-companion estop` (server and client).
//! - this file: the e-stop channel into the daemon loop ([`StopClient`], [`StopRequest`]) and
//!   the MQTT panic topic's payload.
//!
//! **Architecture Invariant:** a stop request reaches the decision loop on its own bounded
//! channel, read by the first branch of the loop's `biased` `select!`, and the stop command
//! goes from there straight to the link writer. It never waits behind a running tool, the
//! control queue, a rate limit, the control lease, the disk, MQTT or the camera.

// The sans-IO machine and its data are the core crate's; the channel and the socket stay here.
pub use flight_companion_core::estop::{core, local_status, request, wire};
pub mod local;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use self::core::{
    EmergencyStop, Failsafe, GroundLossAction, HoldMode, KillAction, KillReply, Rung, Source,
    StopCommand, StopEvent, StopOptions, StopStatus, Trigger,
};
pub use self::request::{GroundState, StopAck, StopAsk};

/// Stop requests waiting for the loop. Overflow policy: refused at once (`try_send`) and
/// counted — the channel only fills when the loop is not running, and then the requests
/// already in it stop the vehicle the moment it runs; the caller is told so, and the
/// autopilot's own failsafe covers a stalled loop.
pub const STOP_QUEUE: usize = 32;
/// How long a trigger waits for the loop's acknowledgement before saying it was not
/// acknowledged (the request stays queued and is acted on when the loop runs).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// One request to the loop, with where to acknowledge it.
#[derive(Debug)]
pub struct StopRequest {
    pub ask: StopAsk,
    /// `None` when nobody waits (e.g. a panic-topic message at QoS 0).
    pub reply: Option<oneshot::Sender<StopAck>>,
}

/// Why a request was not even handed to the loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopSendError {
    #[error(
        "the daemon's e-stop queue is full ({STOP_QUEUE} requests waiting): its decision loop \
         is not running; the stops already queued act as soon as it runs, and the autopilot's \
         own companion-loss failsafe applies meanwhile"
    )]
    Full,
    #[error("the daemon is shutting down; the e-stop is not available")]
    Closed,
    #[error(
        "the daemon's decision loop did not acknowledge within {} ms; the request is queued \
         and acts as soon as the loop runs",
        ACK_TIMEOUT.as_millis()
    )]
    NotAcknowledged,
}

/// The sending side, for the MCP tools, the panic topic and the local socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopClient {
    tx: mpsc::Sender<StopRequest>,
    status: watch::Receiver<StopStatus>,
}

/// The loop's side: requests in, status out.
#[derive(Debug)]
pub struct StopLoop {
    pub requests: mpsc::Receiver<StopRequest>,
    pub status: watch::Sender<StopStatus>,
}

/// A new e-stop channel with `initial` as the published status.
pub fn channel(initial: StopStatus) -> (StopClient, StopLoop) {
    let (tx, requests) = mpsc::channel(STOP_QUEUE);
    crate::metrics::global().watch_channel("estop_requests", &tx);
    let (status_tx, status) = watch::channel(initial);
    (
        StopClient { tx, status },
        StopLoop {
            requests,
            status: status_tx,
        },
    )
}

impl StopClient {
    /// Hands a request to the loop without waiting (never blocks).
    pub fn send(&self, ask: StopAsk) -> Result<(), StopSendError> {
        self.offer(StopRequest { ask, reply: None })
    }

    /// Hands a request to the loop and waits (at most [`ACK_TIMEOUT`]) for its answer.
    pub async fn request(&self, ask: StopAsk) -> Result<StopAck, StopSendError> {
        let (reply, answer) = oneshot::channel();
        self.offer(StopRequest {
            ask,
            reply: Some(reply),
        })?;
        match tokio::time::timeout(ACK_TIMEOUT, answer).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err(StopSendError::Closed),
            Err(_) => Err(StopSendError::NotAcknowledged),
        }
    }

    /// The latest status published by the loop (skip to latest).
    pub fn status(&self) -> watch::Receiver<StopStatus> {
        self.status.clone()
    }

    fn offer(&self, request: StopRequest) -> Result<(), StopSendError> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StopSendError::Full,
            mpsc::error::TrySendError::Closed(_) => StopSendError::Closed,
        })
    }
}

/// The panic topic a ground identity publishes to stop a server:
/// `{panic_topic_root}/{server_id}/{publisher}`, e.g. `flight-companion/estop/drone-1/ground-1`.
/// The last level is the publisher's own identity: the broker's ACL lets an identity publish
/// only there (`pattern write ROOT/+/%u`), so the drone knows who pressed. Outside
/// `$mcp-server/`, which the transport reserves for server control topics.
pub fn panic_topic(panic_topic_root: &str, server_id: &str, publisher: &str) -> String {
    format!(
        "{}{publisher}",
        panic_topic_prefix(panic_topic_root, server_id)
    )
}

/// `{panic_topic_root}/{server_id}/`: the server subscribes to it followed by `+`.
pub fn panic_topic_prefix(panic_topic_root: &str, server_id: &str) -> String {
    format!("{panic_topic_root}/{server_id}/")
}

/// What a message on a panic topic does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PanicDecision {
    /// Stop, for this reason; the publisher is the broker-attested identity.
    Stop { reason: String },
    /// A retained message: stored, not pressed now. Never acted on, recorded.
    IgnoreRetained { reason: String },
    /// No usable publisher level (cannot be attributed): dropped and logged.
    Drop,
}

/// Decides a panic-topic message: `publisher` is the topic's last level (the ACL binds it to
/// the publisher's certificate), `retained` its retain flag. A retained message never stops
/// the vehicle: the subscription asks the broker for none (retain handling 2), and one that
/// arrives anyway is a stored press replayed, not a press.
pub fn panic_decision(publisher: &str, payload: &[u8], retained: bool) -> PanicDecision {
    if !crate::mcp::transport::valid_client_id(publisher) {
        return PanicDecision::Drop;
    }
    let reason = panic_reason(payload);
    if retained {
        PanicDecision::IgnoreRetained { reason }
    } else {
        PanicDecision::Stop { reason }
    }
}

/// The reason in a panic-topic payload. Documented payloads: empty, or a JSON object
/// `{"reason": "..."}`; anything else still stops the vehicle (a panic button is a panic
/// button) and the reason says the payload was not understood.
pub fn panic_reason(payload: &[u8]) -> String {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return "panic topic (no reason given)".into();
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(o)) => match o.get("reason") {
            Some(serde_json::Value::String(reason)) => core::clip(reason),
            None => "panic topic (no reason given)".into(),
            Some(_) => "panic topic (`reason` is not a string)".into(),
        },
        _ => format!(
            "panic topic (payload of {} bytes is not {{\"reason\": \"...\"}})",
            payload.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "no reason given"),
            (b"  \n", "no reason given"),
            (br#"{"reason": "bird strike"}"#, "bird strike"),
            (br#"{"reason": 3}"#, "not a string"),
            (br#"{}"#, "no reason given"),
            (b"STOP", "is not {\"reason\""),
            (&[0xff, 0xfe], "2 bytes"),
        ];
        for (payload, needle) in cases {
            let reason = panic_reason(payload);
            assert!(reason.contains(needle), "{payload:?}: {reason}");
        }
        assert_eq!(
            panic_topic("flight-companion/estop", "drone-1", "ground-1"),
            "flight-companion/estop/drone-1/ground-1"
        );
    }

    #[test]
    fn retained_panic_messages_never_stop_and_unattributable_ones_are_dropped() {
        assert_eq!(
            panic_decision("button", br#"{"reason":"x"}"#, false),
            PanicDecision::Stop { reason: "x".into() }
        );
        assert!(matches!(
            panic_decision("button", b"", true),
            PanicDecision::IgnoreRetained { .. }
        ));
        for bad in ["", "a/b", "a+", "#"] {
            assert_eq!(
                panic_decision(bad, b"", false),
                PanicDecision::Drop,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_an_unanswered_request_says_so() {
        let t0 = std::time::Instant::now();
        let stop = EmergencyStop::new(StopOptions::default(), t0, true);
        let (client, mut loop_side) = channel(stop.status());
        let ask = || {
            StopAsk::Stop(Trigger {
                source: Source::McpTool,
                identity: "c".into(),
                reason: "r".into(),
            })
        };
        for _ in 0..STOP_QUEUE {
            client.send(ask()).unwrap();
        }
        assert_eq!(client.send(ask()), Err(StopSendError::Full));
        // Drain one: the next request fits, and without an answer it times out.
        loop_side.requests.recv().await.unwrap();
        assert_eq!(
            client.request(ask()).await,
            Err(StopSendError::NotAcknowledged)
        );
        drop(loop_side);
        assert_eq!(client.send(ask()), Err(StopSendError::Closed));
    }
}
