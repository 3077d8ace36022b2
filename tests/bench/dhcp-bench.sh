#!/usr/bin/env bash
# DHCP benchmark: rackboot-agent (authoritative mode, with its coordinator)
# vs ISC kea-dhcp4 vs dnsmasq, in one invocation, on the same setup: two
# network namespaces joined by a veth pair, the server in one, the load
# generators in the other.
#
#   tests/bench/dhcp-bench.sh [--quick] [--servers "rackboot kea dnsmasq dnsmasq-ping"] \
#       [--rates "500 1000 2000 4000 8000 16000"] [--period SECS] [--macs N] \
#       [--burst N] [--warmup-ripple MS] [--no-pin] [--out FILE]
#
# Per server, in this order (the server is started fresh, empty state):
#  1. burst, cold: `rackboot storm --dhcp-only` with --burst clients (1,000)
#     powered on in the same millisecond (--ripple-ms 0), PXE ROM timers at
#     real speed (DISCOVER at 0, 4, 12, 28 s, fail at 60 s). rackboot has
#     never seen these MACs: its first DISCOVERs go unanswered until the
#     coordinator has accepted each machine (first retransmission, 4 s).
#  2. burst, warm: the same 1,000 MACs again (known nodes / existing leases).
#  3. warm-up: `rackboot storm --dhcp-only` over the perfdhcp MAC list (--macs
#     MACs, the file given to perfdhcp -M), one power-on every --warmup-ripple
#     ms (3: ~333 new machines/s); for rackboot, wait until `rackboot node
#     list` shows every one of them (the coordinator accepts each machine).
#     8,000 MACs keep perfdhcp's reuse of MACs (it draws one at random per
#     exchange) under rackboot's per-MAC limit (10 packets/s, burst 20) up to
#     16,000 exchanges/s; the "rackboot refused" column counts what it refuses.
#  4. perfdhcp (Debian package kea-admin) at each fixed --rates rate for
#     --period seconds (-n rate*period, full DORA, MACs drawn from the list):
#     leases/s, sent/received/drops of DISCOVER-OFFER and REQUEST-ACK. A drop
#     is an exchange perfdhcp got no answer to within 1 s (-d default).
# `dnsmasq-ping` (default dnsmasq: ping check on) runs the cold burst only.
#
# Addressing: 10.126.0.0/16, server 10.126.0.1, client side 10.126.0.2; every
# server hands out 10.126.1.0 - 10.126.255.254 (rackboot: --node-base
# 10.126.1.0, node n gets base + n - 1). The storm broadcasts like a PXE ROM
# (255.255.255.255) and does not set the broadcast flag, so servers answer
# by unicast to the new address (kea: raw socket; dnsmasq: ARP injection to
# chaddr) or by broadcast (rackboot); the client namespace takes all of them
# (vc promiscuous, nftables `meta pkttype set host` for UDP port 68, the pool
# routed locally). perfdhcp acts as a relay (giaddr 10.126.0.2, port 67):
# all three answer it to the relay.
#
# Server settings (documented in docs/BENCHMARKS.md):
#  kea-dhcp4 2.2 (Debian defaults otherwise): raw sockets, memfile lease
#    database persisted to a CSV in the work dir (appends, LFC off),
#    authoritative, logging at WARN (INFO logs every lease), single-threaded
#    (the 2.2 default).
#  dnsmasq: --dhcp-authoritative, --no-ping (dnsmasq otherwise pings every
#    address before its first offer and waits for the echo to time out;
#    `dnsmasq-ping` measures that), --quiet-dhcp (no per-packet log),
#    --dhcp-lease-max 70000, lease file in the work dir (rewritten on each
#    change, as shipped), DNS off (--port=0).
#  rackboot-agent: --iface vs (DHCP on 67), --no-http, --no-syslog; a fresh
#    one-replica rackboot-coordinator beside it in the server namespace.
# With 2+ cores the server (and the coordinator) run on CPU 0, the load
# generators on CPU 1 (--no-pin: no pinning).
#
# Needs root. Installs kea-dhcp4-server, kea-admin (perfdhcp), dnsmasq,
# nftables if missing (without starting their services). Uses the release
# binaries in target/release, building them only if missing.
# Prints markdown tables (and appends them, with the command, to --out).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

