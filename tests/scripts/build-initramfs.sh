#!/usr/bin/env bash
# build-initramfs.sh OUTFILE [MARKER]
#
# Builds a tiny gzip-compressed newc cpio initramfs from Debian's
# busybox-static (/bin/busybox). Its /init:
#   1. mounts devtmpfs, proc and sysfs and sends its output to /dev/console
#      (the kernel command line is expected to have console=ttyS0);
#   2. prints `RACKBOOT-KERNEL: <uname -r>` and `RACKBOOT-CMDLINE: <cmdline>`;
#   3. if the image was built with modules (see below), insmods them and
#      prints `RACKBOOT-NET: <iface> <mac>` for every non-loopback interface;
#   4. if the kernel command line has `rackboot.dhcp=1`, runs busybox udhcpc on
#      the first non-loopback interface (or `rackboot.iface=NAME`) and prints
#      `RACKBOOT-DHCP: bound ip=... mask=... router=... siaddr=... serverid=...`
#      or `RACKBOOT-DHCP: failed`;
#   5. if the kernel command line also has `rackboot.bootinfo=1` and the DHCP
#      step got a lease: fetches `http://<server>/boot-info.env` with busybox
#      wget (server: the lease's siaddr, else its server id) and prints
#      `RACKBOOT-BOOTINFO: NODE=.. IMAGE=.. KERNEL_BLAKE3=.. KERNEL_VERSION=..
#      LOG_HOST=.. SESSION=.. MODULES_PATH=.. MODULES_DEP=..` (MODULES_DEP: the
#      first line of `<MODULES_PATH>/modules.dep` fetched from the server,
#      blanks removed; empty without modules); then starts busybox syslogd forwarding to UDP 514 on the
#      boot-info's LOG_HOST (else the server), logs the one line
#      `RACKBOOT-LOG <MARKER> image=<IMAGE>` (facility user, level info, tag
#      rackboot-test: `<14>... rackboot-test: RACKBOOT-LOG ...` on the wire)
#      and prints `RACKBOOT-LOG-SENT`. Failures print
#      `RACKBOOT-BOOTINFO: failed <why>`;
#   5b. if the image holds the discovery probe (RACKBOOT_INITRAMFS_PROBE),
#      the kernel command line has `rackboot.provisional=1` (the agent's
#      discovery script adds it) and the DHCP step got a lease: runs
#      `rackboot-probe --addr <lease ip> --server <server id>` and prints `RACKBOOT-PROBE: node=<name>`
#      (or `RACKBOOT-PROBE: failed`); once numbered, runs udhcpc again, which
#      prints the node's permanent lease as another `RACKBOOT-DHCP: bound` line;
#   6. prints the line `RACKBOOT-MARKER: <MARKER>` (MARKER defaults to
#      RACKBOOT-BOOT-OK) on its own line;
#   7. `poweroff -f`, so that QEMU exits.
#
# Environment:
#   BUSYBOX=PATH                   statically linked busybox to use
#                                  (default /bin/busybox from busybox-static;
#                                  another architecture's works too, e.g.
#                                  arm64 for U-Boot guests: its applets are
#                                  listed with the host's)
#   RACKBOOT_INITRAMFS_PROBE=FILE  include FILE (a statically linked
#                                  rackboot-probe) as /bin/rackboot-probe
#   RACKBOOT_INITRAMFS_MODULES=DIR include kernel modules: DIR is the
#                                  `modules` directory made by fetch-kernel.sh
#                                  (DIR/load-order lists them, dependencies
#                                  first)
#
# The output is reproducible for identical inputs (fixed mtimes, owners and
# inode numbers, sorted entries, gzip -n) and written atomically, so running
# the script again is harmless. Works from any cwd; needs no root.
set -euo pipefail

readonly PROG="${0##*/}"

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

