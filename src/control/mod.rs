//! The control path between the MCP tools and the daemon's decision loop.
//!
//! A tool handler builds a [`ControlRequest`] and offers it with [`ControlClient::submit`].
//! The channel is bounded ([`CONTROL_QUEUE`]): when it is full the call is refused at once
//! with "busy, retry in …" — a command is never dropped silently and never queued to fly
//! later. The loop answers on the request's oneshot, reports progress on its bounded
//! progress channel, and watches its cancellation token.
//!
//! The emergency stop (issue 5) gets its own channel and the first `biased` branch of the
//! loop; nothing here can delay it.

pub mod mission;
pub mod param;
// The loop's answers are plain data, the core crate's; the channels stay here.
pub use flight_companion_core::control::reply;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::flight::{Action, ProgressUpdate};

pub use self::reply::{ControlReply, EnvelopeView, VehicleSummary};
pub use crate::role::Caller;

/// Requests waiting for the loop. Overflow policy: refused at once with "busy" (never
/// dropped, never queued to fly later). The loop drains it on every turn (at least 25 Hz),
/// so a full queue means a burst, not a stall.
pub const CONTROL_QUEUE: usize = 8;
/// Progress reports waiting for one tool call. Overflow policy: the newest report is dropped
/// (progress is telemetry; the next one carries the same information, fresher).
pub const PROGRESS_QUEUE: usize = 16;
/// The retry hint of a busy refusal: several loop turns.
pub const BUSY_RETRY_MS: u64 = 200;
/// Envelope changes waiting for the loop (ADMIN only, rare). Overflow policy: refused at once
/// with "busy", as control requests are.
pub const ENVELOPE_CHANGES: usize = 2;

/// One request to the decision loop.
#[derive(Debug)]
pub struct ControlRequest {
    pub action: Action,
    pub caller: Caller,
    pub reply: oneshot::Sender<ControlReply>,
    pub progress: mpsc::Sender<ProgressUpdate>,
    /// Set by MCP `notifications/cancelled`; the loop checks it on every turn.
    pub cancel: CancellationToken,
}

/// Why a request could not even be handed to the loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "busy: {CONTROL_QUEUE} requests are already waiting for the vehicle; retry in \
         {BUSY_RETRY_MS} ms (nothing was sent)"
    )]
    Busy,
    #[error("the daemon is shutting down; nothing was sent")]
    Closed,
}

/// An ADMIN's change to the envelope in force (`set_envelope`), answered by the loop with
/// the new envelope or why not (`Supervisor::set_envelope`).
#[derive(Debug)]
pub struct EnvelopeChange {
    /// `[envelope]` keys with their new values.
    pub changes: serde_json::Map<String, serde_json::Value>,
    pub caller: Caller,
    pub reply: oneshot::Sender<EnvelopeView>,
}

/// The tools' side of the channel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlClient {
    tx: mpsc::Sender<ControlRequest>,
    /// Published by the loop (skip to latest).
    envelope: watch::Receiver<EnvelopeView>,
    /// Envelope changes to the loop; `None` when the loop takes none.
    envelope_changes: Option<mpsc::Sender<EnvelopeChange>>,
    /// The subject holding the MCP control lease, published by the MCP shell (on its tick
    /// and after every lease tool) for the other ways in: a ground-station endpoint may
    /// command only while nobody holds it.
    lease_holder: std::sync::Arc<watch::Sender<Option<String>>>,
    /// Parameter requests to the loop; `None` when the loop takes none.
    params: Option<mpsc::Sender<param::ParamRequest>>,
    /// Mission requests to the loop; `None` when the loop takes none.
    missions: Option<mpsc::Sender<mission::MissionRequest>>,
    /// Raised after every request queued: the loop waits on this flag, not on each channel
    /// (`with_wake`); `None`: the receivers are read some other way (tests).
    wake: Option<(crate::wake::Raiser, u8)>,
}

/// The channel: the client for the MCP server, the receiver for the loop, and the sender
/// of the envelope view.
pub fn channel() -> (
    ControlClient,
    mpsc::Receiver<ControlRequest>,
    watch::Sender<EnvelopeView>,
) {
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    crate::metrics::global().watch_channel("control_requests", &tx);
    let (envelope_tx, envelope) =
        watch::channel(Err("the daemon has not built its envelope yet".to_string()));
    (
        ControlClient {
            tx,
            envelope,
            envelope_changes: None,
            lease_holder: std::sync::Arc::new(watch::Sender::new(None)),
            params: None,
            missions: None,
            wake: None,
        },
        rx,
        envelope_tx,
    )
}