invocation="$*"
servers="rackboot kea dnsmasq dnsmasq-ping"
rates="500 1000 2000 4000 8000 16000"
period=5
nmacs=8000
ripple=3
burst=1000
pin=1
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) servers="rackboot kea dnsmasq"; rates="1000 4000"; period=2; nmacs=1000; ripple=1; burst=300; shift ;;
    --servers) servers=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --period) period=$2; shift 2 ;;
    --macs) nmacs=$2; shift 2 ;;
    --burst) burst=$2; shift 2 ;;
    --warmup-ripple) ripple=$2; shift 2 ;;
    --no-pin) pin=0; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
[ "$nmacs" -le 60000 ] && [ "$burst" -le 4000 ] || { echo "--macs <= 60000, --burst <= 4000" >&2; exit 2; }

need=()
for p in kea-dhcp4-server kea-admin dnsmasq nftables iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  # Do not let the packages start their own daemons on the host.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
BIN=$ROOT/target/release
for b in rackboot rackboot-agent rackboot-coordinator; do
  if [ ! -x "$BIN/$b" ]; then
    cargo build --release --locked -p rackboot-cli -p rackboot-agent -p rackboot-coordinator >&2
    break
  fi
done

if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  SPIN=(taskset -c 0); CPIN=(taskset -c 1)
else
  SPIN=(); CPIN=()
fi

