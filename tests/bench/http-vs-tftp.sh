#!/usr/bin/env bash
# HTTP vs TFTP through rackboot-agent: the same emulated clients load a kernel
# and an initrd from one agent, once over TFTP (`rackboot storm --tftp-only`,
# PXE ROM behaviour: tsize probe, lockstep, blksize 1456) and once over HTTP
# (`--transport http`, iPXE behaviour: one keep-alive TCP connection per
# client, a GET per file). Same setup as tftp-storm.sh: two network
# namespaces joined by a veth pair, `tc tbf` on both ends, optional random
# loss (nftables, on packets from the server, TCP and UDP alike).
#
#   tests/bench/http-vs-tftp.sh [--quick] [--transports "tftp http"] \
#       [--cases "CLIENTS:KERNEL_MIB:INITRD_MIB:LOSS% ..."] [--rate 1gbit] \
#       [--deadline SECS] [--out FILE]
#
# Default case: 200 clients × (16 MiB kernel + 64 MiB initrd), 0% loss
# (~2.5-3 min per transport at 1 Gbit). --quick: 20 clients.
# Needs root. Builds the release binaries. Prints a markdown table (and
# appends it, with the command, to --out).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

invocation="$*"
transports="tftp http"
cases="200:16:64:0"
out=""
rate="1gbit"
deadline=900
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) cases="20:16:64:0"; shift ;;
    --transports) transports=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

need=()
for p in nftables iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked --bin rackboot --bin rackboot-agent >&2
BIN=$ROOT/target/release

tag="rbh$$"
S="${tag}s"; C="${tag}c"
work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
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
ip -n "$S" addr add 10.124.0.1/16 dev vs; ip -n "$C" addr add 10.124.0.2/16 dev vc
ip -n "$S" link set vs up; ip -n "$C" link set vc up
ip netns exec "$S" tc qdisc add dev vs root tbf rate "$rate" burst 512kb latency 50ms
ip netns exec "$C" tc qdisc add dev vc root tbf rate "$rate" burst 512kb latency 50ms
ip netns exec "$C" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
ip netns exec "$S" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"

files="$work/files"; mkdir -p "$files"
make_file() { # NAME MiB
  [ -f "$files/$1" ] || head -c "$(( $2 * 1048576 ))" /dev/urandom > "$files/$1"
}

set_loss() { # percent, on packets the client receives from the server (not DHCP)
  ip netns exec "$C" nft delete table inet rbloss 2>/dev/null || true
  if [ "$1" != 0 ]; then
    ip netns exec "$C" nft add table inet rbloss
    ip netns exec "$C" nft add chain inet rbloss in '{ type filter hook input priority 0; }'
    ip netns exec "$C" nft add rule inet rbloss in ip saddr 10.124.0.1 udp sport != 67 numgen random mod 100 '<' "$1" drop
    ip netns exec "$C" nft add rule inet rbloss in ip saddr 10.124.0.1 meta l4proto tcp numgen random mod 100 '<' "$1" drop
  fi
}

start_agent() {
  rm -rf "$work/agent"
  # With --iface: TFTP on 69 and HTTP on 80 of 10.124.0.1.
  ip netns exec "$S" "$BIN/rackboot-agent" --plaintext --rack bench --coordinator http://127.0.0.1:9 \
    --data "$work/agent" --iface vs --dhcp-port 1067 --static-root "$files" --http-max-per-source 4096 >"$work/agent.log" 2>&1 &
  server_pid=$!
  local i
  for i in $(seq 1 50); do # up to 10 s for both listeners
    if ip netns exec "$S" ss -Hltn 'sport = :80' | grep -q . && ip netns exec "$S" ss -Hlun 'sport = :69' | grep -q .; then
      return 0
    fi
    sleep 0.2
  done
  echo "agent did not start:" >&2; cat "$work/agent.log" >&2; exit 1
}
stop_agent() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  sleep 0.5
}
peak_rss_kb() { grep -m1 VmHWM "/proc/$server_pid/status" 2>/dev/null | awk '{print $2}'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$server_pid/stat" 2>/dev/null || echo 0; }

header="| clients | files | transport | loss | booted | failed | time s | floor s | goodput MB/s | p99 s | agent peak RSS MiB | agent CPU s |"
sep="|---|---|---|---|---|---|---|---|---|---|---|---|"
echo "$header"; echo "$sep"
rows=""
rate_num=${rate%bit}
rate_bps=$(numfmt --from=si "${rate_num^^}")
hz=$(getconf CLK_TCK)
for c in $cases; do
  IFS=: read -r n kmib imib loss <<<"$c"
  kernel="vmlinuz-$kmib"; initrd="initrd-$imib.img"
  make_file "$kernel" "$kmib"; make_file "$initrd" "$imib"
  floor=$(python3 -c "print(round($n*($kmib+$imib)*1048576/($rate_bps/8*0.97),1))")
  for tr in $transports; do
    set_loss "$loss"
    start_agent
    t0=$(cpu_ticks)
    json=$(ip netns exec "$C" "$BIN/rackboot" storm --server 10.124.0.1 --tftp-only \
      --transport "$tr" --file "$kernel" --second-file "$initrd" --clients "$n" \
      --deadline-secs "$deadline" --json 2>"$work/storm.err" || true)
    t1=$(cpu_ticks)
    rss=$(peak_rss_kb); rss=${rss:-0}
    stop_agent
    [ -n "$json" ] || { echo "storm printed nothing:" >&2; tail -5 "$work/storm.err" >&2; }
    row=$(python3 - "$json" "$tr" "$n" "$kmib+$imib MiB" "$loss" "$floor" "$rss" "$t0" "$t1" "$hz" <<'PY'
import json, sys
raw, tr, n, label, loss, floor, rss, t0, t1, hz = sys.argv[1:]
try:
    j = json.loads(raw)
except Exception:
    j = {"ok": 0, "failed": int(n), "elapsed_s": float("nan"), "goodput_mb_s": 0, "tftp_p99_ms": float("nan")}
p99 = j.get("transfer_p99_ms", j.get("tftp_p99_ms", float("nan")))
cpu = (int(t1) - int(t0)) / int(hz)
print(f"| {n} | {label} | {tr.upper()} | {loss}% | {j['ok']} | {j['failed']} | {j['elapsed_s']:.1f} | {floor} | {j['goodput_mb_s']:.1f} | {p99/1000:.1f} | {int(rss)/1024:.1f} | {cpu:.1f} |")
for f in j.get("failures", [])[:3]:
    print(f"  failures: {f['count']} × {f['reason']}", file=sys.stderr)
PY
)
    echo "$row"
    rows+="$row"$'\n'
  done
done
if [ -n "$out" ]; then
  {
    echo
    echo "### $(date -u +%Y-%m-%d), rate $rate, $(nproc) cores"
    echo
    echo "Command: \`tests/bench/http-vs-tftp.sh $invocation\`. Floor = clients × bytes / (rate × 0.97)."
    echo
    echo "$header"; echo "$sep"
    printf '%s' "$rows"
  } >> "$out"
fi
