#!/usr/bin/env bash
# Cross-compiles flight-companion with Debian's cross gcc (no Docker needed).
#
#   cross/build.sh TARGET [PROFILE]
#
# TARGET:  aarch64-unknown-linux-gnu      (Raspberry Pi 4/5 with 64-bit Pi OS, Jetson)
#          armv7-unknown-linux-gnueabihf  (32-bit Raspberry Pi OS)
# PROFILE: release (default; what the .deb ships) or ci-cross (CI's quicker build).
#
# Needs: `rustup target add TARGET` and the Debian package gcc-aarch64-linux-gnu or
# gcc-arm-linux-gnueabihf (cross/setup.sh installs both) and cmake. rustls uses the `ring`
# provider, whose C and assembly need only that C cross compiler (no clang); libjpeg-turbo
# (the camera, crate `turbojpeg`) is built by cmake with the same compiler.
# Prints the path of the binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: cross/build.sh TARGET [PROFILE]}
profile=${2:-release}
case "$target" in
  aarch64-unknown-linux-gnu) gcc=aarch64-linux-gnu-gcc ;;
  armv7-unknown-linux-gnueabihf) gcc=arm-linux-gnueabihf-gcc ;;
  *) echo "cross/build.sh: unsupported target $target (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2; exit 2 ;;
esac
command -v "$gcc" >/dev/null || { echo "cross/build.sh: $gcc is missing: run cross/setup.sh $target" >&2; exit 1; }
upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
lower=$(echo "$target" | tr '-' '_')
export "CARGO_TARGET_${upper}_LINKER=$gcc"
export "CC_${lower}=$gcc"
export "AR_${lower}=${gcc%-gcc}-ar"
# The deployed daemon: no simulator, rig, demo or dev-setup (Cargo.toml's features).
cargo build --locked --no-default-features --bin flight-companion --target "$target" --profile "$profile" >&2
dir=$profile
[ "$profile" = dev ] && dir=debug
echo "target/$target/$dir/flight-companion"
