#!/usr/bin/env bash
# The `get_status` round trip against a bare MQTT echo (BENCHMARKS.md, issue 17), set up the way
# benches/mcp_roundtrip.rs needs it: dev-setup in a temporary directory (call limits raised as
# benches/footprint.rs raises them), Mosquitto with mTLS, the simulator and the daemon on
# ephemeral loopback ports, then the bench; prints the daemon's CPU over the bench too (its
# CPU-time clock), and stops everything at the end.
#
#   bash benches/mcp_roundtrip.sh [--daemon BINARY] [--fsync always|never] [-- --calls 2000]
#
# BINARY defaults to target/release/flight-companion; dev-setup and the simulator always come
# from that full build (a deployed build has neither), so build it first:
#   cargo build --release --locked --bin flight-companion
set -euo pipefail
cd "$(dirname "$0")/.."
full=target/release/flight-companion
daemon=$full
fsync=always
while [ $# -gt 0 ]; do
  case "$1" in
    --daemon) daemon=$2; shift 2 ;;
    --fsync) fsync=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "mcp_roundtrip.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$full" ] || { echo "mcp_roundtrip.sh: $full is missing: cargo build --release --locked --bin flight-companion" >&2; exit 1; }
mosquitto=/usr/sbin/mosquitto
[ -x $mosquitto ] || mosquitto=mosquitto

# Built before anything starts: the daemon's CPU is read over the bench alone.
cargo bench --locked --quiet --bench mcp_roundtrip --no-run

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # FILE TEXT: until FILE has a line with TEXT (10 s)
  for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "mcp_roundtrip.sh: no \"$2\" in $1:" >&2; cat "$1" >&2; exit 1
}

broker_port=$(free_port)
sim_port=$(free_port)
"$full" dev-setup "$dir/dev" --broker-port "$broker_port" > "$dir/dev-setup.log"
# The limits a busy client does not hit, room for the 10 sessions, and the fsync policy (the
# same edits as benches/footprint.rs's daemon_config).
awk -v sim="$sim_port" -v fsync="$fsync" '
  /^link = / { print "link = \"tcpout:127.0.0.1:" sim "\""; next }
  /^revocation_path = / { print "calls_per_s = 5000.0"; print "calls_burst = 5000" }
  /^server_id = / { print "sessions_max = 32"; print "identity_sessions_max = 32";
                    print "calls_concurrent_max = 64"; print "identity_calls_concurrent_max = 64" }
  { print }
  $0 == "[audit]" { print "fsync = \"" fsync "\"" }
' "$dir/dev/drone.toml" > "$dir/dev/drone-roundtrip.toml"

$mosquitto -c "$dir/dev/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
pids+=($!)
"$full" sim --link "tcpin:127.0.0.1:$sim_port" --ekf-ready-s 0 > "$dir/sim.log" 2>&1 &
pids+=($!)
wait_for "$dir/sim.log" "sim: serving "
RUST_LOG=warn "$daemon" run --config "$dir/dev/drone-roundtrip.toml" > "$dir/daemon.log" 2>&1 &
daemon_pid=$!
pids+=($daemon_pid)

echo "daemon $daemon ($("$daemon" --version | head -1)), fsync = $fsync"
cpu_ns() { python3 -c "import time, sys; print(time.clock_gettime_ns(((~int(sys.argv[1])) << 3) | 2))" "$1"; }
cpu0=$(cpu_ns $daemon_pid)
cargo bench --locked --bench mcp_roundtrip -- --config "$dir/dev/ground.toml" "$@"
cpu1=$(cpu_ns $daemon_pid)
echo "daemon CPU over the bench: $(( (cpu1 - cpu0) / 1000000 )) ms"
