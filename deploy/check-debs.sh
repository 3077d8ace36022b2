#!/usr/bin/env bash
# check-debs.sh DEB...
#
# Installs the packages made by deploy/build-debs.sh into a THROW-AWAY root
# and checks the result; this machine's own root is never written to.
#
# The throw-away root is a copy-on-write view of this machine's root: in a
# private mount namespace (unshare --mount), an overlay mount with `/` as its
# read-only lower layer and a tmpfs as its upper layer, so that the real
# dpkg, adduser and systemd-analyze of this Debian system run in it (chroot)
# and every change lands in the tmpfs, which is gone when the namespace
# ends. In it:
#   1. dpkg -i DEB... (maintainer scripts included): succeeds;
#   2. user and group rackboot exist (postinst);
#   3. /usr/bin/rackboot*, the units, /etc/rackboot/*.toml (registered as
#      conffiles), the examples, and the CLI's man pages and bash, zsh and
#      fish completions are where they belong;
#   4. both daemons accept their installed /etc/rackboot/*.toml with
#      --check-config, and deploy/verify-units.sh passes on the installed
#      units and binaries (systemd-analyze verify);
#   5. a second dpkg -i (an upgrade to the same version) succeeds and keeps
#      a locally modified conffile;
#   6. dpkg --purge removes the packages' files.
#
# Needs root (mount namespaces), unshare and chroot (util-linux, coreutils),
# overlayfs, dpkg.
set -euo pipefail

readonly PROG="${0##*/}"
die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -ge 1 ]] || die "usage: $PROG DEB..."
[[ "$(id -u)" -eq 0 ]] || die "needs root (a private mount namespace with an overlay root)"
for tool in unshare chroot dpkg mount; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found"
done
debs=()
for d in "$@"; do
    [[ -f "$d" ]] || die "no such file: $d"
    debs+=("$(cd "$(dirname "$d")" && pwd)/${d##*/}")
done

# The part that runs inside the private mount namespace.
if [[ "${RACKBOOT_CHECK_DEBS_INNER:-}" != 1 ]]; then
    base="$(mktemp -d "${TMPDIR:-/tmp}/rackboot-check-debs.XXXXXX")"
    trap 'rm -rf -- "$base"' EXIT
    status=0
    RACKBOOT_CHECK_DEBS_INNER=1 RACKBOOT_CHECK_DEBS_BASE="$base" \
        unshare --mount --propagation private -- "$0" "${debs[@]}" || status=$?
    # Nothing of the throw-away root outlives the namespace.
    if [[ -n "$(ls -A "$base")" ]]; then
        echo "$PROG: warning: $base not empty after the namespace ended" >&2
    fi
    exit "$status"
fi

base="$RACKBOOT_CHECK_DEBS_BASE"
mount -t tmpfs -o size=2g rackboot-check-debs "$base"
mkdir -p "$base/upper" "$base/work" "$base/root"
mount -t overlay rackboot-check-debs -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
root="$base/root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"
mount -t tmpfs tmpfs "$root/run"
mkdir -p "$root/tmp/debs" "$root/tmp/deploy"
cp "${debs[@]}" "$root/tmp/debs/"
cp -r "$here/verify-units.sh" "$here/systemd" "$root/tmp/deploy/"

