#!/usr/bin/env bash
# deploy/lab/up.sh: a whole rackboot installation on this one machine, in
# network namespaces, and a QEMU node that network-boots in it.
#
#   netns <p>-core: bridge mgmt0, 10.1.0.254/24 (the admin host: the CLI)
#     ├── veth ── netns <p>-c1: rackboot-coordinator id 1 on 10.1.0.1:50051
#     ├── veth ── netns <p>-c2: rackboot-coordinator id 2 on 10.1.0.2:50051
#     ├── veth ── netns <p>-c3: rackboot-coordinator id 3 on 10.1.0.3:50051
#     ├── veth ── netns <p>-r1: uplink 10.1.0.11; rackboot-agent rack r1 on
#     │                          bridge br-r1 10.0.1.1/24 ── tap-n1 ── QEMU node
#     └── veth ── netns <p>-r2: uplink 10.1.0.12; rackboot-agent rack r2 on
#                                bridge br-r2 10.0.2.1/24 ── tap-n1 (free)
#
# The three coordinators form one Raft group; each agent lists all three.
# Daemons run from TOML files (--config, checked with --check-config first,
# as the systemd units do) and, when setpriv(1) is there, as user nobody with
# the units' privileges: the coordinators with no capability, the agents
# with CAP_NET_BIND_SERVICE only.
#
# Then: an image (the test kernel and a busybox initramfs, see
# tests/scripts/) is pushed with `rackboot image push` and made the default
# (`rackboot assign --default`), and a QEMU guest (BIOS, iPXE option ROM)
# boots from rack r1. up.sh waits until the guest's console shows the
# initramfs's marker line `RACKBOOT-MARKER: RACKBOOT-LAB-BOOT-OK`; it
# fails, with the console's tail, when the firmware gives up, QEMU exits or
# RACKBOOT_LAB_BOOT_TIMEOUT seconds (default 300) pass. The guest powers off
# after the marker; the coordinators and agents keep running until
# deploy/lab/down.sh.
#
# Needs root, iproute2, qemu-system-x86_64 (Debian: qemu-system-x86,
# ipxe-qemu), busybox-static and cpio. Environment: see deploy/lab/common.sh
# (RACKBOOT_LAB_DIR, RACKBOOT_LAB_PREFIX, RACKBOOT_BIN), and
#   RACKBOOT_ARTIFACTS        test artifacts cache (default
#                             <repo>/target/rackboot-test-artifacts); the
#                             kernel is fetched there when missing
#   RACKBOOT_LAB_BOOT_TIMEOUT seconds to wait for the marker (default 300)
#   RACKBOOT_LAB_USER         user the daemons run as (default nobody; "root"
#                             runs them unrestricted)
#   RACKBOOT_LAB_WRAP         a command prefix for the daemons, for debugging
#                             (e.g. "strace -f -o /tmp/trace"); empty by default
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
LAB_T0="$(date +%s.%N)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

MARKER="RACKBOOT-LAB-BOOT-OK"
IMAGE="lab:1"
NODE_MAC="52:54:00:1a:b0:01"
BOOT_TIMEOUT="${RACKBOOT_LAB_BOOT_TIMEOUT:-300}"
ARTIFACTS="${RACKBOOT_ARTIFACTS:-$repo/target/rackboot-test-artifacts}"
LAB_USER="${RACKBOOT_LAB_USER:-nobody}"

bin_default=0
if [[ -z "${RACKBOOT_BIN:-}" ]]; then
    bin_default=1
fi
BIN="${RACKBOOT_BIN:-target/debug}"
[[ "$BIN" == /* ]] || BIN="$repo/$BIN"

on_exit() {
    local status=$?
    ((status == 0)) && return 0
    echo >&2
    echo "lab: FAILED after $(lab_elapsed) s (exit $status)." >&2
    if [[ "$created" -eq 1 ]]; then
        echo "lab: what was started is left as it is for inspection (logs: $LAB_DIR/*/*.log);" >&2
        echo "lab: remove everything with: $here/down.sh" >&2
    fi
}
created=0
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- preconditions ----------------------------------------------------------