tag="rbd$$"
S="${tag}s"; C="${tag}c"
NET=10.126
SRV=$NET.0.1
work=$(mktemp -d)
server_pid=""; coord_pid=""
cleanup() {
  for p in $server_pid $coord_pid; do kill "$p" 2>/dev/null || true; done
  for ns in "$S" "$C"; do
    if ip netns list | grep -qw "$ns"; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$S"; ip netns add "$C"
ip -n "$S" link set lo up; ip -n "$C" link set lo up
ip link add vs netns "$S" type veth peer name vc netns "$C"
ip -n "$S" addr add $SRV/16 dev vs; ip -n "$C" addr add $NET.0.2/16 dev vc
ip -n "$S" link set vs up; ip -n "$C" link set vc up
# The client side takes every reply, whatever the server unicasts it to:
# broadcasts leave through vc, frames to another MAC (dnsmasq: chaddr) are
# taken as ours, and the pool is local. Pings are dropped: a machine that has
# not booted does not answer dnsmasq's ping check (with the pool local, every
# address would answer, and dnsmasq would never offer one).
ip -n "$C" route add default dev vc
ip -n "$C" link set vc promisc on
ip netns exec "$C" nft -f - <<EOF
table netdev rbdhcp {
  chain in {
    type filter hook ingress device "vc" priority 0;
    udp dport 68 meta pkttype set host;
    icmp type echo-request drop;
  }
}
EOF
for p in 1.0/24 2.0/23 4.0/22 8.0/21 16.0/20 32.0/19 64.0/18 128.0/17; do
  ip -n "$C" route add local "$NET.$p" dev lo
done

mac_list() { # BASE(hex, 12 digits) COUNT
  python3 - "$1" "$2" <<'PY'
import sys
base, n = int(sys.argv[1], 16), int(sys.argv[2])
for i in range(n):
    print(":".join(f"{b:02x}" for b in (base + i).to_bytes(6, "big")))
PY
}
MACS_BASE=525400400000; BURST_BASE=525400800000
mac_list $MACS_BASE "$nmacs" > "$work/macs.txt"
fmt_mac() { echo "$1" | sed 's/../&:/g; s/:$//'; }

nstat_get() { # NS COUNTER
  ip netns exec "$1" nstat -az "$2" 2>/dev/null | awk -v k="$2" '$1==k {print $2}' | head -1
}
# Datagrams the kernel dropped at the server's receiving sockets (sk_drops of
# its UDP port-67 sockets, and of kea's packet socket; kea's fallback UDP
# socket is not counted).
server_drops() { # SERVER
  ip netns exec "$S" ss -Hau0m 2>/dev/null | python3 -c '
import re, sys
srv, total, head = sys.argv[1], 0, ""
for line in sys.stdin:
    if not line.startswith(("\t", " ")) and not line.lstrip().startswith("skmem"):
        head = line
    m = re.search(r"skmem:\(.*?d(\d+)\)", line)
    if not m:
        continue
    raw = head.startswith("p_raw")
    dhcp = re.search(r":(67|bootps)\s", head) is not None and head.startswith("udp")
    if (srv == "kea" and raw) or (srv != "kea" and dhcp):
        total += int(m.group(1))
print(total)' "$1"
}

start_server() { # name
  rm -rf "$work/state"; mkdir -p "$work/state"
  case "$1" in
    rackboot)
      ip netns exec "$S" "${SPIN[@]}" "$BIN/rackboot-coordinator" --plaintext --listen 127.0.0.1:50051 \
        --data "$work/state/coord" >"$work/coord.log" 2>&1 &
      coord_pid=$!
      ip netns exec "$S" "${SPIN[@]}" "$BIN/rackboot-agent" --plaintext --rack bench \
        --coordinator http://127.0.0.1:50051 --data "$work/state/agent" --iface vs \
        --node-base $NET.1.0 --no-http --no-syslog >"$work/server.log" 2>&1 &
      server_pid=$!
      local i
      for i in $(seq 1 300); do # up to 60 s: DHCP socket and the first rack view
        if ip netns exec "$S" ss -Hlun 'sport = :67' | grep -q . && grep -q 'rack view updated' "$work/server.log"; then
          return 0
        fi
        sleep 0.2
      done
      echo "agent did not start:" >&2; tail -n 5 "$work/server.log" "$work/coord.log" >&2; exit 1
      ;;
    kea)
      cat > "$work/kea.json" <<EOF
{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "vs" ], "dhcp-socket-type": "raw" },
  "lease-database": { "type": "memfile", "persist": true, "name": "$work/state/kea-leases4.csv", "lfc-interval": 0 },
  "valid-lifetime": 3600,
  "authoritative": true,
  "subnet4": [ { "id": 1, "subnet": "$NET.0.0/16", "pools": [ { "pool": "$NET.1.0 - $NET.255.254" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "output_options": [ { "output": "stdout" } ], "severity": "WARN" } ]
} }
EOF
      KEA_PIDFILE_DIR=$work/state KEA_LOCKFILE_DIR=$work/state \
        ip netns exec "$S" "${SPIN[@]}" kea-dhcp4 -c "$work/kea.json" >"$work/server.log" 2>&1 &
      server_pid=$!
      ;;
    dnsmasq|dnsmasq-ping)
      local ping=(--no-ping)
      [ "$1" = dnsmasq ] || ping=()
      ip netns exec "$S" "${SPIN[@]}" /usr/sbin/dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
        --interface=vs --bind-interfaces --pid-file= --log-facility=- --quiet-dhcp \
        --dhcp-range=$NET.1.0,$NET.255.254,255.255.0.0,1h --dhcp-lease-max=70000 \
        --dhcp-leasefile="$work/state/dnsmasq.leases" --dhcp-authoritative "${ping[@]}" \
        >"$work/server.log" 2>&1 &
      server_pid=$!
      ;;
  esac
  local i
  for i in $(seq 1 50); do # up to 10 s for port 67 (kea: a packet socket, look for the process)
    if [ "$1" = kea ]; then
      grep -q 'DHCP4_MULTI_THREADING_INFO\|DHCP4_STARTED' "$work/server.log" 2>/dev/null && { sleep 0.5; return 0; }
    elif ip netns exec "$S" ss -Hlun 'sport = :67' | grep -q .; then
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "$1 did not start:" >&2; tail -n 5 "$work/server.log" >&2; exit 1
}
stop_server() {
  for p in $server_pid $coord_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  server_pid=""; coord_pid=""
  sleep 0.5
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$server_pid/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)
# rackboot-agent's DHCP counters (SIGUSR1 dump): received replied unknown dropped.
agent_counters() {
  [ -n "$server_pid" ] || { echo "0 0 0 0"; return; }
  local before
  before=$(grep -c 'agent state (SIGUSR1)' "$work/server.log" || true)
  kill -USR1 "$server_pid" 2>/dev/null || true
  local i
  for i in $(seq 1 25); do
    [ "$(grep -c 'agent state (SIGUSR1)' "$work/server.log" || true)" -gt "$before" ] && break
    sleep 0.1
  done
  grep 'agent state (SIGUSR1)' "$work/server.log" | tail -1 | python3 -c '
import re, sys
l = sys.stdin.read()
print(" ".join(re.search(k + r"=(\d+)", l).group(1) if re.search(k + r"=(\d+)", l) else "0"
               for k in ("dhcp_received", "dhcp_replied", "dhcp_unknown", "dhcp_dropped")))'
}

storm() { # CLIENTS MAC_BASE(hex) DEADLINE RIPPLE_MS -> JSON on stdout
  ip netns exec "$C" "${CPIN[@]}" "$BIN/rackboot" storm --server 255.255.255.255 --dhcp-only \
    --clients "$1" --mac-base "$(fmt_mac "$2")" --ripple-ms "$4" --deadline-secs "$3" --json \
    2>>"$work/storm.err" || true
}

