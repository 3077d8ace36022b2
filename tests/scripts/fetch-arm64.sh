#!/usr/bin/env bash
# fetch-arm64.sh OUTDIR
#
# Fetches what the U-Boot arm64 boot tests boot, WITHOUT installing anything
# on the host: Debian's stock arm64 kernel (`linux-image-arm64`'s versioned
# package, an uncompressed arm64 `Image` that U-Boot's `booti` starts) and
# the arm64 `busybox-static`, each downloaded with `apt-get download` and
# unpacked with `dpkg-deb -x`.
#
# Produces:
#   OUTDIR/vmlinuz         the arm64 kernel image
#   OUTDIR/kernel-version  its release (what `uname -r` prints in the guest)
#   OUTDIR/busybox         statically linked arm64 busybox
#
# Needs the arm64 architecture in dpkg with package lists for it
# (`dpkg --add-architecture arm64 && apt-get update`; tests/scripts/
# install-deps.sh does it) and a reachable Debian mirror; no root.
# Idempotent and cached: when OUTDIR/vmlinuz and OUTDIR/busybox exist,
# nothing is done.
set -euo pipefail

readonly PROG="${0##*/}"

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

[[ $# -eq 1 && -n "$1" ]] || die "usage: $PROG OUTDIR"
outdir="$1"
if [[ -s "$outdir/vmlinuz" && -s "$outdir/busybox" ]]; then
    echo "$PROG: cached: $outdir ($(cat "$outdir/kernel-version" 2>/dev/null || echo '?'))" >&2
    exit 0
fi
for tool in apt-get dpkg-deb dpkg; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: this script needs a Debian-based host"
done
dpkg --print-foreign-architectures | grep -qx arm64 \
    || die "dpkg does not know the arm64 architecture: run 'dpkg --add-architecture arm64 && apt-get update' as root (or tests/scripts/install-deps.sh)"

mkdir -p "$outdir" || die "cannot create '$outdir'"
outdir="$(cd "$outdir" && pwd)"
exec 9>"$outdir/.lock"
flock 9
if [[ -s "$outdir/vmlinuz" && -s "$outdir/busybox" ]]; then
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/rackboot-arm64.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/root"
apt_opts=(-q)
[[ "$(id -u)" -eq 0 ]] && apt_opts+=(-o APT::Sandbox::User=root)
apt_download() {
    if ! (cd "$work/debs" && apt-get "${apt_opts[@]}" download "$1" >"$work/apt.log" 2>&1); then
        cat "$work/apt.log" >&2
        die "'apt-get download $1' failed (run 'apt-get update' after adding arm64? is the Debian mirror reachable?)"
    fi
}

apt_download linux-image-arm64:arm64
meta=("$work"/debs/linux-image-arm64_*_arm64.deb)
[[ -f "${meta[0]}" ]] || die "no linux-image-arm64 .deb downloaded"
image_pkg="$(dpkg-deb -f "${meta[0]}" Depends | tr ',|' '\n' | sed -e 's/(.*)//' -e 's/[[:space:]]//g' \
    | grep -E '^linux-image-[0-9][^[:space:]]*-arm64(-unsigned)?$' | head -n1 || true)"
[[ -n "$image_pkg" ]] || die "no versioned arm64 kernel package in linux-image-arm64's Depends"
apt_download "$image_pkg:arm64"
apt_download busybox-static:arm64
for deb in "$work"/debs/"$image_pkg"_*.deb "$work"/debs/busybox-static_*_arm64.deb; do
    [[ -f "$deb" ]] || die "expected package $deb missing"
    dpkg-deb -x "$deb" "$work/root" || die "dpkg-deb -x failed on $deb"
done
vmlinuz=("$work"/root/boot/vmlinuz-*)
[[ -f "${vmlinuz[0]}" ]] || die "no boot/vmlinuz-* in $image_pkg"
[[ -x "$work/root/bin/busybox" ]] || die "no bin/busybox in busybox-static:arm64"

cp "$work/root/bin/busybox" "$outdir/busybox.tmp" && mv -f "$outdir/busybox.tmp" "$outdir/busybox"
printf '%s\n' "${vmlinuz[0]##*/vmlinuz-}" >"$outdir/kernel-version"
cp "${vmlinuz[0]}" "$outdir/vmlinuz.tmp" && mv -f "$outdir/vmlinuz.tmp" "$outdir/vmlinuz"
echo "$PROG: arm64 kernel $(cat "$outdir/kernel-version") and busybox -> $outdir" >&2