[[ "$(id -u)" -eq 0 ]] || lab_die "needs root (network namespaces, bridges, tap devices)"
for tool in ip qemu-system-x86_64 cpio gzip awk setsid; do
    command -v "$tool" >/dev/null 2>&1 || lab_die "'$tool' not found (Debian: tests/scripts/install-deps.sh installs what the lab needs)"
done
[[ "$BOOT_TIMEOUT" =~ ^[0-9]+$ ]] || lab_die "RACKBOOT_LAB_BOOT_TIMEOUT must be a number of seconds"

if [[ -e "$LAB_DIR/$LAB_STAMP" ]]; then
    lab_die "a lab is already up in $LAB_DIR; remove it first with $here/down.sh"
fi
if [[ -e "$LAB_DIR" ]] && [[ -n "$(ls -A "$LAB_DIR" 2>/dev/null)" ]]; then
    lab_die "$LAB_DIR exists and is not empty (and not a lab); set RACKBOOT_LAB_DIR to another directory"
fi
while read -r ns; do
    if ns_exists "$ns"; then
        lab_die "network namespace $ns exists already (another lab with prefix $LAB_PREFIX?); remove it with $here/down.sh or set RACKBOOT_LAB_PREFIX"
    fi
done < <(lab_namespaces "$LAB_PREFIX")

missing=()
for name in rackboot rackboot-coordinator rackboot-agent; do
    [[ -x "$BIN/$name" ]] || missing+=("$name")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $bin_default -eq 1 ]]; then
        lab_log "building the binaries (${missing[*]} missing in $BIN): cargo build --workspace --bins"
        (cd "$repo" && cargo build --workspace --bins)
    else
        lab_die "RACKBOOT_BIN=$BIN lacks ${missing[*]}"
    fi
fi

# The daemons' user and privileges (as in deploy/systemd/).
RUN_COORD=()
RUN_AGENT=()
if [[ "$LAB_USER" != root ]]; then
    command -v setpriv >/dev/null 2>&1 || lab_die "setpriv (util-linux) not found; install it or set RACKBOOT_LAB_USER=root"
    uid="$(id -u "$LAB_USER" 2>/dev/null)" || lab_die "no user $LAB_USER (set RACKBOOT_LAB_USER)"
    gid="$(id -g "$LAB_USER")"
    common=(setpriv "--reuid=$uid" "--regid=$gid" --clear-groups --no-new-privs)
    RUN_COORD=("${common[@]}" --inh-caps=-all --ambient-caps=-all --bounding-set=-all --)
    RUN_AGENT=("${common[@]}" "--inh-caps=-all,+net_bind_service" "--ambient-caps=-all,+net_bind_service"
        "--bounding-set=-all,+net_bind_service" --)
fi

WRAP=()
if [[ -n "${RACKBOOT_LAB_WRAP:-}" ]]; then
    read -r -a WRAP <<<"$RACKBOOT_LAB_WRAP"
fi
RUN_COORD+=(${WRAP[@]+"${WRAP[@]}"})
RUN_AGENT+=(${WRAP[@]+"${WRAP[@]}"})

# ---- state directory ----------------------------------------------------------

mkdir -p "$LAB_DIR"
chmod 0755 "$LAB_DIR"
LAB_DIR="$(cd "$LAB_DIR" && pwd)"
printf 'prefix=%s\nbin=%s\n' "$LAB_PREFIX" "$BIN" >"$LAB_DIR/$LAB_STAMP"
created=1
mkdir -p "$LAB_DIR/pids" "$LAB_DIR/image"

# ---- boot artifacts -----------------------------------------------------------

kernel="$ARTIFACTS/kernel/vmlinuz"
if [[ ! -s "$kernel" ]]; then
    lab_log "fetching the test kernel into $ARTIFACTS/kernel (tests/scripts/fetch-kernel.sh)"
    "$repo/tests/scripts/fetch-kernel.sh" "$ARTIFACTS/kernel"
