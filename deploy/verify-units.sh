#!/usr/bin/env bash
# verify-units.sh [UNIT...]
#
# Runs `systemd-analyze verify` on rackboot's systemd units (default: every
# unit in deploy/systemd/) and fails on ANY output: systemd-analyze exits 0
# on warnings such as an unknown key or a bad value, which are mistakes here.
# Then prints each service's `systemd-analyze security --offline=yes`
# exposure level (informational).
#
# systemd-analyze refuses a unit whose ExecStart binary does not exist. The
# binaries are taken from where they are:
#   - RACKBOOT_BIN=DIR given: copies of the units with /usr/bin/rackboot-*
#     replaced by DIR/rackboot-* are verified;
#   - else, if /usr/bin/rackboot-coordinator and /usr/bin/rackboot-agent exist
#     (the Debian packages are installed), the units are verified as they are;
#   - else DIR defaults to <repo>/target/debug (cargo build --workspace --bins).
#
# Needs systemd-analyze (Debian: systemd); no root, no running systemd.
set -euo pipefail

readonly PROG="${0##*/}"
die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze not found (Debian: apt-get install systemd)"

units=("$@")
if [[ ${#units[@]} -eq 0 ]]; then
    units=("$here"/systemd/*.service)
fi
for u in "${units[@]}"; do
    [[ -f "$u" ]] || die "no unit file $u"
done

bin="${RACKBOOT_BIN:-}"
if [[ -z "$bin" ]] && ! [[ -x /usr/bin/rackboot-coordinator && -x /usr/bin/rackboot-agent ]]; then
    bin="$repo/target/debug"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/rackboot-verify-units.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT

to_verify=()
if [[ -n "$bin" ]]; then
    bin="$(cd "$bin" 2>/dev/null && pwd)" || die "RACKBOOT_BIN directory '${RACKBOOT_BIN:-$repo/target/debug}' does not exist (build with: cargo build --workspace --bins)"
    for name in rackboot-coordinator rackboot-agent; do
        [[ -x "$bin/$name" ]] || die "$bin/$name is missing (build with: cargo build --workspace --bins, or set RACKBOOT_BIN)"
    done
    echo "$PROG: binaries from $bin (units copied with /usr/bin/rackboot-* substituted)"
    for u in "${units[@]}"; do
        # The copy keeps the unit's file name: systemd derives the unit name
        # (and checks its type) from it.
        sed "s#/usr/bin/rackboot-#$bin/rackboot-#g" "$u" >"$work/${u##*/}"
        to_verify+=("$work/${u##*/}")
    done
else
    echo "$PROG: binaries installed in /usr/bin; verifying the units as they are"
    to_verify=("${units[@]}")
fi

status=0
for u in "${to_verify[@]}"; do
    name="${u##*/}"
    if ! out="$(systemd-analyze verify "$u" 2>&1)"; then
        echo "$PROG: FAIL $name: systemd-analyze verify exited non-zero:" >&2
        printf '%s\n' "$out" >&2
        status=1
    elif [[ -n "$out" ]]; then
        echo "$PROG: FAIL $name: systemd-analyze verify printed warnings:" >&2
        printf '%s\n' "$out" >&2
        status=1
    else
        echo "$PROG: OK   $name: systemd-analyze verify is silent"
    fi
done

for u in "${to_verify[@]}"; do
    name="${u##*/}"
    level="$(systemd-analyze security --offline=yes "$u" 2>/dev/null | grep -E 'Overall exposure level' || true)"
    if [[ -n "$level" ]]; then
        echo "$PROG: $name: systemd-analyze security exposure ${level##*: }"
    fi
done

[[ $status -eq 0 ]] || die "unit verification failed"
echo "$PROG: all ${#to_verify[@]} units verified"
