#!/usr/bin/env bash
# CI's deployment step: the aarch64 cross build, its self-test under qemu-user, the arm64
# .deb and its inspection. Run after `bash tests/run` (it uses the x86 debug binary as the
# simulator the aarch64 probe talks to).
#
#   cross/ci.sh [PROFILE]     (default ci-cross: see Cargo.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-ci-cross}
target=aarch64-unknown-linux-gnu
bash cross/setup.sh "$target"
started=$(date +%s)
binary=$(bash cross/build.sh "$target" "$profile" | tail -1)
echo "cross/ci.sh: built $binary in $(( $(date +%s) - started )) s ($(du -h "$binary" | cut -f1))"
file "$binary" 2>/dev/null | grep -q "ARM aarch64" || { file "$binary" 2>/dev/null; readelf -h "$binary" | grep -q AArch64; }
run() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$binary" "$@"; }

# 1. --version names the version and the commit.
version=$(run --version)
echo "cross/ci.sh: $version"
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
case "$version" in *"($commit)"*) ;; *) echo "cross/ci.sh: --version lacks the commit $commit: $version" >&2; exit 1 ;; esac
# The deployed binary has none of the optional parts (simulator, rig, demo, dev-setup).
case "$version" in *"features: none"*) ;; *) echo "cross/ci.sh: the deployed binary has optional features: $version" >&2; exit 1 ;; esac

# 2. The example configurations parse on the target.
for config in config/*.toml; do
  run check-config "$config"
done

# 3. probe (aarch64, under qemu) against the simulator (x86) on loopback.
host=target/debug/flight-companion
[ -x "$host" ] || cargo build --locked --bin flight-companion
simlog=$(mktemp)
"$host" sim --link tcpin:127.0.0.1:0 --speedup 2 > "$simlog" 2>&1 &
sim=$!
trap 'kill "$sim" 2>/dev/null || true; rm -f "$simlog"' EXIT
for _ in $(seq 100); do grep -q "sim: serving " "$simlog" && break; sleep 0.1; done
endpoint=$(sed -n 's/.*sim: serving \(tcpin:[^ ]*\).*/\1/p' "$simlog" | head -1)
[ -n "$endpoint" ] || { cat "$simlog" >&2; exit 1; }
json=$(timeout 60 qemu-aarch64 -L /usr/aarch64-linux-gnu "$binary" probe --link "${endpoint/tcpin/tcpout}" --json --seconds 8)
echo "$json" | python3 -c '
import json, sys
state = json.load(sys.stdin)
assert state["autopilot"]["autopilot"] == "ardupilot", state["autopilot"]
assert state["autopilot"]["simulated"] is True, state["autopilot"]
assert state["link"]["frames_received"] > 0, state["link"]
print("cross/ci.sh: aarch64 probe heard", state["autopilot"]["autopilot"], "with", state["link"]["frames_received"], "frames")
'
kill "$sim" 2>/dev/null || true

# 4. The arm64 package: built and inspected.
deb=$(bash cross/deb.sh "$target" "$profile" | tail -1)
dpkg-deb -I "$deb"
contents=$(dpkg-deb -c "$deb")
echo "$contents"
for path in ./usr/bin/flight-companion ./lib/systemd/system/flight-companion.service \
            ./etc/flight-companion/flight-companion.toml \
            ./usr/share/doc/flight-companion/examples/credentials.conf; do
  echo "$contents" | grep " $path\$" >/dev/null || { echo "cross/ci.sh: $path missing from $deb" >&2; exit 1; }
done
[ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ] || { echo "cross/ci.sh: not arm64" >&2; exit 1; }
dpkg-deb --ctrl-tarfile "$deb" | tar -tf - | grep postinst >/dev/null
echo "cross/ci.sh: ok: $deb ($(du -h "$deb" | cut -f1))"

# 5. A source tarball (git archive) knows its commit without git.
if git rev-parse --git-dir >/dev/null 2>&1; then
  archived=$(git archive HEAD GIT_COMMIT | tar -xOf -)
  case "$commit" in "$archived"*) ;; *) echo "cross/ci.sh: git archive GIT_COMMIT is '$archived', HEAD is $commit" >&2; exit 1 ;; esac
fi
