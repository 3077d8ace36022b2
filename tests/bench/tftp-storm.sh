#!/usr/bin/env bash
# TFTP boot-storm benchmark: the same `rackboot storm --tftp-only` against
# rackboot-agent, tftpd-hpa and dnsmasq, in one invocation, inside two network
# namespaces joined by a veth pair with a `tc tbf` rate limit on the server
# side and random loss injected with nftables on the client side (this kernel
# has no netem).
#
#   tests/bench/tftp-storm.sh [--quick] [--servers "rackboot tftpd-hpa dnsmasq"] \
#       [--cases "CLIENTS:FIRST_MIB:SECOND_MIB:LOSS% ..."] [--loss-each-way] \
#       [--runs N] [--out FILE]
#
# --loss-each-way drops LOSS% of the client's packets to the server too;
# --runs N measures every case N times (a row per run, servers
# interleaved). PXE ROMs that send their size probe and the real request
# from one port: STORM_ARGS=--same-port.
#
# Environment: STORM_THREADS (emulator threads, default one per core),
# STORM_NICE (its nice level, default 10), STORM_ARGS (more `rackboot storm`
# flags), AGENT_ARGS (more `rackboot-agent` flags), BENCH_DEBUG=1 (print each storm's JSON and the agent's TFTP
# counters), BENCH_BIN_DIR (take `rackboot` and `rackboot-agent` from there
# instead of building them: e.g. an older agent beside a newer storm).
#
# Needs root. Installs tftpd-hpa and dnsmasq (Debian) if missing. Builds the
# release binaries. Prints a markdown table (and appends it to --out).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

# The command line as given, for the --out record (the loop below shifts it away).
invocation="$*"
servers="rackboot tftpd-hpa dnsmasq"
cases="200:1:0:0 1000:1:0:0 2000:1:0:0 2000:1:0:2 1000:1:16:0 200:1:16:2"
out=""
rate="1gbit"
deadline=300
each_way=""
runs=1
# The emulated clients stand in for other machines: they run at a lower CPU
# priority (nice 10), so that on one machine they do not preempt the server
# under test, which on a rack has its management node to itself, and on one
# event loop per core (storm --threads; a single loop was measured at 100% of
# a core, the storm's bottleneck). The same for every server compared.
storm_nice=${STORM_NICE:-10}
storm_threads=${STORM_THREADS:-$(nproc)}
read -r -a storm_extra <<<"${STORM_ARGS:-}"
read -r -a agent_extra <<<"${AGENT_ARGS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) cases="200:1:0:0 200:1:0:2 200:1:16:0"; shift ;;
    --servers) servers=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --loss-each-way) each_way=1; shift ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

need=()
for p in tftpd-hpa dnsmasq nftables iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  # Do not let the packages start their own daemons on the host.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
if [ -n "${BENCH_BIN_DIR:-}" ]; then
  BIN=$BENCH_BIN_DIR
else
  cargo build --release --locked --bin rackboot --bin rackboot-agent >&2
  BIN=$ROOT/target/release
fi