/// A submitted request: the reply to wait for and its progress.
#[derive(Debug)]
pub struct Pending {
    pub reply: oneshot::Receiver<ControlReply>,
    pub progress: mpsc::Receiver<ProgressUpdate>,
}

impl ControlClient {
    /// The envelope in force (or why there is none).
    pub fn envelope(&self) -> EnvelopeView {
        self.envelope.borrow().clone()
    }

    /// The MCP shell: who holds the control lease now (`None`: nobody).
    pub fn publish_lease_holder(&self, holder: Option<String>) {
        self.lease_holder.send_if_modified(|h| {
            let changed = *h != holder;
            *h = holder;
            changed
        });
    }

    /// The lease holder as it changes (skip to latest), for the status report.
    pub fn lease_holder_watch(&self) -> watch::Receiver<Option<String>> {
        self.lease_holder.subscribe()
    }

    /// The subject holding the MCP control lease, as last published.
    pub fn lease_holder(&self) -> Option<String> {
        self.lease_holder.borrow().clone()
    }

    /// Raises `flag` of `raiser` after every request this client (or a clone) queues, on any
    /// of its channels. The decision loop waits on that one flag and then reads the channels
    /// without waiting: a `recv` future per channel on every turn of the loop cost a few
    /// hundred instructions per turn, for requests that come a few times a minute (issue 17).
    pub fn with_wake(mut self, raiser: crate::wake::Raiser, flag: u8) -> Self {
        self.wake = Some((raiser, flag));
        self
    }

    /// Tells the loop that a request was queued.
    fn queued(&self) {
        if let Some((raiser, flag)) = &self.wake {
            raiser.raise(*flag);
        }
    }

    /// Sends envelope changes to the loop over `changes` (bounded by [`ENVELOPE_CHANGES`]).
    pub fn with_envelope_changes(mut self, changes: mpsc::Sender<EnvelopeChange>) -> Self {
        self.envelope_changes = Some(changes);
        self
    }

    /// Sends parameter requests to the loop over `requests` (bounded by
    /// [`param::PARAM_REQUESTS`]).
    pub fn with_params(mut self, requests: mpsc::Sender<param::ParamRequest>) -> Self {
        self.params = Some(requests);
        self
    }

