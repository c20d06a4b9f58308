#!/usr/bin/env bash
# Builds the Debian package of an already cross-built binary, with dpkg-deb from a staged
# tree (no cargo-deb needed; Cargo.toml's [package.metadata.deb] describes the same
# package for those who prefer `cargo deb`).
#
#   cross/deb.sh TARGET [PROFILE]     e.g. cross/deb.sh aarch64-unknown-linux-gnu
#
# Output: target/debian/flight-companion_VERSION_ARCH.deb (path printed on the last line).
# It installs /usr/bin/flight-companion, the systemd unit, /etc/flight-companion/
# flight-companion.toml (a conffile: upgrades keep your edits), the credentials drop-in
# example and the README, and creates the flight-companion system user (groups dialout,
# video) in postinst.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: cross/deb.sh TARGET [PROFILE]}
profile=${2:-release}
case "$target" in
  aarch64-unknown-linux-gnu) arch=arm64; strip=aarch64-linux-gnu-strip ;;
  armv7-unknown-linux-gnueabihf) arch=armhf; strip=arm-linux-gnueabihf-strip ;;
  x86_64-unknown-linux-gnu) arch=amd64; strip=strip ;;
  *) echo "cross/deb.sh: unsupported target $target" >&2; exit 2 ;;
esac
dir=$profile
[ "$profile" = dev ] && dir=debug
binary=target/$target/$dir/flight-companion
[ -x "$binary" ] || { echo "cross/deb.sh: $binary is missing: run cross/build.sh $target $profile" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/flight-companion" \
  "$root/usr/share/doc/flight-companion/examples"
install -m 0755 "$binary" "$root/usr/bin/flight-companion"
if command -v "$strip" >/dev/null; then "$strip" --strip-unneeded "$root/usr/bin/flight-companion"; fi
install -m 0644 systemd/flight-companion.service "$root/lib/systemd/system/"
install -m 0644 config/flight-companion.toml "$root/etc/flight-companion/flight-companion.toml"
install -m 0644 systemd/flight-companion.service.d/credentials.conf README.md \
  "$root/usr/share/doc/flight-companion/"
mv "$root/usr/share/doc/flight-companion/credentials.conf" "$root/usr/share/doc/flight-companion/examples/"
install -m 0644 config/raspberry-pi.toml config/simulator.toml "$root/usr/share/doc/flight-companion/examples/"
cat > "$root/usr/share/doc/flight-companion/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: flight-companion
Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY
installed_kb=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: flight-companion
Version: $version
Architecture: $arch
Maintainer: flight-companion maintainers <flight-companion@localhost>
Installed-Size: $installed_kb
Depends: libc6 (>= 2.31), adduser, systemd
Section: misc
Priority: optional
Description: onboard drone companion daemon (MAVLink <-> MCP over mTLS MQTT 5)
 The one trusted gate between ground MCP clients and a PX4/ArduPilot autopilot:
 safety envelope, e-stop, command whitelist, roles and audit, run by systemd with
 a watchdog, journald logging and Prometheus metrics.
CONTROL
echo "/etc/flight-companion/flight-companion.toml" > "$root/DEBIAN/conffiles"
# Maintainer scripts, shared with cargo-deb ([package.metadata.deb] in Cargo.toml).
install -m 0755 systemd/debian/postinst systemd/debian/prerm systemd/debian/postrm "$root/DEBIAN/"
mkdir -p target/debian
out=target/debian/flight-companion_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >&2
echo "$out"
