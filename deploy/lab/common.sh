# shellcheck shell=bash disable=SC2034
# Shared by deploy/lab/up.sh and deploy/lab/down.sh (sourced, not run).
#
# Settings (environment):
#   RACKBOOT_LAB_DIR      state directory (default /tmp/rackboot-lab): configs,
#                         data, logs, pid files, the node's console
#   RACKBOOT_LAB_PREFIX   prefix of the lab's network namespaces (default
#                         rblab): <prefix>-core, -c1..-c3, -r1, -r2
#   RACKBOOT_BIN          directory of rackboot, rackboot-coordinator and
#                         rackboot-agent (default target/debug; a relative
#                         path is taken from the repository root)

LAB_DIR="${RACKBOOT_LAB_DIR:-/tmp/rackboot-lab}"
LAB_PREFIX="${RACKBOOT_LAB_PREFIX:-rblab}"
# A file in the state directory that says it is one (down.sh removes only
# such a directory).
LAB_STAMP=".rackboot-lab"

# The management network: a bridge in <prefix>-core; the coordinators, the
# agents' uplinks and the admin host (where the CLI runs) are on it.
MGMT_NET="10.1.0"
ADMIN_ADDR="$MGMT_NET.254"
COORDINATOR_COUNT=3
RACKS=(1 2)

lab_log() {
    printf '[lab %6.1fs] %s\n' "$(lab_elapsed)" "$*"
}

lab_die() {
    echo "lab: error: $*" >&2
    exit 1
}

LAB_T0="${LAB_T0:-$(date +%s.%N)}"
lab_elapsed() {
    awk -v t0="$LAB_T0" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1f", now - t0 }'
}

# Every namespace of a lab with prefix $1.
lab_namespaces() {
    local p="$1" i
    echo "$p-core"
    for ((i = 1; i <= COORDINATOR_COUNT; i++)); do echo "$p-c$i"; done
    for i in "${RACKS[@]}"; do echo "$p-r$i"; done
}

ns_exists() {
    [[ -e "/run/netns/$1" ]]
}

coordinator_addr() {
    echo "$MGMT_NET.$1"
}

coordinator_urls() {
    local i urls=()
    for ((i = 1; i <= COORDINATOR_COUNT; i++)); do urls+=("https://$(coordinator_addr "$i"):50051"); done
    local IFS=,
    echo "${urls[*]}"
}
