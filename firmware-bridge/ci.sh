#!/usr/bin/env bash
# CI for the firmware bridge: the protocol crate for two Cortex-M targets (proves it is
# no_std and heap-free), the RP2040 firmware for thumbv6m-none-eabi, and its size.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add thumbv6m-none-eabi thumbv7em-none-eabihf
for target in thumbv6m-none-eabi thumbv7em-none-eabihf; do
  echo "firmware-bridge: protocol and logic for $target"
  cargo build --locked --release -p fwbridge-protocol -p fwbridge-logic --target "$target" \
    --manifest-path ../Cargo.toml --target-dir ../target
done
echo "firmware-bridge: rp2040 firmware for thumbv6m-none-eabi"
(cd rp2040 && cargo build --locked --release)
size_tool=$(command -v llvm-size || command -v arm-none-eabi-size || true)
if [ -n "$size_tool" ]; then
  "$size_tool" rp2040/target/thumbv6m-none-eabi/release/fwbridge-rp2040
else
  echo "firmware-bridge: no llvm-size/arm-none-eabi-size on PATH; ELF at rp2040/target/thumbv6m-none-eabi/release/fwbridge-rp2040" >&2
fi