    /// Asks the loop about the autopilot's parameters; a full queue is refused at once.
    pub async fn params(&self, ask: param::ParamAsk) -> Result<param::ParamAnswer, String> {
        let Some(tx) = &self.params else {
            return Err("this daemon serves no parameters".into());
        };
        let (reply, answer) = oneshot::channel();
        match tx.try_send(param::ParamRequest { ask, reply }) {
            Ok(()) => self.queued(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(format!(
                    "busy: {} parameter requests are waiting; retry in {BUSY_RETRY_MS} ms \
                     (nothing was sent)",
                    param::PARAM_REQUESTS
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(SubmitError::Closed.to_string());
            }
        }
        answer
            .await
            .map_err(|_| "the daemon stopped before answering".to_string())
    }

    /// Asks the loop to tighten the envelope in force; the answer is the new envelope or why
    /// not. A full queue is refused at once.
    pub async fn change_envelope(
        &self,
        changes: serde_json::Map<String, serde_json::Value>,
        caller: Caller,
    ) -> EnvelopeView {
        let Some(tx) = &self.envelope_changes else {
            return Err("this daemon takes no envelope changes; nothing was changed".into());
        };
        let (reply, answer) = oneshot::channel();
        let change = EnvelopeChange {
            changes,
            caller,
            reply,
        };
        match tx.try_send(change) {
            Ok(()) => self.queued(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(format!(
                    "busy: another envelope change is waiting; retry in {BUSY_RETRY_MS} ms \
                     (nothing was changed)"
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(SubmitError::Closed.to_string());
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err("the daemon stopped before answering; check get_envelope".into())
        })
    }

    /// Offers a request without waiting: a full queue is refused at once.
    pub fn submit(
        &self,
        action: Action,
        caller: Caller,
        cancel: CancellationToken,
    ) -> Result<Pending, SubmitError> {
        let (reply_tx, reply) = oneshot::channel();
        let (progress_tx, progress) = mpsc::channel(PROGRESS_QUEUE);
        let request = ControlRequest {
            action,
            caller,
            reply: reply_tx,
            progress: progress_tx,
            cancel,
        };
        match self.tx.try_send(request) {
            Ok(()) => {
                self.queued();
                Ok(Pending { reply, progress })
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(SubmitError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SubmitError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::Role;

    fn operator() -> Caller {
        Caller {
            role: Role::Operator,
            identity: "test".into(),
        }
    }

    /// Runs `ask` against a loop side that receives its request, checks `raised` once it is
    /// queued, and drops it unanswered (so `ask` ends with an error).
    async fn asked_with_flag<T, E: std::fmt::Debug, R>(
        ask: impl std::future::Future<Output = Result<T, E>>,
        receive: impl std::future::Future<Output = Option<R>>,
        raised: impl Fn() -> bool,
        what: &str,
    ) {
        let ask = async {
            assert!(
                ask.await.is_err(),
                "{what}: nobody answers, the reply is dropped"
            );
        };
        let serve = async {
            let request = receive.await.expect(what);
            assert!(raised(), "{what} did not raise the flag");
            drop(request);
        };
        tokio::join!(ask, serve);
    }

    /// The decision loop waits on the flag alone: every kind of request queued must raise it,
    /// and a refused one must not (nothing is there to read).
    #[tokio::test]
    async fn every_request_queued_raises_the_loop_flag_and_a_refused_one_does_not() {
        const REQUESTS: u8 = 1 << 3;
        let (flags, raiser) = crate::wake::flags();
        let (client, mut rx, _envelope) = channel();
        let (changes_tx, mut changes) = mpsc::channel(1);
        let (params_tx, mut params) = mpsc::channel(1);
        let (missions_tx, mut missions) = mpsc::channel(1);
        let client = (client.with_envelope_changes(changes_tx))
            .with_params(params_tx)
            .with_missions(missions_tx)
            .with_wake(raiser, REQUESTS);
        let raised = |flags: &crate::wake::Flags| {
            let take = flags.take(REQUESTS);
            futures::FutureExt::now_or_never(take).is_some()
        };
        assert!(!raised(&flags), "nothing queued yet");

        let _pending = client
            .submit(Action::Hold, operator(), CancellationToken::new())
            .unwrap();
        assert!(raised(&flags), "a flight request");
        assert!(rx.try_recv().is_ok());

        // Each asks and waits for an answer: the flag must be up once the request is queued.
        let ask_get = client.params(param::ParamAsk::Get { name: "X".into() });
        asked_with_flag(
            ask_get,
            params.recv(),
            || raised(&flags),
            "a parameter request",
        )
        .await;
        let ask_change = client.change_envelope(serde_json::Map::new(), operator());
        asked_with_flag(
            ask_change,
            changes.recv(),
            || raised(&flags),
            "an envelope change",
        )
        .await;
        let ask_clear = client.mission(mission::MissionAsk::Clear { caller: operator() });
        asked_with_flag(
            ask_clear,
            missions.recv(),
            || raised(&flags),
            "a mission request",
        )
        .await;

        // A full queue refuses, and raises nothing.
        let mut accepted = Vec::new();
        while let Ok(pending) = client.submit(Action::Hold, operator(), CancellationToken::new()) {
            accepted.push(pending);
        }
        assert!(raised(&flags), "the requests accepted");
        assert!(
            client
                .submit(Action::Hold, operator(), CancellationToken::new())
                .is_err()
        );
        assert!(!raised(&flags), "a refused request raised the flag");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_nothing_is_queued_beyond_it() {
        let (client, mut rx, _envelope) = channel();
        let mut accepted = Vec::new();
        for _ in 0..CONTROL_QUEUE {
            accepted.push(
                client
                    .submit(Action::Hold, operator(), CancellationToken::new())
                    .unwrap(),
            );
        }
        let err = client
            .submit(Action::Land, operator(), CancellationToken::new())
            .unwrap_err();
        assert_eq!(err, SubmitError::Busy);
        assert!(err.to_string().contains("retry in 200 ms"), "{err}");
        // Exactly the accepted ones are there, in order; the refused one is not.
        for _ in 0..CONTROL_QUEUE {
            assert_eq!(rx.try_recv().unwrap().action, Action::Hold);
        }
        assert!(rx.try_recv().is_err());
        drop(rx);
        assert_eq!(
            client
                .submit(Action::Hold, operator(), CancellationToken::new())
                .unwrap_err(),
            SubmitError::Closed
        );
    }
}