fi
[[ -f "$ARTIFACTS/kernel/modules/load-order" ]] || lab_die "$ARTIFACTS/kernel/modules/load-order missing: delete $ARTIFACTS/kernel and run again"
initrd="$LAB_DIR/image/initramfs.cpio.gz"
lab_log "building the node's initramfs (tests/scripts/build-initramfs.sh, marker $MARKER)"
RACKBOOT_INITRAMFS_MODULES="$ARTIFACTS/kernel/modules" \
    "$repo/tests/scripts/build-initramfs.sh" "$initrd" "$MARKER" 2>>"$LAB_DIR/image/build.log"

# ---- network ------------------------------------------------------------------

nsip() {
    local ns="$1"
    shift
    ip -n "$ns" "$@"
}

core="$LAB_PREFIX-core"
lab_log "network: namespaces $(lab_namespaces "$LAB_PREFIX" | tr '\n' ' ')"
for ns in $(lab_namespaces "$LAB_PREFIX"); do
    ip netns add "$ns"
    nsip "$ns" link set lo up
done
nsip "$core" link add mgmt0 type bridge forward_delay 0 stp_state 0
nsip "$core" addr add "$ADMIN_ADDR/24" dev mgmt0
nsip "$core" link set mgmt0 up

# uplink NS IFNAME PEER CIDR: a veth IFNAME in NS (address CIDR) whose peer
# PEER is a port of the core bridge.
uplink() {
    local ns="$1" ifname="$2" peer="$3" cidr="$4"
    nsip "$core" link add "$peer" type veth peer name "$ifname" netns "$ns"
    nsip "$core" link set "$peer" master mgmt0 up
    nsip "$ns" addr add "$cidr" dev "$ifname"
    nsip "$ns" link set "$ifname" up
}

for ((i = 1; i <= COORDINATOR_COUNT; i++)); do
    uplink "$LAB_PREFIX-c$i" eth0 "c$i" "$(coordinator_addr "$i")/24"
done
for r in "${RACKS[@]}"; do
    ns="$LAB_PREFIX-r$r"
    uplink "$ns" mgmt0 "r$r" "$MGMT_NET.1$r/24"
    nsip "$ns" link add "br-r$r" type bridge forward_delay 0 stp_state 0
    nsip "$ns" addr add "10.0.$r.1/24" dev "br-r$r"
    nsip "$ns" link set "br-r$r" up
    nsip "$ns" tuntap add dev tap-n1 mode tap
    nsip "$ns" link set tap-n1 master "br-r$r" up
done

# ---- processes ------------------------------------------------------------------

# start NAME NS LOG CMD...: runs CMD in NS in its own session (a ^C at the
# terminal does not reach it), output appended to LOG; records "PID NAME
# LOG" in pids/NAME.pid for down.sh and the checks below.
start() {
    local name="$1" ns="$2" log="$3"
    shift 3
    local pidfile="$LAB_DIR/pids/$name.pid"
    # The child writes its own pid, then execs: ip netns exec and setpriv
    # exec in turn, so it is the daemon's pid.
    # shellcheck disable=SC2016
    setsid bash -c 'echo "$$" >"$1.tmp"; shift; exec "$@"' _ "$pidfile" \
        ip netns exec "$ns" "$@" >>"$log" 2>&1 </dev/null &
    local n=0
    while [[ ! -s "$pidfile.tmp" ]]; do
        ((++n < 100)) || lab_die "$name did not start"
        sleep 0.05
    done
    echo "$(cat "$pidfile.tmp") $name $log" >"$pidfile"
    rm -f "$pidfile.tmp"
}

pid_of() {
    local pid _
    read -r pid _ <"$LAB_DIR/pids/$1.pid"
    echo "$pid"
}

# Fails, quoting its log, when a started coordinator or agent has exited.
daemons_alive() {
    local f pid name log
    for f in "$LAB_DIR"/pids/coordinator-*.pid "$LAB_DIR"/pids/agent-*.pid; do
        [[ -f "$f" ]] || continue
        read -r pid name log <"$f"
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "lab: $name (pid $pid) exited; the end of $log:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
    done
}

owner="root"
if [[ "$LAB_USER" != root ]]; then
    owner="$uid:$gid"
fi

# ---- certificates (mutual TLS between every component, as on a site) ----------

