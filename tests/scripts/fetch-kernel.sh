#!/usr/bin/env bash
# fetch-kernel.sh OUTDIR
#
# Fetches Debian's stock amd64 kernel for system tests WITHOUT installing it
# on the host: the `linux-image-amd64` metapackage is downloaded only to read
# which versioned image package it points at, that package is downloaded and
# unpacked with `dpkg-deb -x` into a temporary directory.
#
# Produces:
#   OUTDIR/vmlinuz         the kernel image
#   OUTDIR/kernel-version  the kernel release string (what `uname -r` prints)
#   OUTDIR/modules/lib/modules/<ver>/...  the NIC modules (e1000, virtio_net
#                          and their dependencies) plus modules.* metadata,
#                          for initramfs images that need networking
#   OUTDIR/modules/load-order  those modules' paths relative to OUTDIR/modules,
#                          one per line, dependencies first (for `insmod`)
#
# Idempotent and cached: when OUTDIR/vmlinuz already exists nothing is done.
# Works from any cwd; needs `apt-get` with up-to-date package lists (run
# `apt-get update` once), network access to the Debian mirror, and no root.
set -euo pipefail

readonly PROG="${0##*/}"
# Modules copied into OUTDIR/modules (file names without .ko / .ko.xz), in
# an order in which they can be loaded with plain `insmod` (dependencies
# first; Debian 6.1: virtio needs virtio_ring, virtio_net needs virtio_ring,
# virtio and net_failover, net_failover needs failover).
readonly WANTED_MODULES=(failover net_failover virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_net e1000)

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

log() {
    echo "$PROG: $*" >&2
}

[[ $# -eq 1 && -n "$1" ]] || die "usage: $PROG OUTDIR"

outdir="$1"
if [[ -s "$outdir/vmlinuz" ]]; then
    log "cached: $outdir/vmlinuz ($(cat "$outdir/kernel-version" 2>/dev/null || echo 'unknown version'))"
    exit 0
fi

for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: this script needs a Debian-based host"
done

mkdir -p "$outdir" || die "cannot create output directory '$outdir'"
outdir="$(cd "$outdir" && pwd)"

# Serialise concurrent runs on the same OUTDIR (tests run in parallel).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$outdir/.lock"
    flock 9
    if [[ -s "$outdir/vmlinuz" ]]; then
        log "cached (fetched concurrently): $outdir/vmlinuz"
        exit 0
    fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/rackboot-kernel.XXXXXX")"
trap 'rm -rf "$work"' EXIT

apt_opts=(-q)
if [[ "$(id -u)" -eq 0 ]]; then
    # As root apt drops privileges to _apt for downloads, which cannot write
    # into our private temp dir; download as root instead of warning about it.
    apt_opts+=(-o APT::Sandbox::User=root)
fi

apt_download() {
    # apt-get download writes into the current directory.
    if ! (cd "$work/debs" && apt-get "${apt_opts[@]}" download "$1" >"$work/apt.log" 2>&1); then
        cat "$work/apt.log" >&2
        die "'apt-get download $1' failed (run 'apt-get update' first? is the Debian mirror reachable?)"
    fi
}

mkdir -p "$work/debs" "$work/root"

log "downloading metapackage linux-image-amd64"
apt_download linux-image-amd64
meta_deb=("$work"/debs/linux-image-amd64_*.deb)
[[ -f "${meta_deb[0]}" ]] || die "apt-get download produced no linux-image-amd64 .deb"

# Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)  [possibly with alternatives]
depends="$(dpkg-deb -f "${meta_deb[0]}" Depends)"
image_pkg="$(tr ',|' '\n' <<<"$depends" | sed -e 's/(.*)//' -e 's/[[:space:]]//g' \
    | grep -E '^linux-image-[0-9][^[:space:]]*-amd64(-unsigned)?$' | head -n1 || true)"
[[ -n "$image_pkg" ]] || die "cannot find a versioned linux-image-*-amd64 package in the metapackage's Depends: '$depends'"

log "downloading $image_pkg"
apt_download "$image_pkg"
image_deb=("$work"/debs/"${image_pkg}"_*.deb)
[[ -f "${image_deb[0]}" ]] || die "apt-get download produced no $image_pkg .deb"

log "unpacking $(basename "${image_deb[0]}")"
dpkg-deb -x "${image_deb[0]}" "$work/root" || die "dpkg-deb -x failed on ${image_deb[0]}"

vmlinuz=("$work"/root/boot/vmlinuz-*)
[[ -f "${vmlinuz[0]}" ]] || die "no boot/vmlinuz-* inside $image_pkg"
[[ ${#vmlinuz[@]} -eq 1 ]] || die "more than one boot/vmlinuz-* inside $image_pkg: ${vmlinuz[*]}"
version="${vmlinuz[0]##*/vmlinuz-}"
moddir="$work/root/lib/modules/$version"
[[ -d "$moddir" ]] || die "no lib/modules/$version inside $image_pkg"

# Copy the wanted modules, keeping their path below lib/modules/<ver>.
rm -rf "$outdir/modules"
destmod="$outdir/modules/lib/modules/$version"
mkdir -p "$destmod"
: >"$outdir/modules/load-order"
for name in "${WANTED_MODULES[@]}"; do
    found=0
    # Module files may use '-' or '_' in their names; try both spellings.
    spellings=("$name")
    if [[ "$name" == *_* ]]; then
        spellings+=("${name//_/-}")
    fi
    for spelling in "${spellings[@]}"; do
        while IFS= read -r -d '' ko; do
            rel="${ko#"$moddir"/}"
            mkdir -p "$destmod/$(dirname "$rel")"
            cp -p "$ko" "$destmod/$rel"
            printf '%s\n' "lib/modules/$version/$rel" >>"$outdir/modules/load-order"
            found=1
        done < <(find "$moddir" \( -name "$spelling.ko" -o -name "$spelling.ko.xz" -o -name "$spelling.ko.zst" \) -print0)
    done
    # virtio_pci_*_dev only exist on some kernels (built-in or absent elsewhere).
    if [[ $found -eq 0 && "$name" != virtio_pci_*_dev ]]; then
        log "warning: module $name not found as a module (built into the kernel?)"
    fi
done
for meta in modules.order modules.builtin modules.builtin.modinfo modules.dep modules.alias; do
    if [[ -f "$moddir/$meta" ]]; then
        cp -p "$moddir/$meta" "$destmod/"
    fi
done

# Write vmlinuz last so that its presence means "complete".
cp "${vmlinuz[0]}" "$outdir/vmlinuz.tmp"
printf '%s\n' "$version" >"$outdir/kernel-version"
mv -f "$outdir/vmlinuz.tmp" "$outdir/vmlinuz"
log "kernel $version -> $outdir/vmlinuz ($(stat -c %s "$outdir/vmlinuz") bytes)"
