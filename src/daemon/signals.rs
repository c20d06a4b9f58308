//! The loop's rare wake-ups (the daemon's shutdown, the ground's state, the CPU
//! temperature) as flags with one waker, raised by small tasks that wait on the sources.
//!
//! Why not a branch per source: the loop waits again after every read of the link, and a
//! `watch::changed()` or a `cancelled()` future locks its `Notify`'s list when it is polled
//! and again when the `select!` drops it, for a change that comes a few times a minute.
//! Those three branches cost about 1,400 instructions per turn, a twentieth of the daemon's
//! work per message (issue 17's callgrind profile). Polling a flag costs an atomic swap and
//! the waker's registration; the locks are taken by the forwarding tasks, once per change.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The daemon is stopping.
pub const SHUTDOWN: u8 = 1;
/// The ground's state (`GroundState`) changed.
pub const GROUND: u8 = 1 << 1;
/// A new CPU temperature reading.
pub const CPU_TEMPERATURE: u8 = 1 << 2;

#[derive(Default)]
struct Shared {
    raised: AtomicU8,
    waker: AtomicWaker,
}

/// The loop's side: waits for flags of a mask, so each keeps its own place in the loop's
/// biased `select!`.
pub struct LoopSignals {
    shared: Arc<Shared>,
}

/// What raises the flags: cheap to clone, one per forwarding task.
#[derive(Clone)]
pub struct Raiser {
    shared: Arc<Shared>,
}

pub fn channel() -> (LoopSignals, Raiser) {
    let shared = Arc::new(Shared::default());
    (
        LoopSignals {
            shared: shared.clone(),
        },
        Raiser { shared },
    )
}

impl LoopSignals {
    /// The flags of `mask` raised since they were last taken, once any is; the others stay
    /// raised. Cancel-safe: nothing is taken unless this returns.
    pub async fn take(&self, mask: u8) -> u8 {
        poll_fn(|cx| {
            // Registered before the flags are read: a flag raised after the read wakes us.
            self.shared.waker.register(cx.waker());
            match self.shared.raised.fetch_and(!mask, Ordering::AcqRel) & mask {
                0 => Poll::Pending,
                taken => Poll::Ready(taken),
            }
        })
        .await
    }
}

impl Raiser {
    pub fn raise(&self, flags: u8) {
        self.shared.raised.fetch_or(flags, Ordering::AcqRel);
        self.shared.waker.wake();
    }

    /// Raises `SHUTDOWN` once `shutdown` is cancelled.
    pub async fn on_cancel(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        self.raise(SHUTDOWN);
    }

    /// Raises `flag` at every change of `source`, until its sender is gone.
    pub async fn on_change<T>(self, mut source: watch::Receiver<T>, flag: u8) {
        while source.changed().await.is_ok() {
            self.raise(flag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_mask_takes_only_its_flags_and_the_rest_stay_raised() {
        let (signals, raiser) = channel();
        raiser.raise(GROUND | CPU_TEMPERATURE);
        assert_eq!(signals.take(SHUTDOWN | GROUND).await, GROUND);
        assert_eq!(signals.take(CPU_TEMPERATURE).await, CPU_TEMPERATURE);
        let nothing = tokio::time::timeout(Duration::from_millis(20), signals.take(u8::MAX));
        assert!(nothing.await.is_err(), "every flag was taken already");
    }

    #[tokio::test]
    async fn a_raise_from_another_task_wakes_the_waiting_loop() {
        let (signals, raiser) = channel();
        let (tx, rx) = watch::channel(0u8);
        let token = CancellationToken::new();
        tokio::spawn(raiser.clone().on_change(rx, CPU_TEMPERATURE));
        tokio::spawn(raiser.on_cancel(token.clone()));
        tx.send_replace(1);
        let taken = tokio::time::timeout(Duration::from_secs(5), signals.take(CPU_TEMPERATURE));
        assert_eq!(taken.await.expect("woken"), CPU_TEMPERATURE);
        token.cancel();
        let taken = tokio::time::timeout(Duration::from_secs(5), signals.take(SHUTDOWN));
        assert_eq!(taken.await.expect("woken"), SHUTDOWN);
    }
}
