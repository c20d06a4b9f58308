"""What a process costs, read from the kernel (standard library only): its CPU time and how often
its threads sleep. Shared by benches/peers/drive.py and benches/idle.sh."""
import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    """CPU time of the process, as (seconds, exact, seconds from ticks).

    Exact: the process's CPU-time clock (glibc's `clock_getcpuclockid(pid)`, the scheduler's
    runtime of every thread in nanoseconds, ended threads included). Where that cannot be read,
    the sum of its threads' `schedstat` (zero on kernels without CONFIG_SCHEDSTATS, and missing
    ended threads). Ticks: utime + stime of `/proc/PID/stat` (clock ticks of 10 ms)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
    try:
        return (time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9, True, ticks)
    except OSError:
        pass
    total_ns = 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
                total_ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return (total_ns / 1e9, False, ticks)


def cpu_delta(before, after):
    """Seconds of CPU between two `cpu_s` readings: the clock when both ends read it; otherwise
    the larger of schedstat and ticks."""
    if before[1] and after[1]:
        return after[0] - before[0]
    return max(after[0] - before[0], after[2] - before[2])


def wakes(pid, thread=None):
    """Times the process's threads (only those named `thread`, when given) went to sleep and
    were woken: the sum of their `voluntary_ctxt_switches`; threads that ended are not counted.
    A consumer that sleeps once per write of a feed reads 1.0 per write."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, task)
        try:
            if thread is not None:
                with open(base + "comm") as f:
                    if f.read().strip() != thread:
                        continue
            with open(base + "status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total
