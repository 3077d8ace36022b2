#!/usr/bin/env bash
# deploy/lab/down.sh: removes the lab made by deploy/lab/up.sh: stops every
# process it started (SIGTERM, SIGKILL after 10 s), deletes its taps,
# bridges, veths and network namespaces, and its state directory. Safe to
# run twice, and after a failed or interrupted up.sh.
#
# Same environment as up.sh (RACKBOOT_LAB_DIR, RACKBOOT_LAB_PREFIX); the
# prefix recorded in the state directory wins. Only processes whose pid
# files it wrote, or that run inside the lab's own namespaces, are signalled.
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

[[ "$(id -u)" -eq 0 ]] || lab_die "needs root (network namespaces)"

if [[ -f "$LAB_DIR/$LAB_STAMP" ]]; then
    recorded="$(sed -n 's/^prefix=//p' "$LAB_DIR/$LAB_STAMP")"
    if [[ -n "$recorded" ]]; then
        LAB_PREFIX="$recorded"
    fi
fi
mapfile -t namespaces < <(lab_namespaces "$LAB_PREFIX")

# Pids to stop: those recorded by up.sh (if the process is still in one of
# the lab's namespaces: a recycled pid is someone else's), and everything
# else in the lab's namespaces.
pids=()
if [[ -d "$LAB_DIR/pids" ]]; then
    for f in "$LAB_DIR"/pids/*.pid; do
        [[ -f "$f" ]] || continue
        read -r pid name _ <"$f" || continue
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        [[ -d "/proc/$pid" ]] || continue
        ours=0
        for ns in "${namespaces[@]}"; do
            if ns_exists "$ns" && ip netns identify "$pid" 2>/dev/null | grep -qx "$ns"; then
                ours=1
            fi
        done
        if [[ $ours -eq 1 ]]; then
            pids+=("$pid")
            echo "lab: stopping $name (pid $pid)"
        fi
    done
fi
for ns in "${namespaces[@]}"; do
    if ns_exists "$ns"; then
        while read -r pid; do
            [[ -n "$pid" ]] && pids+=("$pid")
        done < <(ip netns pids "$ns" 2>/dev/null || true)
    fi
done

if [[ ${#pids[@]} -gt 0 ]]; then
    mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -un)
    kill -TERM "${pids[@]}" 2>/dev/null || true
    # The agents drain for up to 10 s.
    for _ in $(seq 1 100); do
        left=()
        for pid in "${pids[@]}"; do
            if [[ -d "/proc/$pid" ]]; then
                left+=("$pid")
            fi
        done
        [[ ${#left[@]} -eq 0 ]] && break
        sleep 0.1
    done
    if [[ ${#left[@]} -gt 0 ]]; then
        echo "lab: SIGKILL to ${left[*]} (still running 10 s after SIGTERM)"
        kill -KILL "${left[@]}" 2>/dev/null || true
    fi
fi

# Processes that entered a namespace later (ip netns exec by hand).
for ns in "${namespaces[@]}"; do
    if ns_exists "$ns"; then
        for _ in $(seq 1 50); do
            mapfile -t stray < <(ip netns pids "$ns" 2>/dev/null || true)
            [[ ${#stray[@]} -eq 0 ]] && break
            kill -KILL "${stray[@]}" 2>/dev/null || true
            sleep 0.1
        done
    fi
done

# Taps and bridges first (deleting a namespace would take them along, but a
# tap still held by a process would survive it), then veths with their
# namespaces.
for ns in "${namespaces[@]}"; do
    ns_exists "$ns" || continue
    while read -r ifname; do
        [[ -n "$ifname" ]] || continue
        ip -n "$ns" link del "$ifname" 2>/dev/null || true
    done < <(ip -n "$ns" -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -Ev '^lo$')
    ip netns del "$ns"
    echo "lab: removed namespace $ns"
done

if [[ -d "$LAB_DIR" ]]; then
    if [[ -f "$LAB_DIR/$LAB_STAMP" || -z "$(ls -A "$LAB_DIR")" ]]; then
        rm -rf -- "$LAB_DIR"
        echo "lab: removed $LAB_DIR"
    else
        echo "lab: left $LAB_DIR alone: it is not a lab state directory (no $LAB_STAMP)" >&2
    fi
fi

left_ns=()
for ns in "${namespaces[@]}"; do
    if ns_exists "$ns"; then
        left_ns+=("$ns")
    fi
done
[[ ${#left_ns[@]} -eq 0 ]] || lab_die "namespaces still there: ${left_ns[*]}"
echo "lab: down (no lab namespace, process or state directory left)"
