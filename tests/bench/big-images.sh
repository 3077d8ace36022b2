#!/usr/bin/env bash
# Big images: what serving from disk costs the rack agent, against a release
# coordinator and agent in a network namespace (the clients in another,
# joined by a veth pair without a rate limit):
#
#   1. one image with a 1 GiB initrd (and a 16 MiB kernel) assigned to the
#      rack; 16 HTTP clients fetch the initrd while 200 TFTP clients fetch a
#      1 MiB file and the 16 MiB kernel (`rackboot storm`; every body is
#      checked with blake3 at the client against the digest in its
#      `blobs/<blake3>` name). Agent peak RSS (VmHWM) and current RSS;
#   2. the same with twenty 1 GiB images assigned to the rack (one per
#      node), after an agent restart (which verifies every cached group
#      from disk before serving: its time is printed);
#   3. HTTP throughput on loopback: 20 parallel curl clients fetching the
#      same 256 MiB file (a static-root file) and the same 1 GiB blob from
#      the agent and from Debian's nginx (`sendfile on`, one worker and
#      `worker_processes auto`), three rounds each, in the same run.
#
#   tests/bench/big-images.sh [--bin-dir DIR] [--images N] [--out FILE]
#
# Needs root, ~3 × N GiB of free disk (coordinator store, agent cache, one
# source file at a time), curl and nginx (installed if missing). Everything
# it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

bin_dir=""
out=""
images=20
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
need=()
for p in nginx curl nftables iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "$bin_dir" ]; then
  cargo build --release --locked --bin rackboot --bin rackboot-agent --bin rackboot-coordinator >&2
  bin_dir=$ROOT/target/release
fi
BIN=$(cd "$bin_dir" && pwd)
ulimit -n "$(ulimit -Hn)"

