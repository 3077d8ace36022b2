#!/usr/bin/env bash
# build-probe.sh [OUTFILE]
#
# Builds `rackboot-probe` (the discovery probe run in discovery images) as
# a statically linked, stripped release binary (about 2 MiB) and copies it
# to OUTFILE (default: target/rackboot-probe). Static linking uses glibc's
# static libraries (Debian: libc6-dev), so the binary runs in any initramfs
# without a loader or libraries.
#
# Builds in its own target directory (target/probe-static): the static
# RUSTFLAGS must not invalidate the workspace's normal build.
set -euo pipefail

readonly PROG="${0##*/}"
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

out="${1:-target/rackboot-probe}"
target="$(rustc -vV | sed -n 's/^host: //p')"
[[ -n "$target" ]] || { echo "$PROG: error: cannot read the host target from rustc -vV" >&2; exit 1; }

# --target makes RUSTFLAGS apply to the probe only, not to proc macros.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --locked --release \
    -p rackboot-probe --target "$target" --target-dir target/probe-static
bin="target/probe-static/$target/release/rackboot-probe"
mkdir -p -- "$(dirname -- "$out")"
tmp="$out.tmp.$$"
strip -o "$tmp" "$bin"
mv -f -- "$tmp" "$out"
echo "$PROG: $out ($(stat -c %s "$out") bytes, static)" >&2