PKI="$LAB_DIR/pki"
lab_log "certificates: cluster CA and coordinator, agent and admin certificates in $PKI"
"$BIN/rackboot" certs init --dir "$PKI" --cluster "$LAB_PREFIX" >/dev/null
for ((i = 1; i <= COORDINATOR_COUNT; i++)); do
    "$BIN/rackboot" certs issue coordinator --dir "$PKI" --name "c$i" --ip "$(coordinator_addr "$i")" >/dev/null
done
for r in "${RACKS[@]}"; do
    "$BIN/rackboot" certs issue agent --dir "$PKI" --rack "r$r" >/dev/null
done
"$BIN/rackboot" certs issue admin --dir "$PKI" --name lab-admin >/dev/null
# The daemons run as $LAB_USER: their keys are theirs (0600); the CA key stays root's.
for f in "$PKI"/c*.key "$PKI"/agent-*.key; do chown "$owner" "$f"; done

URLS="$(coordinator_urls)"
ADMIN_TLS=(--tls-ca "$PKI/ca.pem" --tls-cert "$PKI/lab-admin.pem" --tls-key "$PKI/lab-admin.key")
cli() {
    ip netns exec "$core" "$BIN/rackboot" --coordinator "$URLS" "${ADMIN_TLS[@]}" "$@"
}

# A helper for the user: the CLI on the admin host, with the admin certificate.
cat >"$LAB_DIR/rackboot" <<EOF
#!/bin/sh
# The rackboot CLI on the lab's admin host ($core, $ADMIN_ADDR), with every
# coordinator replica, over mutual TLS with the lab's admin certificate.
exec ip netns exec $core $BIN/rackboot --coordinator $URLS ${ADMIN_TLS[*]} "\$@"
EOF
chmod 0755 "$LAB_DIR/rackboot"

lab_log "coordinators: $COORDINATOR_COUNT replicas of one Raft group"
for ((i = 1; i <= COORDINATOR_COUNT; i++)); do
    dir="$LAB_DIR/c$i"
    mkdir -p "$dir/data"
    chown "$owner" "$dir/data"
    {
        echo "# coordinator replica $i of the rackboot lab"
        echo "id = $i"
        echo "listen = \"$(coordinator_addr "$i"):50051\""
        echo "data_dir = \"$dir/data\""
        echo "tls_ca = \"$PKI/ca.pem\""
        echo "tls_cert = \"$PKI/c$i.pem\""
        echo "tls_key = \"$PKI/c$i.key\""
        echo "[peers]"
        for ((j = 1; j <= COORDINATOR_COUNT; j++)); do
            echo "$j = \"$(coordinator_addr "$j"):50051\""
        done
    } >"$dir/coordinator.toml"
    ip netns exec "$LAB_PREFIX-c$i" "${RUN_COORD[@]}" "$BIN/rackboot-coordinator" \
        --config "$dir/coordinator.toml" --check-config >/dev/null
    start "coordinator-$i" "$LAB_PREFIX-c$i" "$dir/coordinator.log" \
        "${RUN_COORD[@]}" "$BIN/rackboot-coordinator" --config "$dir/coordinator.toml"
done

# wait_until WHAT TIMEOUT CMD...: runs CMD every 0.2 s until it succeeds;
# fails at once when a daemon has exited.
wait_until() {
    local what="$1" timeout="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        daemons_alive || lab_die "$what: a daemon exited (log above)"
        if ((SECONDS >= deadline)); then
            echo "lab: $what: not within $timeout s; last attempt:" >&2
            "$@" >&2 || true
            lab_die "$what: timed out"
        fi
        sleep 0.2
    done
}

has_leader() {
    local out line
    out="$(cli cluster status 2>&1)" || return 1
    # "replica 1 (asked), leader 2, term 3, ..."
    line="${out%%$'\n'*}"
    [[ "$line" =~ leader\ ([1-9][0-9]*), ]]
}
wait_until "a Raft leader among the coordinators" 60 has_leader
status_out="$(cli cluster status)"
lab_log "coordinators: ${status_out%%$'\n'*}"

