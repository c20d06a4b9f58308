#!/usr/bin/env bash
# Installs what cross/build.sh needs for the given targets (default: both):
# the Rust standard library for the target (rustup) and Debian's cross gcc; qemu-user to
# run the result on this machine (cross/selftest.sh).
set -euo pipefail
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# cmake: libjpeg-turbo (crate `turbojpeg`) is built from source for the target; NEON needs no
# assembler, so nothing else.
packages=(qemu-user cmake)
for t in "${targets[@]}"; do
  case "$t" in
    aarch64-unknown-linux-gnu) packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    armv7-unknown-linux-gnueabihf) packages+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    *) echo "cross/setup.sh: unsupported target $t" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross/setup.sh: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target add "${targets[@]}"
