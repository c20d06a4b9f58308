#!/usr/bin/env bash
# Checks the unit with systemd-analyze (no running systemd needed):
#   systemd/verify.sh [BINARY]
# `verify` checks every directive and that ExecStart= is executable, so a copy of the unit
# (with the credentials drop-in) points ExecStart= at BINARY (default: the debug build).
# Then prints `systemd-analyze security`'s exposure score of the unit as shipped.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-target/debug/flight-companion}")
[ -x "$binary" ] || { echo "systemd/verify.sh: $binary is not built (cargo build)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/bin/flight-companion|ExecStart=$binary|" systemd/flight-companion.service \
  > "$work/flight-companion.service"
mkdir -p "$work/flight-companion.service.d"
cp systemd/flight-companion.service.d/credentials.conf "$work/flight-companion.service.d/"
# verify exits non-zero and prints the problem on any warning about the unit itself.
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$work/flight-companion.service" 2>&1 || echo "exit status $?")
if [ -n "$out" ]; then
  echo "systemd-analyze verify: $out" >&2
  exit 1
fi
echo "systemd-analyze verify: ok"
# Offline security analysis of the unit file (--offline needs no running manager).
systemd-analyze security --offline=true --no-pager "$work/flight-companion.service" > "$work/security.txt" 2>&1 || true
grep -E "Overall exposure level" "$work/security.txt" || { cat "$work/security.txt" >&2; exit 1; }