node_count() {
  ip netns exec "$S" "$BIN/rackboot" node list --coordinator http://127.0.0.1:50051 --rack bench 2>/dev/null \
    | tail -n +2 | grep -c . || true
}

burst_header="| server | pass | clients | leased | failed | p50 s | p99 s | max s | NAKs | wall s |"
burst_rule="|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
rate_header="| server | rate asked /s | leases/s | DISCOVER sent | OFFER recv | REQUEST sent | ACK recv | drops (DO+RA) | perfdhcp socket drops | server socket drops | rackboot refused | avg OFFER ms | avg ACK ms | server CPU % |"
rate_rule="|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
burst_rows=""; rate_rows=""; warm_rows=""
declare -A best_rate peak_leases

burst_row() { # SERVER PASS JSON
  python3 - "$1" "$2" "$3" "$burst" <<'PY'
import json, sys
srv, pas, raw, n = sys.argv[1:]
try:
    j = json.loads(raw)
except Exception:
    j = {"ok": 0, "failed": int(n), "dhcp_p50_ms": float("nan"), "dhcp_p99_ms": float("nan"),
         "dhcp_max_ms": float("nan"), "naks": 0, "elapsed_s": float("nan")}
print(f"| {srv} | {pas} | {n} | {j['ok']} | {j['failed']} | {j['dhcp_p50_ms']/1000:.3f} | "
      f"{j['dhcp_p99_ms']/1000:.3f} | {j['dhcp_max_ms']/1000:.3f} | {j['naks']} | {j['elapsed_s']:.1f} |")
for f in j.get("failures", [])[:3]:
    print(f"  {srv} {pas}: {f['count']} failed: {f['reason']}", file=sys.stderr)
PY
}

run_burst() { # SERVER PASS
  local json row
  json=$(storm "$burst" $BURST_BASE 75 0)
  row=$(burst_row "$1" "$2" "$json")
  echo "$row" >&2
  burst_rows+="$row"$'\n'
}

