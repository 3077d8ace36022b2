#!/usr/bin/env bash
# Image push and agent pre-fetch: `rackboot image push` of an image with a
# SIZE-MiB kernel (random bytes) to a 3-replica coordinator cluster on
# loopback (each blob acknowledged once durable on 2 of 3), a resumed push
# after the client is killed half-way, and the time a rack agent takes from
# the assignment to holding the image verified in its cache (`rackboot rack
# cache` exit 0). Reference, same disk, same invocation: `dd conv=fsync` of
# the file (one durable copy, no network, no hashing) and `curl` fetching it
# over loopback HTTP from python's http.server.
#
#   tests/bench/push-bench.sh [--mib SIZE] [--bin-dir DIR] [--out FILE]
#
# Defaults: 1024 MiB, release binaries. Everything runs on 127.0.0.1 and is
# removed on exit. The three replicas, the CLI and the agent share this
# machine's cores and disk.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

mib=1024
bin_dir=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) mib=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin_dir" ]; then
  cargo build --release --locked --bin rackboot --bin rackboot-agent --bin rackboot-coordinator >&2
  bin_dir=$ROOT/target/release
fi
BIN=$(cd "$bin_dir" && pwd)
WORK=$(mktemp -d /var/tmp/rackboot-push-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rate() { awk -v m="$1" -v s="$2" 'BEGIN { printf "%.1f", m / s }'; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=("$(free_port)" "$(free_port)" "$(free_port)")
peers=()
for i in 1 2 3; do peers+=(--peer "$i=127.0.0.1:${ports[$((i-1))]}"); done
for i in 1 2 3; do
  "$BIN/rackboot-coordinator" --plaintext --id "$i" --listen "127.0.0.1:${ports[$((i-1))]}" \
    --data "$WORK/c$i" "${peers[@]}" >"$WORK/c$i.log" 2>&1 &
  pids+=($!)
done
COORD=$(printf 'http://127.0.0.1:%s,' "${ports[@]}"); COORD=${COORD%,}
cli() { "$BIN/rackboot" --coordinator "$COORD" "$@"; }
for _ in $(seq 100); do cli cluster status >/dev/null 2>&1 && break; sleep 0.2; done

echo "writing a ${mib} MiB kernel and a 64 MiB initrd of random bytes" >&2
head -c "$((mib << 20))" /dev/urandom >"$WORK/kernel"
head -c "$((64 << 20))" /dev/urandom >"$WORK/initrd"
sync
total_mib=$((mib + 64))

# Reference 1: one durable local copy.
t0=$(now); dd if="$WORK/kernel" of="$WORK/copy" bs=1M conv=fsync status=none; t1=$(now)
dd_s=$(secs "$t0" "$t1"); rm -f "$WORK/copy"

# Reference 2: curl over loopback HTTP (python http.server), to disk, fsync.
hport=$(free_port)
(cd "$WORK" && exec python3 -m http.server "$hport" --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$hport/initrd" && break; sleep 0.1; done
t0=$(now); curl -sf -o "$WORK/copy" "http://127.0.0.1:$hport/kernel"; sync "$WORK/copy"; t1=$(now)
curl_s=$(secs "$t0" "$t1"); rm -f "$WORK/copy"

# 1. A push to 3 replicas.
t0=$(now)
cli image push bench:1 --kernel "$WORK/kernel" --initrd "$WORK/initrd" --kernel-version 6.1.0-bench >"$WORK/push1.out"
t1=$(now)
push_s=$(secs "$t0" "$t1")

# 2. A different image, the client SIGKILLed half-way, then pushed again.
head -c "$((mib << 20))" /dev/urandom >"$WORK/kernel2"
# The binary itself in the background (not the `cli` function, whose
# subshell would take the SIGKILL instead).
"$BIN/rackboot" --coordinator "$COORD" image push bench:2 --kernel "$WORK/kernel2" \
  --initrd "$WORK/initrd" --kernel-version 6.1.0-bench >"$WORK/push2a.out" 2>&1 &
cpid=$!
# Kill it once the receiving replica holds half the kernel's groups.
for _ in $(seq 600); do
  held=$(du -sm "$WORK/c1/blobs/partial" 2>/dev/null | cut -f1)
  [ "${held:-0}" -ge $((mib / 2)) ] && break
  sleep 0.05
done
kill -9 "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true
t0=$(now)
cli image push bench:2 --kernel "$WORK/kernel2" --initrd "$WORK/initrd" --kernel-version 6.1.0-bench >"$WORK/push2.out"
t1=$(now)
resume_s=$(secs "$t0" "$t1")
resumed=$(grep -o 'resumed: [0-9]* bytes' "$WORK/push2.out" | grep -o '[0-9]*' || echo 0)

# 3. Agent pre-fetch: assignment -> image verified in the cache.
"$BIN/rackboot-agent" --plaintext --rack r1 --coordinator "$COORD" --data "$WORK/agent" \
  --dhcp-port "$(free_port)" --tftp-port "$(free_port)" --http-port "$(free_port)" \
  --syslog-port "$(free_port)" >"$WORK/agent.log" 2>&1 &
apid=$!; pids+=($apid)
for _ in $(seq 100); do cli rack list 2>/dev/null | grep -q '^r1 ' && break; sleep 0.2; done
cli node add --rack r1 --mac 52:54:00:be:00:01 >/dev/null
t0=$(now)
cli assign --node 1 bench:1 >/dev/null
for _ in $(seq 6000); do
  cli rack cache r1 >/dev/null 2>&1 && break
  sleep 0.1
done
t1=$(now)
prefetch_s=$(secs "$t0" "$t1")
cli rack cache r1 >"$WORK/cache.out"
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$apid/status")

table=$(cat <<EOF
| step | MiB | seconds | MiB/s |
|---|---:|---:|---:|
| \`image push\` to 3 replicas (2 durable before each ack) | $total_mib | $push_s | $(rate "$total_mib" "$push_s") |
| push resumed after a client SIGKILL half-way ($((resumed >> 20)) MiB already held, not resent) | $total_mib | $resume_s | $(rate "$total_mib" "$resume_s") |
| agent pre-fetch: assignment → image verified in cache | $total_mib | $prefetch_s | $(rate "$total_mib" "$prefetch_s") |
| reference: \`dd conv=fsync\` local copy of the kernel | $mib | $dd_s | $(rate "$mib" "$dd_s") |
| reference: \`curl\` of the kernel over loopback HTTP + fsync | $mib | $curl_s | $(rate "$mib" "$curl_s") |

Agent peak RSS during the pre-fetch: $((rss / 1024)) MiB (the served image is held in memory, verified).
EOF
)
echo "$table"
cat "$WORK/cache.out" >&2
if [ -n "$out" ]; then
  {
    echo
    echo "### $(date -u +%Y-%m-%d), ${mib} MiB kernel + 64 MiB initrd, $(nproc) cores"
    echo
    echo "$table"
  } >>"$out"
fi