# shellcheck source=tests/bench/netns-pair.sh
. "$ROOT/tests/bench/netns-pair.sh"
netns_pair "rbbi$$" 10.127.0.1/24 10.127.0.2/24
ip netns exec "$C" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
cli() { ip netns exec "$S" "$BIN/rackboot" --coordinator http://127.0.0.1:50051 "$@"; }
report=$work/report.txt
say() { echo "$*" | tee -a "$report"; }
metric() { ip netns exec "$S" curl -s http://127.0.0.1:9101/metrics | awk -v m="$1" '$1==m {print $2}'; }

ip netns exec "$S" "$BIN/rackboot-coordinator" --plaintext --listen 127.0.0.1:50051 --data "$work/coord" \
  > "$work/coordinator.log" 2>&1 &
for _ in $(seq 1 100); do ip netns exec "$S" bash -c '>/dev/tcp/127.0.0.1/50051' 2>/dev/null && break; sleep 0.1; done

static=$work/static
mkdir -p "$static" "$work/src"
head -c $((256 << 20)) /dev/urandom > "$static/file-256m.img"
head -c $((1 << 20)) /dev/urandom > "$work/src/small-1m"

agent_pid=""
start_agent() {
  ip netns exec "$S" "$BIN/rackboot-agent" --plaintext --rack r1 --coordinator http://127.0.0.1:50051 \
    --iface vs --data "$work/agent" --http-port 80 --no-syslog --node-base 10.127.0.100 \
    --static-root "$static" --metrics-listen 127.0.0.1:9101 --http-max-per-source 4096 \
    --cache-max-mib $(( (images + 2) * 1100 )) >> "$work/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 1 100); do ip netns exec "$S" bash -c '>/dev/tcp/127.0.0.1/9101' 2>/dev/null && return; sleep 0.1; done
  echo "agent did not start"; tail -20 "$work/agent.log"; exit 1
}
stop_agent() { kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; }
status_kb() { awk -v k="$1:" '$1==k {print $2}' "/proc/$agent_pid/status"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f", k/1024}'; }
wait_blobs() { # N: the agent serves at least N verified blobs
  for _ in $(seq 1 3000); do
    [ "$(metric rackboot_agent_cache_blobs)" -ge "$1" ] 2>/dev/null && return
    sleep 0.2
  done
  echo "agent did not cache $1 blobs"; tail -20 "$work/agent.log"; exit 1
}

start_agent
# Nodes 1..N (one per image) and N+1, whose small image holds the 1 MiB
# file every TFTP client fetches first (so it is a verified blob too).
for i in $(seq 1 $((images + 1))); do
  cli node add --rack r1 --mac "$(printf '52:54:00:b1:00:%02x' "$i")" > /dev/null
done
push() { cli image push "$1" --kernel "$2" --initrd "$3" >/dev/null; }
head -c $((16 << 20)) /dev/urandom > "$work/src/kernel-16m"
t0=$(date +%s.%N)
head -c $((1 << 30)) /dev/urandom > "$work/src/initrd-1"
push big-1 "$work/src/kernel-16m" "$work/src/initrd-1"
push small "$work/src/small-1m" "$work/src/small-1m"
cli assign --default big-1 >/dev/null
cli assign --node $((images + 1)) small >/dev/null
wait_blobs 3
say "one 1 GiB image pushed, fetched and verified by the agent in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
digest() { # FILE: its blake3 (the agent's cache names every blob by it)
  local size; size=$(stat -c %s "$1")
  for f in "$work"/agent/cache/*; do
    case "$f" in *.obao|*/.*) continue ;; esac
    [ "$(stat -c %s "$f")" = "$size" ] && cmp -s "$f" "$1" && { basename "$f"; return; }
  done
}
d_initrd=$(digest "$work/src/initrd-1")
d_kernel=$(digest "$work/src/kernel-16m")
d_small=$(digest "$work/src/small-1m")
rm -f "$work/src/initrd-1"

storm() { # LABEL
  local hwm0 http tftp hp
  ip netns exec "$C" "$BIN/rackboot" storm --server 10.127.0.1 --tftp-only --transport http \
    --file "blobs/$d_initrd" --clients 16 --deadline-secs 600 --json > "$work/http.json" 2>"$work/http.err" &
  hp=$!
  ip netns exec "$C" "$BIN/rackboot" storm --server 10.127.0.1 --tftp-only --transport tftp \
    --file "blobs/$d_small" --second-file "blobs/$d_kernel" --clients 200 --mac-base 52:54:00:c0:00:00 \
    --deadline-secs 600 --json > "$work/tftp.json" 2>"$work/tftp.err" || true
  wait "$hp" || true
  http=$(python3 -c "import json;j=json.load(open('$work/http.json'));print(f\"{j['ok']}/{j['ok']+j['failed']} ok in {j['elapsed_s']:.1f} s, {j['goodput_mb_s']:.0f} MB/s\")" 2>/dev/null || echo "no result: $(tail -2 "$work/http.err")")
  tftp=$(python3 -c "import json;j=json.load(open('$work/tftp.json'));print(f\"{j['ok']}/{j['ok']+j['failed']} ok in {j['elapsed_s']:.1f} s, {j['goodput_mb_s']:.0f} MB/s\")" 2>/dev/null || echo "no result: $(tail -2 "$work/tftp.err")")
  say "$1:"
  say "  16 HTTP × 1 GiB initrd (blake3 checked): $http"
  say "  200 TFTP × (1 MiB + 16 MiB) (blake3 checked): $tftp"
  say "  agent peak RSS $(mib "$(status_kb VmHWM)") MiB, RSS now $(mib "$(status_kb VmRSS)") MiB; disk reads on the event loops: $(metric rackboot_agent_disk_reads_total), longest $(metric rackboot_agent_disk_read_max_seconds) s"
}
storm "1 image with a 1 GiB initrd"

# Twenty 1 GiB images, one per node.
t0=$(date +%s.%N)
for i in $(seq 2 "$images"); do
  head -c $((1 << 30)) /dev/urandom > "$work/src/initrd-$i"
  push "big-$i" "$work/src/kernel-16m" "$work/src/initrd-$i"
  rm -f "$work/src/initrd-$i"
  cli assign --node "$i" "big-$i" >/dev/null
done
wait_blobs $((images + 2))
say "$images images of 1 GiB assigned and cached in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
stop_agent
sync; echo 3 > /proc/sys/vm/drop_caches
t0=$(date +%s.%N)
start_agent
wait_blobs $((images + 2))
say "agent restart with a cold page cache: every group of $((images + 2)) blobs ($(( $(metric rackboot_agent_cache_bytes) >> 20 )) MiB) verified from disk in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
storm "$images images of 1 GiB assigned"

# HTTP throughput on loopback, agent against nginx, same files.
mkdir -p "$work/nginx/www/blobs" "$work/nginx/tmp"
ln "$static/file-256m.img" "$work/nginx/www/file-256m.img"
ln "$work/agent/cache/$d_initrd" "$work/nginx/www/blobs/$d_initrd"
chmod 755 "$work" "$work/nginx" "$work/nginx/www" "$work/nginx/www/blobs"
chmod 644 "$work/nginx/www/file-256m.img" "$work/nginx/www/blobs/$d_initrd"
nginx_conf() { # WORKERS PORT
  cat > "$work/nginx/nginx-$2.conf" <<EOF
worker_processes $1;
pid $work/nginx/nginx-$2.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  sendfile on; tcp_nopush on; access_log off;
  client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp; uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
  server { listen 10.127.0.1:$2; root $work/nginx/www; }
}
EOF
  ip netns exec "$S" nginx -c "$work/nginx/nginx-$2.conf"
}
nginx_conf 1 8081
nginx_conf auto 8082
sleep 0.5
fetch20() { # URL: seconds for 20 parallel curl clients to fetch it
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 1 20); do
    ip netns exec "$S" curl -s -o /dev/null --fail "$1" &
  done
  wait
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}'
}
say "HTTP on loopback, 20 parallel curl clients, 3 rounds (seconds each; GB/s of the best):"
for f in file-256m.img "blobs/$d_initrd"; do
  size=$(stat -c %s "$work/nginx/www/$f")
  for server in "rackboot-agent:80" "nginx (1 worker):8081" "nginx (worker_processes auto):8082"; do
    name=${server%:*}; port=${server##*:}
    rounds=""; best=999
    for _ in 1 2 3; do
      s=$(fetch20 "http://10.127.0.1:$port/$f"); rounds+="$s "
      best=$(awk -v a="$best" -v b="$s" 'BEGIN{print (b<a)?b:a}')
    done
    say "  $(basename "$f" | cut -c1-16) $(( size >> 20 )) MiB × 20, $name: ${rounds}(best $(awk -v s="$best" -v n="$size" 'BEGIN{printf "%.1f", 20*n/s/1e9}') GB/s)"
  done
done
say "agent peak RSS over the whole run: $(mib "$(status_kb VmHWM)") MiB"

if [ -n "$out" ]; then
  { echo; echo "### $(date -u +%Y-%m-%d), $(nproc) cores"; echo; echo "Command: \`tests/bench/big-images.sh --images $images\`"; echo; echo '```'; cat "$report"; echo '```'; } >> "$out"
fi