[[ $# -ge 1 && $# -le 2 && -n "$1" ]] || die "usage: $PROG OUTFILE [MARKER]"

outfile="$1"
marker="${2:-RACKBOOT-BOOT-OK}"
busybox="${BUSYBOX:-/bin/busybox}"
modules="${RACKBOOT_INITRAMFS_MODULES:-}"
probe="${RACKBOOT_INITRAMFS_PROBE:-}"

[[ -n "$marker" ]] || die "MARKER must not be empty"
[[ "$marker" != *[[:cntrl:]]* ]] || die "MARKER must be a single line of printable text"

for tool in cpio gzip find sort; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (Debian: apt-get install cpio)"
done
[[ -x "$busybox" ]] || die "busybox not found at '$busybox' (Debian: apt-get install busybox-static)"
ldd_out="$(LC_ALL=C ldd "$busybox" 2>&1 || true)"
if ! grep -qE 'not a dynamic executable|statically linked' <<<"$ldd_out"; then
    die "'$busybox' is not statically linked (Debian: apt-get install busybox-static, which replaces 'busybox')"
fi
if [[ -n "$modules" ]]; then
    [[ -f "$modules/load-order" ]] || die "RACKBOOT_INITRAMFS_MODULES='$modules' has no load-order file (make it with fetch-kernel.sh)"
fi

outdir="$(dirname -- "$outfile")"
mkdir -p -- "$outdir" || die "cannot create directory '$outdir'"

work="$(mktemp -d "${TMPDIR:-/tmp}/rackboot-initramfs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc/rackboot}
cp -- "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"

# One symlink per applet, e.g. sbin/poweroff -> ../bin/busybox. A busybox
# for another architecture (arm64 for U-Boot guests) cannot run here: the
# host's busybox-static (same Debian version, same applets) lists them.
if ! applets="$("$busybox" --list-full 2>/dev/null)"; then
    [[ -x /bin/busybox ]] || die "cannot run '$busybox' to list its applets, and there is no host /bin/busybox to list them instead"
    applets="$(/bin/busybox --list-full)"
fi
while IFS= read -r applet; do
    [[ -n "$applet" && "$applet" != bin/busybox ]] || continue
    [[ -e "$root/$applet" || -L "$root/$applet" ]] && continue
    dir="${applet%/*}"
    if [[ "$dir" == "$applet" ]]; then
        dir=bin
        applet="bin/$applet"
    fi
    mkdir -p "$root/$dir"
    # Depth of $dir decides how many ../ lead back to the root.
    up=..
    rest="$dir"
    while [[ "$rest" == */* ]]; do
        rest="${rest#*/}"
        up="../$up"
    done
    ln -s "$up/bin/busybox" "$root/$applet"
done <<<"$applets"
[[ -e "$root/bin/sh" ]] || ln -s busybox "$root/bin/sh"

printf '%s\n' "$marker" >"$root/etc/rackboot/marker"

if [[ -n "$probe" ]]; then
    [[ -x "$probe" ]] || die "RACKBOOT_INITRAMFS_PROBE='$probe' is not an executable file"
    probe_ldd="$(LC_ALL=C ldd "$probe" 2>&1 || true)"
    grep -qE 'not a dynamic executable|statically linked' <<<"$probe_ldd" \
        || die "'$probe' is not statically linked (build it with scripts/build-probe.sh)"
    cp -- "$probe" "$root/bin/rackboot-probe"
    chmod 0755 "$root/bin/rackboot-probe"
fi

if [[ -n "$modules" ]]; then
    while IFS= read -r rel; do
        [[ -n "$rel" ]] || continue
        [[ -f "$modules/$rel" ]] || die "module '$rel' listed in $modules/load-order is missing"
        mkdir -p "$root/$(dirname -- "$rel")"
        cp -- "$modules/$rel" "$root/$rel"
        printf '/%s\n' "$rel" >>"$root/etc/rackboot/load-order"
    done <"$modules/load-order"
fi

cat >"$root/etc/rackboot/udhcpc.script" <<'SCRIPT'
#!/bin/sh
# udhcpc event script: configure the interface and report the lease.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface" 2>/dev/null
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface" 2>/dev/null
        ip -4 addr add "$ip/${mask:-24}" dev "$interface"
        if [ -n "$router" ]; then
            for r in $router; do ip -4 route add default via "$r" dev "$interface" && break; done
        fi
        echo "RACKBOOT-DHCP: $1 ip=$ip mask=$mask router=$router siaddr=$siaddr serverid=$serverid boot_file=$boot_file"
        # For /init's later steps (boot-info): who answered.
        mkdir -p /run/rackboot
        printf "lease_ip='%s'\nlease_siaddr='%s'\nlease_serverid='%s'\n" "$ip" "$siaddr" "$serverid" >/run/rackboot/lease
        ;;
    leasefail|nak)
        echo "RACKBOOT-DHCP: $1 $message"
        ;;
esac
exit 0
SCRIPT
chmod 0755 "$root/etc/rackboot/udhcpc.script"

cat >"$root/init" <<'INIT'
#!/bin/sh
# rackboot test initramfs /init (see tests/scripts/build-initramfs.sh)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The image has no device nodes (it is built without root): the kernel could
# not open /dev/console for us, so do it now that devtmpfs is mounted.
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

cmdline="$(cat /proc/cmdline)"
arg() { # arg NAME -> value of NAME=value on the kernel command line
    for word in $cmdline; do
        case "$word" in "$1="*) echo "${word#*=}"; return 0 ;; esac
    done
    return 1
}

echo "RACKBOOT-KERNEL: $(uname -r)"
echo "RACKBOOT-CMDLINE: $cmdline"

if [ -f /etc/rackboot/load-order ]; then
    while read -r module; do
        insmod "$module" || echo "RACKBOOT-WARN: insmod $module failed"
    done </etc/rackboot/load-order
    ip link set lo up
    for dev in /sys/class/net/*; do
        name="${dev##*/}"
        [ "$name" = lo ] && continue
        echo "RACKBOOT-NET: $name $(cat "$dev/address")"
    done
fi