lab_log "agents: racks ${RACKS[*]}"
for r in "${RACKS[@]}"; do
    dir="$LAB_DIR/r$r"
    mkdir -p "$dir/data"
    chown "$owner" "$dir/data"
    {
        echo "# rack agent of rack r$r in the rackboot lab"
        echo "rack = \"r$r\""
        printf 'coordinators = ["%s"]\n' "${URLS//,/\", \"}"
        echo "data_dir = \"$dir/data\""
        echo "iface = \"br-r$r\""
        echo "tls_ca = \"$PKI/ca.pem\""
        echo "tls_cert = \"$PKI/agent-r$r.pem\""
        echo "tls_key = \"$PKI/agent-r$r.key\""
        echo "metrics_listen = \"127.0.0.1:9101\""
        echo "[network]"
        echo "node_base = \"10.0.$r.100\""
    } >"$dir/agent.toml"
    ip netns exec "$LAB_PREFIX-r$r" "${RUN_AGENT[@]}" "$BIN/rackboot-agent" \
        --config "$dir/agent.toml" --check-config >/dev/null
    start "agent-r$r" "$LAB_PREFIX-r$r" "$dir/agent.log" \
        "${RUN_AGENT[@]}" "$BIN/rackboot-agent" --config "$dir/agent.toml"
done

racks_registered() {
    local r list
    list="$(cli rack list)" || return 1
    for r in "${RACKS[@]}"; do
        awk 'NR > 1 { print $1 }' <<<"$list" | grep -qx "r$r" || return 1
    done
}
wait_until "racks ${RACKS[*]} registered by their agents" 60 racks_registered
# Every daemon says which transport it runs: all of them mutual TLS.
tls_ok=0
for ((i = 1; i <= COORDINATOR_COUNT; i++)); do
    if grep -q "gRPC over mutual TLS" "$LAB_DIR/c$i/coordinator.log"; then ((++tls_ok)); fi
done
for r in "${RACKS[@]}"; do
    if grep -q "coordinator connections over mutual TLS" "$LAB_DIR/r$r/agent.log"; then ((++tls_ok)); fi
