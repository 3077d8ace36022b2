#!/usr/bin/env bash
# Soak: a coordinator and a rack agent under repeated boot storms for a long
# time, sampling their resident memory (VmRSS), open file descriptors and
# threads. Each round: 200 PXE clients do DHCP and fetch a 1 MiB boot file
# over TFTP, 100 iPXE-like clients fetch 8 MiB over HTTP, 2,000 syslog lines,
# boot-info requests, and a SIGHUP (config re-read) to the agent.
#
#   tests/bench/soak.sh [--minutes M | --seconds S] [--interval SECS]
#                       [--pause SECS] [--bin-dir DIR] [--out FILE]
#
# Defaults: 60 minutes, a sample every 30 s, rounds back to back (--pause
# idles between rounds), release binaries (built).
# Prints a table of samples and a verdict; exits 1 if, after the first
# quarter (warm-up: caches, buffers, allocator arenas), RSS grew by more than
# 20% or the fd count by more than 16 between the warm-up's end and the last
# sample. Needs root (network namespaces). Everything it creates is removed
# on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

secs=3600
interval=30
pause=0
bin_dir=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) secs=$(( $2 * 60 )); shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --pause) pause=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
if [ -z "$bin_dir" ]; then
  cargo build --release --locked --bin rackboot --bin rackboot-agent --bin rackboot-coordinator >&2
  bin_dir=$ROOT/target/release
fi
BIN=$(cd "$bin_dir" && pwd)
for b in rackboot rackboot-agent rackboot-coordinator; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (cargo build --workspace --bins)" >&2; exit 1; }
done

# shellcheck source=tests/bench/netns-pair.sh
. "$ROOT/tests/bench/netns-pair.sh"
netns_pair "rbsk$$" 10.124.0.1/16 10.124.0.2/16
ip netns exec "$S" tc qdisc add dev vs root tbf rate 2gbit burst 1mb latency 50ms
ip netns exec "$C" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"

files="$work/static"; mkdir -p "$files"
head -c $((1 << 20)) /dev/urandom > "$files/undionly.kpxe"
head -c $((8 << 20)) /dev/urandom > "$files/big.bin"
cat > "$work/agent.toml" <<EOF
rack = "r1"
coordinators = ["http://127.0.0.1:50051"]
plaintext = true
data_dir = "$work/agent"
iface = "vs"
static_root = "$files"
[network]
node_base = "10.124.1.0"
[http]
max_per_source = 4096                   # the emulated clients share one address
EOF

ip netns exec "$S" "$BIN/rackboot-coordinator" --plaintext --listen 127.0.0.1:50051 --data "$work/coord" \
  > "$work/coordinator.log" 2>&1 &
sleep 1
ip netns exec "$S" "$BIN/rackboot-agent" --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
for _ in $(seq 1 100); do
  grep -q "rack agent serving" "$work/agent.log" && break
  sleep 0.2
done
grep -q "rack agent serving" "$work/agent.log" || { echo "agent did not start:"; cat "$work/agent.log"; exit 1; }
pid_of() { # comm (15 chars at most) -> pid in namespace $S
  local p
  for p in $(ip netns pids "$S"); do
    if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$1" ]; then echo "$p"; return 0; fi
  done
  return 0
}
apid=$(pid_of rackboot-agent)
cpid=$(pid_of rackboot-coordi)
[ -n "$apid" ] && [ -n "$cpid" ] || { echo "cannot find the daemons' pids" >&2; exit 1; }

