#!/usr/bin/env bash
# DHCP flood: while `rackboot storm --flood` sends DISCOVERs from random MACs
# (a starvation attack, or a rack of unknown machines) at a fixed rate, N
# known machines (registered with `rackboot node add`) do their DHCP. Prints
# the known machines' time from DISCOVER to bound (two round trips: OFFER and
# ACK), the flood's achieved rate, the agent's drop counters, and how many
# nodes exist afterwards (the flood must number nobody).
#
#   tests/bench/dhcp-flood.sh [--flood N] [--rate PPS] [--known N]
#                             [--bin-dir DIR] [--out FILE]
#
# Defaults: 100,000 MACs at 20,000/s, 50 known machines, release binaries.
# The agent runs with --accept probe and a 10-address provisional pool.
# Needs root. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

flood=100000
rate=20000
known=50
bin_dir=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --flood) flood=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --known) known=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
[ "$known" -le 250 ] || { echo "--known: at most 250" >&2; exit 2; }
if [ -z "$bin_dir" ]; then
  cargo build --release --locked --bin rackboot --bin rackboot-agent --bin rackboot-coordinator >&2
  bin_dir=$ROOT/target/release
fi
BIN=$(cd "$bin_dir" && pwd)

# shellcheck source=tests/bench/netns-pair.sh
. "$ROOT/tests/bench/netns-pair.sh"
netns_pair "rbfl$$" 10.125.0.1/24 10.125.0.2/24

ip netns exec "$S" "$BIN/rackboot-coordinator" --plaintext --listen 127.0.0.1:50051 --data "$work/coord" \
  > "$work/coordinator.log" 2>&1 &
sleep 1
ip netns exec "$S" "$BIN/rackboot-agent" --plaintext --rack r1 --coordinator http://127.0.0.1:50051 \
  --iface vs --data "$work/agent" --no-http --no-syslog --accept probe \
  --node-base 10.125.0.100 --provisional-range 10.125.0.50-10.125.0.59 > "$work/agent.log" 2>&1 &
for _ in $(seq 1 100); do grep -q "registered; watching" "$work/agent.log" && break; sleep 0.2; done
macs=()
for i in $(seq 0 $((known - 1))); do macs+=(--mac "$(printf '52:54:00:ac:00:%02x' "$i")"); done
ip netns exec "$S" "$BIN/rackboot" --coordinator http://127.0.0.1:50051 node add --rack r1 "${macs[@]}" >/dev/null
for _ in $(seq 1 100); do grep -q "nodes=$known " "$work/agent.log" && break; sleep 0.2; done

ip netns exec "$C" "$BIN/rackboot" storm --server 10.125.0.1 --dhcp-only --clients "$known" \
  --mac-base 52:54:00:ac:00:00 --flood "$flood" --flood-rate "$rate" --deadline-secs 120 \
  > "$work/storm.out" 2> "$work/storm.err" || true
apid=$(for p in $(ip netns pids "$S"); do
  [ "$(cat /proc/"$p"/comm 2>/dev/null)" = rackboot-agent ] && echo "$p"; done; true)
apid=$(echo "$apid" | head -1)
kill -USR1 "$apid"
sleep 1
nodes=$(ip netns exec "$S" "$BIN/rackboot" --coordinator http://127.0.0.1:50051 node list | tail -n +2 | wc -l)
state=$(grep "agent state (SIGUSR1)" "$work/agent.log" | tail -1)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$state"; }

echo "--- storm report ---"
cat "$work/storm.out"
cat "$work/storm.err"
echo "--- agent counters ---"
echo "$state" | grep -o 'dhcp_[a-z_]*=[^ ]*' | tr '\n' ' '; echo
echo "nodes after the flood: $nodes (expected $known)"
if [ -n "$out" ]; then
  { echo "### DHCP flood $(date -u +%Y-%m-%d): $flood random MACs at $rate/s, $known known machines"; echo;
    echo '```'; cat "$work/storm.out"; cat "$work/storm.err";
    echo "$state" | grep -o 'dhcp_[a-z_]*=[^ ]*' | tr '\n' ' '; echo; echo "nodes after: $nodes"; echo '```'; echo; } >> "$out"
fi
[ "$nodes" -eq "$known" ]
