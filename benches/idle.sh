#!/usr/bin/env bash
# What the daemon costs when nothing happens (BENCHMARKS.md, issue 17): each binary given runs in
# turn with no autopilot (a `udpin` link nobody sends to), no broker and no local e-stop socket;
# after 4 s, prints its CPU time per second and how often its
# threads, and its decision loop alone, go to sleep and are woken (benches/proc_cpu.py).
#
#   bash benches/idle.sh [--seconds 30] [--rounds 2] BINARY...
#
# The binaries alternate within each round, so a machine that slows down does not favour one.
set -euo pipefail
benches=$(cd "$(dirname "$0")" && pwd)
seconds=30
rounds=2
binaries=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) binaries+=("$(realpath "$1")"); shift ;;
  esac
done
[ ${#binaries[@]} -gt 0 ] || { echo "usage: bash benches/idle.sh [--seconds N] [--rounds N] BINARY..." >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/fc.toml" <<EOF
[vehicle]
link = "udpin:127.0.0.1:$port"
[mqtt]
enabled = false
[estop]
socket_path = ""
[audit]
dir = "$work/audit"
EOF
printf '%-6s %-40s %12s %16s %16s\n' round binary "CPU ms/s" "loop wakes/s" "all wakes/s"
for round in $(seq "$rounds"); do
  for binary in "${binaries[@]}"; do
    rm -rf "$work/audit"
    RUST_LOG=warn "$binary" run --config "$work/fc.toml" > "$work/daemon.log" 2>&1 &
    pid=$!
    sleep 4
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$binary exited; its log:" >&2
      cat "$work/daemon.log" >&2
      exit 1
    fi
    python3 - "$pid" "$seconds" "$round" "$binary" "$benches" <<'PY'
import os, sys, time
pid, seconds, round_, binary = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, sys.argv[5])
from proc_cpu import cpu_delta, cpu_s, wakes

before = (cpu_s(pid), wakes(pid, "decision-loop"), wakes(pid))
time.sleep(seconds)
after = (cpu_s(pid), wakes(pid, "decision-loop"), wakes(pid))
print("%-6s %-40s %12.3f %16.1f %16.1f" % (
    round_, os.path.basename(binary), cpu_delta(before[0], after[0]) * 1e3 / seconds,
    (after[1] - before[1]) / seconds, (after[2] - before[2]) / seconds))
PY
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done
