#!/usr/bin/env bash
# Telemetry ingest side by side (BENCHMARKS.md, issue 17): the same pymavlink telemetry fed at
# the same time to flight-companion, MAVProxy, mavsdk_server, mavlink-mcp and the single-thread
# FrameDecoder floor (blocking reads, and on tokio: decode_floor_tokio); prints CPU per message
# and RSS of each.
#
#   bash benches/peers/run.sh [drive.py options: --seconds 30 --settle 10 --only a,b --json
#                              --fc-before OLDER_BINARY]
#
# Builds the release daemon and examples/decode_floor, makes the peers' venv at
# target/peers-venv from benches/peers/requirements.txt (pinned; once), then runs drive.py.
# On a Raspberry Pi: the same command, on the Pi (Raspberry Pi OS 64-bit: python3-venv and a
# Rust toolchain; pip builds nothing for these peers on aarch64 but MAVProxy's optional GUI
# modules, which are not used), or cross-build with cross/build.sh and pass --fc and --floor.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/peers-venv
stamp=$venv/.requirements.sha256
want=$(sha256sum benches/peers/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x $venv/bin/python ] || python3 -m venv $venv
  $venv/bin/pip install -q --disable-pip-version-check -r benches/peers/requirements.txt
  echo "$want" > "$stamp"
fi
fc=target/release/flight-companion
floor=target/release/examples/decode_floor
case " $* " in
  *" --fc "*) ;;
  *) cargo build --release --locked --bin flight-companion --example decode_floor >&2 ;;
esac
exec $venv/bin/python benches/peers/drive.py --fc "$fc" --floor "$floor" --venv "$venv" "$@"
