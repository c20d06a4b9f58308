//! The decision loop's one timer: a kernel `timerfd` in the loop's epoll set, armed for the
//! earliest of the loop's deadlines (the Core's `poll_timeout`, the status).
//!
//! Why not a tokio `Sleep`: tokio's timer wheel keeps a deadline more than 64 ms away in a
//! coarser level and moves it down when that level's slot begins, which wakes the runtime
//! although nothing is due. The loop's deadlines are mostly that far (the status every
//! 100 ms, the heartbeat every second), so while telemetry turned the loop every few
//! milliseconds about 20 wake-ups a second did nothing (issue 17's ingest, counted with
//! `strace`). A kernel timer wakes the thread only when its deadline has come.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A one-shot kernel timer on `CLOCK_MONOTONIC` (the clock of [`Instant`]).
pub struct LoopTimer {
    fd: AsyncFd<OwnedFd>,
    /// The deadline it is armed for; `None`: disarmed, or expired and read.
    armed_for: Option<Instant>,
}

impl LoopTimer {
    /// A disarmed timer, registered with the current runtime.
    pub fn new() -> io::Result<LoopTimer> {
        // SAFETY: plain system call; the descriptor it returns is owned below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just created and owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an `OwnedFd` stays open, and is the same descriptor, for as long as the
        // `AsyncFd` that owns it.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }?;
        Ok(LoopTimer {
            fd,
            armed_for: None,
        })
    }

    /// Arms the timer for `deadline` (at once, if it has passed). A system call only when the
    /// deadline moved.
    pub fn set(&mut self, deadline: Instant) -> io::Result<()> {
        if self.armed_for == Some(deadline) {
            return Ok(());
        }
        let now = Instant::now();
        // A zero value would disarm the timer: a deadline that has passed fires at once.
        let delay = deadline
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let value = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(delay.as_secs()).unwrap_or(libc::time_t::MAX),
                // Below 10⁹: fits a `c_long` on every target, 32-bit included.
                tv_nsec: delay.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: the descriptor is open for the life of `self`; `value` outlives the call and
        // the old value is not asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &value, std::ptr::null_mut()) };
        if rc < 0 {
            self.armed_for = None;
            return Err(io::Error::last_os_error());
        }
        self.armed_for = Some(deadline);
        Ok(())
    }

    /// Waits until the deadline it was last armed for has come; pending while disarmed.
    pub async fn expired(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a buffer of 8 bytes.
            let read = unsafe {
                libc::read(
                    ready.get_inner().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if read == 8 {
                // Read: not readable until it expires again. Cleared, so that the next wait goes
                // through the runtime's driver, which lets the runtime's other tasks (the link,
                // the bridge's port) run between two expiries even if the loop were to ask
                // for a passed deadline turn after turn.
                ready.clear_ready();
                self.armed_for = None;
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if read < 0 && error.kind() == io::ErrorKind::WouldBlock {
                // Re-armed since the readiness was seen (re-arming clears the expirations).
                ready.clear_ready();
                continue;
            }
            return Err(if read < 0 {
                error
            } else {
                io::Error::other(format!("timerfd read {read} bytes, not 8"))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_at_its_deadline_and_not_before() {
        let mut timer = LoopTimer::new().unwrap();
        let start = Instant::now();
        timer.set(start + Duration::from_millis(30)).unwrap();
        timer.expired().await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn a_passed_deadline_fires_at_once() {
        let mut timer = LoopTimer::new().unwrap();
        let now = Instant::now();
        timer.set(now - Duration::from_secs(1)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), timer.expired())
            .await
            .expect("a passed deadline fires")
            .unwrap();
    }

    #[tokio::test]
    async fn re_arming_later_moves_the_deadline() {
        let mut timer = LoopTimer::new().unwrap();
        let start = Instant::now();
        timer.set(start + Duration::from_millis(5)).unwrap();
        // Expired and unread: moving the deadline must not let the old expiry through.
        std::thread::sleep(Duration::from_millis(20));
        let later = Instant::now() + Duration::from_millis(60);
        timer.set(later).unwrap();
        timer.expired().await.unwrap();
        assert!(Instant::now() >= later);
    }

    /// A loop that asks for a passed deadline turn after turn spins, but must not starve the
    /// tasks that share its runtime (on the decision loop's runtime: the link and the bridge).
    #[test]
    fn a_passed_deadline_again_and_again_lets_other_tasks_run() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let beside = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counter = beside.clone();
            tokio::spawn(async move {
                loop {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            });
            let mut timer = LoopTimer::new().unwrap();
            for _ in 0..200 {
                timer
                    .set(Instant::now() - Duration::from_millis(1))
                    .unwrap();
                timer.expired().await.unwrap();
            }
            let ran = beside.load(std::sync::atomic::Ordering::Relaxed);
            assert!(
                ran >= 100,
                "the task beside ran {ran} times in 200 expiries"
            );
        });
    }

    #[tokio::test]
    async fn disarmed_never_fires() {
        let mut timer = LoopTimer::new().unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(50), timer.expired()).await;
        assert!(waited.is_err(), "a timer never armed fired");
    }
}
