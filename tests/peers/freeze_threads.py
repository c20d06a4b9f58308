#!/usr/bin/env python3
"""Stops the threads of a running process that bear one name, for a while, and lets them go:
a stalled tokio runtime on demand, beside the process's other threads, which run on.

    python3 tests/peers/freeze_threads.py PID THREAD_NAME SECONDS

For example `freeze_threads.py $(pidof flight-companion) tokio-rt-worker 4` stops the daemon's
main runtime (the MCP side) and leaves its decision loop running (ARCHITECTURE.md: a stalled
MCP side cannot hide a lost ground link). It uses ptrace (PTRACE_SEIZE, then PTRACE_INTERRUPT,
which stops one thread where SIGSTOP would stop them all), so it needs root or
CAP_SYS_PTRACE.
"""
import ctypes
import os
import sys
import time

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request: int, tid: int) -> None:
    if libc.ptrace(request, tid, None, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"ptrace({request:#x}, {tid}): {os.strerror(errno)}")


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    pid, name, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    tids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as comm:
            if comm.read().strip() == name:
                tids.append(int(tid))
    if not tids:
        print(f"no thread named {name!r} in process {pid}", file=sys.stderr)
        return 1
    for tid in tids:
        ptrace(PTRACE_SEIZE, tid)
        ptrace(PTRACE_INTERRUPT, tid)
        os.waitpid(tid, WALL)
    print(f"{len(tids)} threads named {name} stopped at {time.strftime('%T')} for {seconds} s", flush=True)
    time.sleep(seconds)
    for tid in tids:
        ptrace(PTRACE_DETACH, tid)
    print(f"released at {time.strftime('%T')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