for srv in $servers; do
  echo "== $srv" >&2
  start_server "$srv"
  run_burst "$srv" "cold (new MACs)"
  if [ "$srv" = dnsmasq-ping ]; then stop_server; continue; fi
  if [ "$srv" = rackboot ]; then
    for i in $(seq 1 60); do [ "$(node_count)" -ge "$burst" ] && break; sleep 1; done
  fi
  run_burst "$srv" "warm (same MACs)"

  # Warm-up over the perfdhcp MAC list.
  t0=$(date +%s.%N)
  json=$(storm "$nmacs" $MACS_BASE $(( nmacs * ripple / 1000 + 75 )) "$ripple")
  known=""
  if [ "$srv" = rackboot ]; then
    for i in $(seq 1 120); do
      known=$(node_count); [ "$known" -ge $((nmacs + burst)) ] && break; sleep 1
    done
    known=$((known - burst))
  fi
  t1=$(date +%s.%N)
  row=$(python3 - "$srv" "$json" "$nmacs" "$t0" "$t1" "$known" <<'PY'
import json, sys
srv, raw, n, t0, t1, known = sys.argv[1:]
try:
    j = json.loads(raw)
except Exception:
    j = {"ok": 0}
k = known if known else "-"
print(f"| {srv} | {n} | {j['ok']} | {k} | {float(t1) - float(t0):.1f} |")
PY
)
  echo "warm-up: $row" >&2
  warm_rows+="$row"$'\n'

  best=0; peak=0
  for r in $rates; do
    n=$((r * period))
    c_rcv0=$(nstat_get "$C" UdpRcvbufErrors); s_rcv0=$(server_drops "$srv")
    read -r a_rx0 a_tx0 a_unk0 a_drop0 <<<"$( [ "$srv" = rackboot ] && agent_counters || echo "0 0 0 0")"
    cpu0=$(cpu_ticks); w0=$(date +%s.%N)
    ip netns exec "$C" "${CPIN[@]}" timeout $((period + 20)) perfdhcp -4 -l $NET.0.2 -M "$work/macs.txt" \
      -r "$r" -p "$period" -n "$n" -W 1000000 $SRV >"$work/perfdhcp.txt" 2>&1 || true
    cpu1=$(cpu_ticks); w1=$(date +%s.%N)
    read -r a_rx1 a_tx1 a_unk1 a_drop1 <<<"$( [ "$srv" = rackboot ] && agent_counters || echo "0 0 0 0")"
    c_rcv1=$(nstat_get "$C" UdpRcvbufErrors); s_rcv1=$(server_drops "$srv")
    refused="-"
    if [ "$srv" = rackboot ]; then
      # Received but neither answered, reported unknown nor dropped as invalid:
      # refused by the per-MAC rate limiter.
      refused=$(( (a_rx1 - a_rx0) - (a_tx1 - a_tx0) - (a_unk1 - a_unk0) - (a_drop1 - a_drop0) ))
    fi
    res=$(python3 - "$work/perfdhcp.txt" "$srv" "$r" "$((${c_rcv1:-0} - ${c_rcv0:-0}))" \
      "$((${s_rcv1:-0} - ${s_rcv0:-0}))" "$refused" "$cpu0" "$cpu1" "$hz" "$w0" "$w1" "$period" <<'PY'
import re, sys
path, srv, rate, cdrop, sdrop, refused, c0, c1, hz, w0, w1, period = sys.argv[1:]
t = open(path).read()
def sect(name):
    m = re.search(r"Statistics for: " + name + r"\*\*\*(.*?)(\*\*\*|\Z)", t, re.S)
    s = m.group(1) if m else ""
    g = lambda k: (re.search(k + r":\s*([0-9.]+)", s) or [None, "nan"])[1]
    return g("sent packets"), g("received packets"), g("drops"), g("avg delay")
do, ra = sect("DISCOVER-OFFER"), sect("REQUEST-ACK")
# perfdhcp's own "Rate:" divides by the run including the -W wait.
try:
    lps = int(ra[1]) / float(period)
except ValueError:
    lps = float("nan")
try:
    drops = int(do[2]) + int(ra[2])
except ValueError:
    drops = -1
cpu = (int(c1) - int(c0)) / int(hz) / float(period) * 100
print(f"{lps:.0f} {drops}")
print(f"| {srv} | {rate} | {lps:.0f} | {do[0]} | {do[1]} | {ra[0]} | {ra[1]} | {drops} | {cdrop} | {sdrop} | {refused} | {do[3]} | {ra[3]} | {cpu:.0f} |")
PY
)
    read -r lps drops <<<"$(head -1 <<<"$res")"
    row=$(tail -1 <<<"$res")
    echo "$row" >&2
    rate_rows+="$row"$'\n'
    [ "$drops" = 0 ] && [ "$r" -gt "$best" ] && best=$r
    python3 -c "import sys; sys.exit(0 if $lps > $peak else 1)" && peak=$lps
  done
  best_rate[$srv]=$best; peak_leases[$srv]=$peak
  stop_server
done

summary_header="| server | highest rate with 0 drops | most leases/s achieved |"
summary_rule="|---|---:|---:|"
summary_rows=""
for srv in $servers; do
  [ -n "${best_rate[$srv]:-}" ] || continue
  b=${best_rate[$srv]}; [ "$b" = 0 ] && b="none of the rates"
  summary_rows+="| $srv | $b | ${peak_leases[$srv]} |"$'\n'
done

report() {
  echo "Burst: $burst clients powered on in the same millisecond (rackboot storm --dhcp-only, PXE ROM timers)"
  echo
  echo "$burst_header"; echo "$burst_rule"; printf '%s' "$burst_rows"
  [ -n "$rate_rows" ] || return 0
  echo
  echo "Warm-up over the perfdhcp MAC list (storm --dhcp-only, one power-on every $ripple ms; rackboot: nodes in \`rackboot node list\`)"
  echo
  echo "| server | MACs | leased by the storm | nodes known | s |"
  echo "|---|---:|---:|---:|---:|"
  printf '%s' "$warm_rows"
  echo
  echo "perfdhcp, full DORA, $period s per rate, $nmacs MACs (-M), relayed (giaddr)"
  echo
  echo "$rate_header"; echo "$rate_rule"; printf '%s' "$rate_rows"
  echo
  echo "$summary_header"; echo "$summary_rule"; printf '%s' "$summary_rows"
}
report
if [ -n "$out" ]; then
  {
    echo
    echo "### $(date -u +%Y-%m-%d), $(nproc) cores"
    echo
    echo "Command: \`tests/bench/dhcp-bench.sh $invocation\`."
    echo
    report
  } >> "$out"
fi
