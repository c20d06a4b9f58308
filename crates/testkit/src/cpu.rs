//! CPU time of a process or of the calling thread, in nanoseconds, for the benches' "CPU per
//! unit of work" (which load from other processes on a shared machine does not inflate).
//!
//! Read from the kernel's CPU-time clocks (`clock_getcpuclockid`, `CLOCK_THREAD_CPUTIME_ID`):
//! the scheduler's runtime of every thread, with nanosecond resolution, including threads that
//! have ended. `/proc/PID/task/*/schedstat` gives the same runtime, but only on kernels built
//! with `CONFIG_SCHEDSTATS` (it reads zero elsewhere, as on the 2026-12-07 CI machine), and
//! `/proc/PID/stat`'s utime + stime counts clock ticks of 10 ms.

/// Linux's largest pid (`PID_MAX_LIMIT` on 64-bit kernels).
const PID_MAX_LIMIT: u32 = 4_194_304;

/// Nanoseconds every thread of `pid` has spent on a CPU since it started; 0 if the process is
/// gone (or the clock cannot be read).
pub fn process_cpu_ns(pid: u32) -> u64 {
    // The clock id is the pid shifted left by 3: a larger pid would wrap to another clock (and
    // 0 means the caller).
    if pid == 0 || pid > PID_MAX_LIMIT {
        return 0;
    }
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the id; the call only writes it.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } != 0 {
        return 0;
    }
    read_clock_ns(clock)
}

/// Nanoseconds the calling thread has spent on a CPU.
pub fn thread_cpu_ns() -> u64 {
    read_clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn read_clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid place for the time; the call only writes it.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return 0;
    }
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work done on this thread shows in both clocks, and a process that does not exist
    /// reads as none.
    #[test]
    fn clocks_count_work_on_a_cpu() {
        let process_before = process_cpu_ns(std::process::id());
        let thread_before = thread_cpu_ns();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let thread_spent = thread_cpu_ns() - thread_before;
        let process_spent = process_cpu_ns(std::process::id()) - process_before;
        assert!(
            thread_spent >= 5_000_000,
            "thread clock moved {thread_spent} ns"
        );
        assert!(
            process_spent >= thread_spent,
            "{process_spent} < {thread_spent}"
        );
        assert_eq!(
            process_cpu_ns(PID_MAX_LIMIT),
            0,
            "no process has the largest pid"
        );
        assert_eq!(process_cpu_ns(u32::MAX >> 2), 0, "a pid past the limit");
    }
}