if [ "$(arg rackboot.dhcp)" = 1 ]; then
    iface="$(arg rackboot.iface)"
    if [ -z "$iface" ]; then
        for dev in /sys/class/net/*; do
            [ "${dev##*/}" = lo ] || { iface="${dev##*/}"; break; }
        done
    fi
    if [ -z "$iface" ]; then
        echo "RACKBOOT-DHCP: failed no network interface"
    else
        ip link set "$iface" up
        udhcpc -i "$iface" -f -q -n -t 6 -T 3 -s /etc/rackboot/udhcpc.script \
            || echo "RACKBOOT-DHCP: failed"
    fi
fi

if [ "$(arg rackboot.provisional)" = 1 ] && [ -x /bin/rackboot-probe ] && [ -f /run/rackboot/lease ]; then
    . /run/rackboot/lease
    if out="$(rackboot-probe --addr "$lease_ip" --server "$lease_serverid" --timeout-secs 120 --interval-secs 2)"; then
        echo "RACKBOOT-PROBE: $out"
        # Numbered: the provisional address is not renewed. Ask again.
        ip -4 addr flush dev "$iface" 2>/dev/null
        rm -f /run/rackboot/lease
        udhcpc -i "$iface" -f -q -n -t 6 -T 3 -s /etc/rackboot/udhcpc.script \
            || echo "RACKBOOT-DHCP: failed"
    else
        echo "RACKBOOT-PROBE: failed"
    fi
fi

if [ "$(arg rackboot.bootinfo)" = 1 ]; then
    lease_siaddr=
    lease_serverid=
    [ -f /run/rackboot/lease ] && . /run/rackboot/lease
    server="$lease_siaddr"
    if [ -z "$server" ] || [ "$server" = 0.0.0.0 ]; then
        server="$lease_serverid"
    fi
    info=/run/rackboot/boot-info.env
    if [ -z "$server" ]; then
        echo "RACKBOOT-BOOTINFO: failed no DHCP server to ask (needs rackboot.dhcp=1 and a lease)"
    elif ! timeout 20 wget -q -O "$info" "http://$server/boot-info.env"; then
        echo "RACKBOOT-BOOTINFO: failed wget http://$server/boot-info.env"
    else
        # A subshell keeps the sourced RACKBOOT_* values out of /init.
        (
            . "$info"
            loghost="${RACKBOOT_LOG_HOST:-$server}"
            # The module tables of the kernel this node was served: the
            # first line of its modules.dep, spaces removed.
            dep=
            if [ -n "$RACKBOOT_MODULES_PATH" ] &&
                timeout 20 wget -q -O /run/rackboot/modules.dep "http://$server/$RACKBOOT_MODULES_PATH/modules.dep"; then
                dep=$(head -n 1 /run/rackboot/modules.dep | tr -d ' \t')
            fi
            echo "RACKBOOT-BOOTINFO: NODE=$RACKBOOT_NODE IMAGE=$RACKBOOT_IMAGE KERNEL_BLAKE3=$RACKBOOT_KERNEL_BLAKE3 KERNEL_VERSION=$RACKBOOT_KERNEL_VERSION LOG_HOST=$loghost SESSION=$RACKBOOT_SESSION MODULES_PATH=$RACKBOOT_MODULES_PATH MODULES_DEP=$dep"
            # busybox nc has no UDP mode here; syslogd -R forwards what
            # logger writes to /dev/log as one UDP datagram per line.
            syslogd -R "$loghost:514"
            n=0
            while [ ! -S /dev/log ] && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
            if [ ! -S /dev/log ]; then
                echo "RACKBOOT-BOOTINFO: failed syslogd did not create /dev/log"
            else
                logger -p user.info -t rackboot-test "RACKBOOT-LOG $(cat /etc/rackboot/marker) image=$RACKBOOT_IMAGE"
                # syslogd forwards asynchronously: give it a moment.
                sleep 1
                echo "RACKBOOT-LOG-SENT"
            fi
        )
    fi
fi

echo "RACKBOOT-MARKER: $(cat /etc/rackboot/marker)"
sync
poweroff -f
# Only reached if poweroff failed; a kernel panic (init exiting) with
# panic=-1 and QEMU -no-reboot also ends the guest.
sleep 5
exit 1
INIT
chmod 0755 "$root/init"

# Reproducible archive: fixed mtimes, sorted names, root ownership,
# renumbered inodes, no gzip timestamp.
find "$root" -exec touch -h -d @0 {} +
tmp="$outfile.tmp.$$"
(
    cd "$root"
    find . -mindepth 1 -print0 | LC_ALL=C sort -z \
        | cpio --null --create --format=newc --reproducible --owner=0:0 --quiet
) | gzip -9 -n >"$tmp" || { rm -f -- "$tmp"; die "creating the cpio archive failed"; }
mv -f -- "$tmp" "$outfile"
echo "$PROG: $outfile ($(stat -c %s "$outfile") bytes, marker '$marker'${modules:+, with modules})" >&2
