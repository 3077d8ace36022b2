#!/usr/bin/env bash
# build-debs.sh [OUTDIR]
#
# Builds the three Debian packages with cargo-deb (`cargo install cargo-deb
# --locked`), from one release build of the three binaries:
#
#   rackboot-coordinator  /usr/bin/rackboot-coordinator, its systemd unit,
#                         /etc/rackboot/coordinator.toml (conffile), examples
#   rackboot-agent        /usr/bin/rackboot-agent, its systemd unit,
#                         /etc/rackboot/agent.toml (conffile), examples
#   rackboot              /usr/bin/rackboot (the CLI)
#
# Metadata: [package.metadata.deb] in coordinator/, rack-agent/ and
# cli/Cargo.toml; maintainer scripts in deploy/debian/; units in
# deploy/systemd/; configs in deploy/config/.
#
# The .debs go to OUTDIR (default <target>/debian); the target directory is
# $CARGO_TARGET_DIR (default <repo>/target). Prints each package's size and
# contents. deploy/check-debs.sh installs them into a throw-away root.
set -euo pipefail

readonly PROG="${0##*/}"
die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
[[ "$target" == /* ]] || target="$repo/$target"
out="${1:-$target/debian}"

command -v cargo >/dev/null 2>&1 || die "cargo not found"
cargo deb --version >/dev/null 2>&1 || die "cargo-deb not found: cargo install cargo-deb --locked"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (a Debian host is needed)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
export CARGO_TARGET_DIR="$target"
cd "$repo"

echo "$PROG: release build of rackboot-coordinator, rackboot-agent, rackboot (target dir $target)"
cargo build --release --locked -p rackboot-coordinator -p rackboot-agent -p rackboot-cli --bins

debs=()
for pkg in rackboot-coordinator rackboot-agent rackboot-cli; do
    echo "$PROG: cargo deb -p $pkg"
    # --strip: Debian binaries carry no debug info (the release profile keeps
    # line tables, which cargo-deb would otherwise ship: 7x the size).
    deb="$(cargo deb --locked --no-build --strip -p "$pkg" -o "$out" | tail -n 1)"
    [[ -f "$deb" ]] || die "cargo deb -p $pkg did not name a .deb (got '$deb')"
    debs+=("$deb")
done

echo
for deb in "${debs[@]}"; do
    echo "== ${deb##*/}: $(stat -c %s "$deb") bytes, installed $(dpkg-deb -f "$deb" Installed-Size) KiB"
    dpkg-deb -f "$deb" Package Version Architecture Depends Recommends | sed 's/^/   /'
    echo "   conffiles: $(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles 2>/dev/null | tr '\n' ' ')"
    echo "   maintainer scripts: $(dpkg-deb --ctrl-tarfile "$deb" | tar -tf - | grep -E '^\./(pre|post)(inst|rm)$' | sed 's#^\./##' | tr '\n' ' ')"
    dpkg-deb -c "$deb" | awk '{ printf "   %s %10s %s\n", $1, $3, $6 }'
done
echo
printf '%s\n' "${debs[@]}"