done
((tls_ok == COORDINATOR_COUNT + ${#RACKS[@]})) || lab_die "not every daemon runs mutual TLS (see the logs in $LAB_DIR)"
lab_log "mutual TLS: $tls_ok of $tls_ok daemons (CA and certificates in $PKI)"
lab_log "agents: racks registered"

# ---- image ----------------------------------------------------------------------

lab_log "image: rackboot image push $IMAGE (kernel $(cat "$ARTIFACTS/kernel/kernel-version" 2>/dev/null || echo '?'), initramfs)"
cli image push "$IMAGE" --kernel "$kernel" --initrd "$initrd" \
    --cmdline "console=ttyS0 panic=-1 rackboot.dhcp=1 rackboot.bootinfo=1" >"$LAB_DIR/image/push.log" 2>&1 \
    || { cat "$LAB_DIR/image/push.log" >&2; lab_die "image push failed"; }
cli assign --default "$IMAGE" >/dev/null
lab_log "image: $IMAGE is the default (manifest $(tail -n 1 "$LAB_DIR/image/push.log" | cut -c1-16)…)"

# ---- the node -------------------------------------------------------------------

console="$LAB_DIR/r1/node1.console"
: >"$console"
lab_log "node: QEMU (BIOS, iPXE ROM, e1000 $NODE_MAC) network-boots in rack r1; console $console"
start node-r1-1 "$LAB_PREFIX-r1" "$LAB_DIR/r1/qemu.log" \
    "$(command -v qemu-system-x86_64)" -accel tcg -machine pc -m 512 -nographic -nodefaults \
    -serial "file:$console" -name rblab-r1-node1 -no-reboot \
    -netdev tap,id=n0,ifname=tap-n1,script=no,downscript=no \
    -device "e1000,netdev=n0,mac=$NODE_MAC" -boot n

# The console's last lines, escape sequences and carriage returns removed.
console_tail() {
    sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b.//g' -e 's/\r//g' "$console" | grep -v '^[[:space:]]*$' | tail -n 40
}

milestones=(
    "iPXE initialising devices|the NIC's iPXE ROM runs"
    "net0: 10\\.0\\.1\\.[0-9]+/|iPXE took its lease from the agent"
    "\\[script\\]|iPXE fetched its boot script over HTTP"
    "Run /init|the kernel it was served runs the initramfs"
    "RACKBOOT-DHCP: bound|the initramfs took its lease"
    "RACKBOOT-BOOTINFO: NODE|the node read its boot-info"
    "RACKBOOT-LOG-SENT|the node sent its syslog line to the agent"
)
seen=()
deadline=$((SECONDS + BOOT_TIMEOUT))
while :; do
    for idx in "${!milestones[@]}"; do
        [[ -n "${seen[$idx]:-}" ]] && continue
        pattern="${milestones[$idx]%%|*}"
        if grep -qE "$pattern" "$console" 2>/dev/null; then
            seen[idx]=1
            lab_log "node: ${milestones[$idx]#*|}"
        fi
    done
    if grep -q "RACKBOOT-MARKER: $MARKER" "$console"; then
        break
    fi
    if grep -qE 'No more network devices|No bootable device' "$console"; then
        console_tail >&2
        lab_die "the node's firmware gave up without booting (console above, full: $console; agent log: $LAB_DIR/r1/agent.log)"
    fi
    daemons_alive || lab_die "a daemon exited during the boot (log above)"
    if ! kill -0 "$(pid_of node-r1-1)" 2>/dev/null; then
        console_tail >&2
        cat "$LAB_DIR/r1/qemu.log" >&2
        lab_die "QEMU exited before the marker line (console above, full: $console)"
    fi
    if ((SECONDS >= deadline)); then
        console_tail >&2
        lab_die "no 'RACKBOOT-MARKER: $MARKER' on the node's console within $BOOT_TIMEOUT s (console above, full: $console; agent log: $LAB_DIR/r1/agent.log)"
    fi
    sleep 0.5
done
boot_secs="$(lab_elapsed)"
lab_log "node: BOOTED: $(grep -a "RACKBOOT-MARKER:" "$console" | tr -d '\r' | head -n 1)"

# The node's syslog line travels agent -> coordinator; give it a moment.
logs=""
for _ in $(seq 1 25); do
    logs="$(cli logs 1 --boot last 2>/dev/null || true)"
    grep -q "RACKBOOT-LOG" <<<"$logs" && break
    sleep 0.2
done

cat <<EOF

==================================================================== rackboot lab is up
Booted node 1 in rack r1 in ${boot_secs} s from the start of up.sh (it powered off after the marker).

$(cli node list)

Node 1's log at the coordinator (rackboot logs 1 --boot last):
${logs:-  (not arrived yet)}

Started (user: $LAB_USER; pids in $LAB_DIR/pids/):
$(for f in "$LAB_DIR"/pids/*.pid; do read -r pid name _ <"$f"; printf '  %-15s pid %s\n' "$name" "$pid"; done)

  coordinators  $URLS (mutual TLS; CA, certificates and keys in $PKI)
                (netns $LAB_PREFIX-c1..c$COORDINATOR_COUNT; configs and logs $LAB_DIR/c*/)
  agent r1      10.0.1.1 on br-r1 (netns $LAB_PREFIX-r1): DHCP 67, TFTP 69, HTTP 80, syslog 514
  agent r2      10.0.2.1 on br-r2 (netns $LAB_PREFIX-r2)
  admin host    $ADMIN_ADDR on mgmt0 (netns $core)

Reach it:
  $LAB_DIR/rackboot cluster status          # the CLI on the admin host, all replicas
  $LAB_DIR/rackboot node show 1 --timeline
  ip netns exec $LAB_PREFIX-r1 curl -s http://127.0.0.1:9101/boot-info?mac=$NODE_MAC   # operator listener
  kill -USR1 \$(cut -d' ' -f1 $LAB_DIR/pids/agent-r1.pid)   # agent state in $LAB_DIR/r1/agent.log
Boot another node (rack r2 has a free tap-n1):
  ip netns exec $LAB_PREFIX-r2 qemu-system-x86_64 -accel tcg -machine pc -m 512 -nographic -nodefaults \\
      -serial stdio -no-reboot -netdev tap,id=n0,ifname=tap-n1,script=no,downscript=no \\
      -device e1000,netdev=n0,mac=52:54:00:1a:b0:21 -boot n
Remove everything:
  $here/down.sh
EOF