in_root() {
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
fail() {
    echo "$PROG: FAIL: $*" >&2
    exit 1
}
ok() {
    echo "$PROG: ok   $*"
}

pkgs=()
for d in "${debs[@]}"; do
    pkgs+=("$(dpkg-deb -f "$d" Package)")
done
if in_root getent passwd rackboot >/dev/null; then
    fail "user rackboot exists before the install: this check needs a machine without it"
fi

echo "$PROG: dpkg -i ${pkgs[*]} into a throw-away root (overlay over / in a private mount namespace)"
in_root sh -c 'dpkg -i /tmp/debs/*.deb' || fail "dpkg -i failed"
ok "dpkg -i"
for p in "${pkgs[@]}"; do
    # shellcheck disable=SC2016 # dpkg-query's own ${field} syntax
    [[ "$(in_root dpkg-query -W -f '${Status}' "$p")" == "install ok installed" ]] || fail "$p not installed"
done
ok "dpkg-query: ${pkgs[*]} installed"

have() {
    [[ " ${pkgs[*]} " == *" $1 "* ]]
}

if have rackboot-coordinator || have rackboot-agent; then
    user="$(in_root getent passwd rackboot)" || fail "postinst did not create user rackboot"
    in_root getent group rackboot >/dev/null || fail "postinst did not create group rackboot"
    ok "user: $user"
fi

check_daemon() {
    local daemon="$1" conf="/etc/rackboot/${1#rackboot-}.toml"
    [[ -x "$root/usr/bin/$daemon" ]] || fail "/usr/bin/$daemon missing"
    [[ -f "$root/lib/systemd/system/$daemon.service" ]] || fail "/lib/systemd/system/$daemon.service missing"
    [[ -f "$root/$conf" ]] || fail "$conf missing"
    # shellcheck disable=SC2016 # dpkg-query's own ${field} syntax
    in_root dpkg-query -W -f '${Conffiles}\n' "$daemon" | grep -q " $conf " || fail "$conf is not a conffile of $daemon"
    ls "$root/usr/share/doc/$daemon/examples/"*.toml >/dev/null || fail "no examples in /usr/share/doc/$daemon/examples"
    in_root "/usr/bin/$daemon" --config "$conf" --check-config >/dev/null || fail "$daemon rejects its installed $conf"
    ok "$daemon: binary, unit, conffile $conf (accepted by --check-config), examples $(cd "$root/usr/share/doc/$daemon/examples" && echo *.toml)"
}
if have rackboot-coordinator; then check_daemon rackboot-coordinator; fi
if have rackboot-agent; then check_daemon rackboot-agent; fi
if have rackboot; then
    in_root rackboot --help >/dev/null || fail "rackboot --help failed"
    ok "rackboot: /usr/bin/rackboot runs"
    for f in /usr/share/man/man1/rackboot.1.gz /usr/share/man/man1/rackboot-node-show.1.gz \
        /usr/share/bash-completion/completions/rackboot \
        /usr/share/zsh/vendor-completions/_rackboot \
        /usr/share/fish/vendor_completions.d/rackboot.fish; do
        [[ -f "$root$f" ]] || fail "$f missing"
    done
    pages=$(cd "$root/usr/share/man/man1" && ls rackboot*.1.gz | wc -l)
    ok "rackboot: $pages man pages in /usr/share/man/man1, completions for bash, zsh and fish"
fi

if have rackboot-coordinator && have rackboot-agent && in_root sh -c 'command -v systemd-analyze' >/dev/null; then
    # The installed units with the installed binaries, as they are.
    in_root env -u RACKBOOT_BIN bash /tmp/deploy/verify-units.sh \
        /lib/systemd/system/rackboot-coordinator.service /lib/systemd/system/rackboot-agent.service \
        || fail "systemd-analyze verify failed on the installed units"
    ok "installed units verified"
fi

if have rackboot-coordinator; then
    echo "# local change" >>"$root/etc/rackboot/coordinator.toml"
fi
in_root sh -c 'dpkg -i /tmp/debs/*.deb' >/dev/null || fail "second dpkg -i (upgrade) failed"
if have rackboot-coordinator; then
    grep -q '^# local change' "$root/etc/rackboot/coordinator.toml" || fail "the upgrade overwrote a modified conffile"
fi
ok "reinstall (upgrade path) keeps a modified conffile"

in_root dpkg --purge "${pkgs[@]}" >/dev/null || fail "dpkg --purge failed"
for f in /usr/bin/rackboot /usr/bin/rackboot-agent /usr/bin/rackboot-coordinator \
    /lib/systemd/system/rackboot-agent.service /lib/systemd/system/rackboot-coordinator.service \
    /etc/rackboot/agent.toml /etc/rackboot/coordinator.toml; do
    [[ ! -e "$root$f" ]] || fail "$f still there after purge"
done
ok "dpkg --purge removed the files (user rackboot stays, as Debian does for system users)"
echo "$PROG: all checks passed; the throw-away root is discarded"