tag="rbb$$"
S="${tag}s"; C="${tag}c"
work=$(mktemp -d)
cleanup() {
  for ns in "$S" "$C"; do
    if ip netns list | grep -qw "$ns"; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$S"; ip netns add "$C"
ip -n "$S" link set lo up; ip -n "$C" link set lo up
ip link add vs netns "$S" type veth peer name vc netns "$C"
ip -n "$S" addr add 10.123.0.1/16 dev vs; ip -n "$C" addr add 10.123.0.2/16 dev vc
ip -n "$S" link set vs up; ip -n "$C" link set vc up
ip netns exec "$S" tc qdisc add dev vs root tbf rate "$rate" burst 512kb latency 50ms
ip netns exec "$C" tc qdisc add dev vc root tbf rate "$rate" burst 512kb latency 50ms
# The emulated clients come from 254 addresses, as a rack of machines would
# (storm --source-range), not all from one.
SOURCES=10.123.8.0/24
for i in $(seq 1 254); do echo "addr add 10.123.8.$i/16 dev vc"; done | ip -n "$C" -batch -
# Ephemeral port range for thousands of transfers (two client sockets each).
ip netns exec "$C" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
ip netns exec "$S" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"

files="$work/files"; mkdir -p "$files"
declare -A made
make_file() { # MiB
  local f="$files/f$1"
  [ -n "${made[$1]:-}" ] || { head -c "$(( $1 * 1048576 ))" /dev/urandom > "$f"; made[$1]=1; }
}

set_loss() { # percent, on packets the client receives from the server (and sends to it, --loss-each-way)
  ip netns exec "$C" nft delete table inet rbloss 2>/dev/null || true
  if [ "$1" != 0 ]; then
    ip netns exec "$C" nft add table inet rbloss
    ip netns exec "$C" nft add chain inet rbloss in '{ type filter hook input priority 0; }'
    ip netns exec "$C" nft add rule inet rbloss in ip saddr 10.123.0.1 udp sport != 67 numgen random mod 100 '<' "$1" drop
    if [ -n "$each_way" ]; then
      ip netns exec "$C" nft add chain inet rbloss out '{ type filter hook output priority 0; }'
      ip netns exec "$C" nft add rule inet rbloss out ip daddr 10.123.0.1 udp dport != 67 numgen random mod 100 '<' "$1" drop
    fi
  fi
}

server_pid=""
start_server() { # name
  case "$1" in
    rackboot)
      # The agent is told its link as an operator would: the tbf's rate, and
      # what tbf counts per datagram besides the UDP payload (the frame from
      # its MAC header: 14 + 20 + 8 bytes; no FCS, preamble or gap).
      ip netns exec "$S" "$BIN/rackboot-agent" --plaintext --rack bench --coordinator http://127.0.0.1:9 \
        --data "$work/agent" --iface vs --dhcp-port 1067 --static-root "$files" \
        --tftp-link-mbit "$rate_mbit" --tftp-link-overhead 42 \
        ${agent_extra[@]+"${agent_extra[@]}"} >"$work/server.log" 2>&1 &
      ;;
    tftpd-hpa)
      ip netns exec "$S" /usr/sbin/in.tftpd -L -s "$files" --address 10.123.0.1:69 >"$work/server.log" 2>&1 &
      ;;
    dnsmasq)
      ip netns exec "$S" /usr/sbin/dnsmasq --no-daemon --port=0 --enable-tftp --tftp-root="$files" \
        --listen-address=10.123.0.1 --bind-interfaces --pid-file= --conf-file=/dev/null >"$work/server.log" 2>&1 &
      ;;
  esac
  server_pid=$!
  sleep 1.5
  # The process that serves (ip netns exec execs, so the pid is the server).
}
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  sleep 0.5
}
# Sum of the server's processes' RSS (tftpd-hpa forks one per transfer).
peak_rss_kb() { grep -m1 VmHWM "/proc/$server_pid/status" 2>/dev/null | awk '{print $2}'; }
rss_kb() { grep -m1 VmRSS "/proc/$server_pid/status" 2>/dev/null | awk '{print $2}'; }
cpu_ticks() { awk '{print $14+$15+$16+$17}' "/proc/$server_pid/stat" 2>/dev/null || echo 0; }