sample() { # pid -> "rss_kib fds threads"
  local rss fds thr
  rss=$(awk '/^VmRSS:/ {print $2}' /proc/"$1"/status)
  thr=$(awk '/^Threads:/ {print $2}' /proc/"$1"/status)
  fds=$(find /proc/"$1"/fd -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "$rss $fds $thr"
}

round() {
  local r=$1
  ip netns exec "$C" "$BIN/rackboot" storm --server 10.124.0.1 --clients 200 --time-scale 0.5 \
    --deadline-secs 120 --json >> "$work/storms.jsonl" 2>> "$work/storm.err" || echo "round $r: TFTP storm failed" >&2
  ip netns exec "$C" "$BIN/rackboot" storm --server 10.124.0.1 --tftp-only --transport http \
    --file big.bin --clients 100 --http-port 80 --deadline-secs 120 --json \
    >> "$work/storms.jsonl" 2>> "$work/storm.err" || echo "round $r: HTTP storm failed" >&2
  ip netns exec "$C" bash -c 'for i in $(seq 1 2000); do
      printf "<14>soak: line %s\n" "$i" > /dev/udp/10.124.0.1/514; done' 2>/dev/null || true
  for m in 52-54-00-00-00-00 52-54-00-00-00-01 52-54-00-00-00-02; do
    ip netns exec "$C" curl -s -o /dev/null "http://10.124.0.1/boot-info/$m.json" || true
  done
  kill -HUP "$apid"
}

printf 'elapsed_s agent_rss_kib agent_fds agent_threads coord_rss_kib coord_fds coord_threads\n' > "$work/samples"
start=$SECONDS
next=0
r=0
while [ $((SECONDS - start)) -lt "$secs" ]; do
  if [ $((SECONDS - start)) -ge "$next" ]; then
    echo "$((SECONDS - start)) $(sample "$apid") $(sample "$cpid")" >> "$work/samples"
    next=$((next + interval))
  fi
  r=$((r + 1))
  round "$r"
  sleep "$pause"
  kill -0 "$apid" 2>/dev/null || { echo "agent died:"; tail -50 "$work/agent.log"; exit 1; }
  kill -0 "$cpid" 2>/dev/null || { echo "coordinator died:"; tail -50 "$work/coordinator.log"; exit 1; }
done
echo "$((SECONDS - start)) $(sample "$apid") $(sample "$cpid")" >> "$work/samples"

ok_storms=$(grep -c '"failed":0' "$work/storms.jsonl" || true)
all_storms=$(wc -l < "$work/storms.jsonl")
refused=$(grep -c "configuration refused" "$work/agent.log" || true)
reread=$(grep -c "SIGHUP: configuration re-read" "$work/agent.log" || true)

report=$(awk -v rounds="$r" -v ok="$ok_storms" -v all="$all_storms" -v reread="$reread" -v refused="$refused" '
  NR == 1 { next }
  { n++; t[n] = $1; arss[n] = $2; afd[n] = $3; athr[n] = $4; crss[n] = $5; cfd[n] = $6; cthr[n] = $7 }
  END {
    w = int(n / 4) + 1; if (w > n) w = n
    printf "| elapsed s | agent RSS MiB | agent fds | agent threads | coordinator RSS MiB | coordinator fds | coordinator threads |\n"
    printf "|---:|---:|---:|---:|---:|---:|---:|\n"
    step = int(n / 8); if (step < 1) step = 1
    for (i = 1; i <= n; i += step) printf "| %d | %.1f | %d | %d | %.1f | %d | %d |\n", t[i], arss[i]/1024, afd[i], athr[i], crss[i]/1024, cfd[i], cthr[i]
    if ((i - step) != n) printf "| %d | %.1f | %d | %d | %.1f | %d | %d |\n", t[n], arss[n]/1024, afd[n], athr[n], crss[n]/1024, cfd[n], cthr[n]
    ag = (arss[n] - arss[w]) / arss[w] * 100; cg = (crss[n] - crss[w]) / crss[w] * 100
    printf "\nrounds %d, storms ok %d/%d, SIGHUP re-reads %d (refused %d)\n", rounds, ok, all, reread, refused
    printf "after warm-up (sample %d, %d s): agent RSS %+.1f%%, fds %+d; coordinator RSS %+.1f%%, fds %+d\n", w, t[w], ag, afd[n] - afd[w], cg, cfd[n] - cfd[w]
    bad = (ag > 20 || cg > 20 || afd[n] - afd[w] > 16 || cfd[n] - cfd[w] > 16 || ok != all)
    print (bad ? "VERDICT: FAIL" : "VERDICT: flat")
    exit bad
  }' "$work/samples") && status=0 || status=$?
echo "$report"
if [ -n "$out" ]; then
  { echo "### soak $(date -u +%Y-%m-%d) ($secs s, sample every $interval s, $BIN)"; echo; echo "$report"; echo; } >> "$out"
fi
exit "$status"
