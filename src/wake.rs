//! Rare wake-ups as flags with one waker: a task that waits again after every read (the
//! decision loop, a link's IO task) takes the flags of a mask in one branch of its
//! `select!`, and small tasks raise them when their source changes (a cancellation token, a
//! `watch`).
//!
//! Why not a branch on the source itself: a `watch::changed()` or a `cancelled()` future
//! locks its `Notify`'s list when it is polled and again when the `select!` drops it, for a
//! change that comes a few times a minute, or once in the daemon's life. In the decision
//! loop those branches cost about 1,400 instructions per turn, a twentieth of the daemon's
//! work per message (issue 17's callgrind profile). Polling a flag costs an atomic
//! operation and the waker's registration; the locks are taken by the forwarding tasks,
//! once per change.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Default, Debug)]
struct Shared {
    raised: AtomicU8,
    waker: AtomicWaker,
}

/// The waiting task's side: takes the flags of a mask, so each source keeps its own place in
/// a biased `select!`. One task waits on it (the waker is the last one registered); it may
/// wait on several masks at once.
pub struct Flags {
    shared: Arc<Shared>,
}

/// What raises the flags: cheap to clone, one per forwarding task.
#[derive(Clone, Debug)]
pub struct Raiser {
    shared: Arc<Shared>,
}

/// Flags (all lowered), and what raises them.
pub fn flags() -> (Flags, Raiser) {
    let shared = Arc::new(Shared::default());
    (
        Flags {
            shared: shared.clone(),
        },
        Raiser { shared },
    )
}

impl Flags {
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

    /// Raises `flags` again from the waiting task itself, to take them at its next wait
    /// (no wake-up: it is not waiting).
    pub fn keep(&self, flags: u8) {
        self.shared.raised.fetch_or(flags, Ordering::AcqRel);
    }
}

impl Raiser {
    pub fn raise(&self, flags: u8) {
        self.shared.raised.fetch_or(flags, Ordering::AcqRel);
        self.shared.waker.wake();
    }

    /// Raises `flag` once `token` is cancelled.
    pub async fn on_cancel(self, token: CancellationToken, flag: u8) {
        token.cancelled().await;
        self.raise(flag);
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

    const SHUTDOWN: u8 = 1;
    const GROUND: u8 = 1 << 1;
    const CPU_TEMPERATURE: u8 = 1 << 2;

    #[tokio::test]
    async fn a_mask_takes_only_its_flags_and_the_rest_stay_raised() {
        let (signals, raiser) = flags();
        raiser.raise(GROUND | CPU_TEMPERATURE);
        assert_eq!(signals.take(SHUTDOWN | GROUND).await, GROUND);
        assert_eq!(signals.take(CPU_TEMPERATURE).await, CPU_TEMPERATURE);
        let nothing = tokio::time::timeout(Duration::from_millis(20), signals.take(u8::MAX));
        assert!(nothing.await.is_err(), "every flag was taken already");
    }

    #[tokio::test]
    async fn a_raise_from_another_task_wakes_the_waiting_loop() {
        let (signals, raiser) = flags();
        let (tx, rx) = watch::channel(0u8);
        let token = CancellationToken::new();
        tokio::spawn(raiser.clone().on_change(rx, CPU_TEMPERATURE));
        tokio::spawn(raiser.on_cancel(token.clone(), SHUTDOWN));
        tx.send_replace(1);
        let taken = tokio::time::timeout(Duration::from_secs(5), signals.take(CPU_TEMPERATURE));
        assert_eq!(taken.await.expect("woken"), CPU_TEMPERATURE);
        token.cancel();
        let taken = tokio::time::timeout(Duration::from_secs(5), signals.take(SHUTDOWN));
        assert_eq!(taken.await.expect("woken"), SHUTDOWN);
    }
}