header="| server | clients | files | loss | booted | failed | time s | floor s | goodput MB/s | p99 tftp s | peak RSS MiB | RSS KiB per transfer | CPU s | storm CPU s |"
rule="|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
echo "$header"; echo "$rule"
rows=""
for c in $cases; do
  IFS=: read -r n first second loss <<<"$c"
  make_file "$first"; [ "$second" = 0 ] || make_file "$second"
  second_arg=(); label="${first} MiB"
  if [ "$second" != 0 ]; then second_arg=(--second-file "f$second"); label="${first}+${second} MiB"; fi
  rate_num=${rate%bit}
  rate_bps=$(numfmt --from=si "${rate_num^^}")
  rate_mbit=$(( rate_bps / 1000000 ))
  floor=$(python3 -c "print(round($n*($first+$second)*1048576/($rate_bps/8*0.97),1))")
  for run in $(seq "$runs"); do
  for srv in $servers; do
    set_loss "$loss"
    start_server "$srv"
    t0=$(cpu_ticks)
    rss0=$(rss_kb); rss0=${rss0:-0}
    json=$(ip netns exec "$C" nice -n "$storm_nice" /usr/bin/time -f "%U %S" -o "$work/storm.time" "$BIN/rackboot" storm \
      --server 10.123.0.1 --tftp-only --file "f$first" --source-range "$SOURCES" \
      "${second_arg[@]}" --clients "$n" --deadline-secs "$deadline" --threads "$storm_threads" \
      ${storm_extra[@]+"${storm_extra[@]}"} --json 2>"$work/storm.err" || true)
    t1=$(cpu_ticks)
    if [ -n "${BENCH_DEBUG:-}" ]; then
      echo "storm: $json" >&2
      if [ "$srv" = rackboot ]; then
        ip netns exec "$C" curl -s --max-time 5 http://10.123.0.1/metrics \
          | grep -E '^rackboot_agent_tftp_(retransmit|datagrams|dropped|transfers)' >&2 || true
      fi
    fi
    rss=$(peak_rss_kb); rss=${rss:-0}
    storm_cpu=$(tail -n 1 "$work/storm.time" 2>/dev/null | awk '{print $1+$2}'); storm_cpu=${storm_cpu:-nan}
    stop_server
    row=$(EACH_WAY="$each_way" python3 - "$json" "$srv" "$n" "$label" "$loss" "$floor" "$rss" "$t0" "$t1" "$rss0" "$storm_cpu" <<'PY'
import json, os, sys
raw, srv, n, label, loss, floor, rss, t0, t1, rss0, storm_cpu = sys.argv[1:]
try:
    j = json.loads(raw)
except Exception:
    j = {"ok": 0, "failed": int(n), "elapsed_s": float("nan"), "goodput_mb_s": 0, "tftp_p99_ms": float("nan")}
cpu = (int(t1) - int(t0)) / 100 if srv == "rackboot" else float("nan")
rss_mib = int(rss) / 1024 if srv == "rackboot" else float("nan")
# Memory the storm added, per concurrent transfer (all clients start at once;
# the agent runs at most 4096 transfers, the rest queue).
per = (int(rss) - int(rss0)) / min(int(n), 4096) if srv == "rackboot" else float("nan")
each = " each way" if os.environ.get("EACH_WAY") else ""
print(f"| {srv} | {n} | {label} | {loss}%{each} | {j['ok']} | {j['failed']} | {j['elapsed_s']:.1f} | {floor} | {j['goodput_mb_s']:.1f} | {j['tftp_p99_ms']/1000:.1f} | {rss_mib:.1f} | {per:.1f} | {cpu:.1f} | {float(storm_cpu):.1f} |")
PY
)
    echo "$row"
    rows+="$row"$'\n'
  done
  done
done
if [ -n "$out" ]; then
  {
    echo
    echo "### TFTP boot storm ($(date -u +%Y-%m-%d), rate $rate, $(nproc) cores)"
    echo
    echo "Command: \`${STORM_ARGS:+STORM_ARGS=\"$STORM_ARGS\" }tests/bench/tftp-storm.sh $invocation\`. Floor = clients × bytes / (rate × 0.97). RSS and CPU"
    echo "are reported for rackboot-agent only (tftpd-hpa forks per transfer; dnsmasq serves DNS/DHCP too); RSS per"
    echo "transfer = (peak RSS - RSS before the storm) / concurrent transfers. Storm CPU = the emulator's user+system"
    echo "time (it shares the machine). Clients come from 254 source addresses (storm --source-range)."
    echo
    echo "$header"
    echo "$rule"
    printf '%s' "$rows"
  } >> "$out"
fi
