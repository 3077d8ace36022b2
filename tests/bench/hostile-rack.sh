#!/usr/bin/env bash
# Hostile rack: what a machine on the rack segment can do to the agent, with
# plain sockets from another network namespace, against a release agent
# (--accept probe, HTTP on 80, a static root with hostile entries):
#
#   1. start: the static root holds a link loop (`ln -s . loop`), a link out
#      of the root, a FIFO and a device file; time from starting the agent
#      to the first TFTP fetch of a file it serves;
#   2. forged probe reports: 10,000 DHCPINFORMs with the MAC-list option
#      (random MACs, and known nodes' MACs as chaddr or in the list) with no
#      token, a random one or one of the wrong length; then the node list
#      must be unchanged (0 nodes numbered, 0 identities changed) and nothing
#      held;
#   3. connections: known nodes (20 registered machines, each fetching from
#      its own address) fetch a 1 MiB file over HTTP before, and while, one
#      host holds 10,000 idle or trickling connections, then while 50 hosts
#      hold 40 each (2,000); prints the fetch p50/p99/max and how the held
#      connections ended (refused at once, closed by a deadline and when).
#
# With nginx installed, part 3 runs against nginx (Debian's default
# configuration serving the same file) in the same invocation, as the
# reference.
#
#   tests/bench/hostile-rack.sh [--bin-dir DIR] [--out FILE]
#
# Needs root and python3. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

bin_dir=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
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
TOOL=$ROOT/tests/bench/hostile.py
ulimit -n "$(ulimit -Hn)"  # 10,000 held connections need the fds

# shellcheck source=tests/bench/netns-pair.sh
. "$ROOT/tests/bench/netns-pair.sh"
netns_pair "rbho$$" 10.126.0.1/24 10.126.0.2/24
cli() { ip netns exec "$S" "$BIN/rackboot" --coordinator http://127.0.0.1:50051 "$@"; }
report=$work/report.txt
say() { echo "$*" | tee -a "$report"; }

# The static root: a 1 MiB boot file beside what must not hang or leak.
sr=$work/static
mkdir -p "$sr/sub"
head -c 1048576 /dev/urandom > "$sr/boot.img"
ln -s . "$sr/loop"
ln -s ../sub "$sr/sub/again"
ln -s /etc "$sr/escape"
mkfifo "$sr/fifo"
mknod "$sr/null" c 1 3

ip netns exec "$S" "$BIN/rackboot-coordinator" --plaintext --listen 127.0.0.1:50051 --data "$work/coord" \
  > "$work/coordinator.log" 2>&1 &
for _ in $(seq 1 100); do ip netns exec "$S" bash -c '>/dev/tcp/127.0.0.1/50051' 2>/dev/null && break; sleep 0.1; done

# 1. Start with a hostile static root.
t0=$(date +%s.%N)
ip netns exec "$S" "$BIN/rackboot-agent" --plaintext --rack r1 --coordinator http://127.0.0.1:50051 \
  --iface vs --data "$work/agent" --http-port 80 --no-syslog --accept probe \
  --node-base 10.126.0.100 --provisional-range 10.126.0.50-10.126.0.59 \
  --static-root "$sr" --metrics-listen 127.0.0.1:9101 > "$work/agent.log" 2>&1 &
started=""
for _ in $(seq 1 200); do
  if ip netns exec "$C" curl -s --max-time 1 -o /dev/null "tftp://10.126.0.1/boot.img"; then
    started=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'); break
  fi
  sleep 0.05
done
[ -n "$started" ] || { echo "the agent did not serve within 10 s"; tail -20 "$work/agent.log"; exit 1; }
skipped=$(grep -c "skipped\|not followed\|refused" "$work/agent.log" || true)
say "start with a hostile static root (loop, link out, FIFO, device): first TFTP fetch served after ${started} s; ${skipped} entries skipped with a logged reason"

# Known nodes: 20 machines, each at its own address on the client side.
macs=(); known=()
for i in $(seq 0 19); do m=$(printf '52:54:00:ad:00:%02x' "$i"); macs+=(--mac "$m"); known+=("$m"); done
cli node add --rack r1 "${macs[@]}" >/dev/null
for _ in $(seq 1 100); do grep -q "nodes=20 " "$work/agent.log" && break; sleep 0.2; done
node_addrs=""
for i in $(seq 0 19); do
  a=10.126.0.$((100 + i)); ip -n "$C" addr add "$a/24" dev vc; node_addrs+="$a,"
done
host_addrs=""
for i in $(seq 0 49); do
  a=10.126.0.$((200 + i)); ip -n "$C" addr add "$a/24" dev vc; host_addrs+="$a,"
done
sleep 1

# 2. Forged probe reports.
before=$(cli node list)
probes=$(ip netns exec "$C" python3 "$TOOL" probes --server 10.126.0.1 --source 10.126.0.2 \
  --count 10000 --rate 5000 --known "$(IFS=,; echo "${known[*]}")")
sleep 3
after=$(cli node list)
pending=$(cli node pending)
refused=$(ip netns exec "$S" curl -s http://127.0.0.1:9101/metrics | grep '^rackboot_agent_dhcp_probes_refused_total' | sed 's/rackboot_agent_dhcp_probes_//' | tr '\n' ' ')
numbered=$(( $(tail -n +2 <<<"$after" | wc -l) - $(tail -n +2 <<<"$before" | wc -l) ))
changed=$(diff <(echo "$before") <(echo "$after") | grep -c '^>' || true)
say "forged probe reports: $probes"
say "  nodes numbered: $numbered; node rows changed: $changed; held: $(grep -c : <<<"$pending" || true) ($(head -1 <<<"$pending"))"
say "  agent: $refused"

# 3. Connections held open against a 1 MiB fetch by known nodes.
fetch() {
  ip netns exec "$C" python3 "$TOOL" fetch --target "$1" --path /boot.img --from "$node_addrs" --count "$2" --interval 0.05
}
attack() { # TARGET LABEL SOURCES PER_SOURCE
  ip netns exec "$C" python3 "$TOOL" hold --target "$1" --from "$3" --per-source "$4" --hold-secs 45 \
    > "$work/hold.json" &
  local hp=$!
  sleep 5
  local during
  during=$(fetch "$1" 200)
  wait "$hp" || true
  say "  $2: known nodes' 1 MiB fetches $during"
  say "      held connections: $(cat "$work/hold.json")"
}
run_http() { # TARGET NAME
  say "HTTP $2 ($1):"
  say "  no attack: known nodes' 1 MiB fetches $(fetch "$1" 100)"
  attack "$1" "10,000 from one host" "10.126.0.2" 10000
  attack "$1" "2,000 from 50 hosts" "$host_addrs" 40
}
run_http 10.126.0.1:80 "rackboot-agent"
closed=$(ip netns exec "$S" curl -s http://127.0.0.1:9101/metrics | grep '^rackboot_agent_http_connections_closed_total' | sed 's/rackboot_agent_http_connections_//' | tr '\n' ' ')
say "  agent: $closed"

if command -v nginx >/dev/null; then
  mkdir -p "$work/nginx/www" "$work/nginx/tmp"
  cp "$sr/boot.img" "$work/nginx/www/"
  # nginx's workers (www-data) must read the file under the private work dir.
  chmod 755 "$work" "$work/nginx" "$work/nginx/www"; chmod 644 "$work/nginx/www/boot.img"
  cat > "$work/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 768; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx/tmp;
  proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp;
  uwsgi_temp_path $work/nginx/tmp;
  scgi_temp_path $work/nginx/tmp;
  server { listen 10.126.0.1:8081; root $work/nginx/www; }
}
EOF
  ip netns exec "$S" nginx -c "$work/nginx/nginx.conf"
  sleep 1
  run_http 10.126.0.1:8081 "nginx $(nginx -v 2>&1 | sed 's/.*\///') (Debian defaults: worker_connections 768, reference)"
fi

if [ -n "$out" ]; then
  { echo "### Hostile rack $(date -u +%Y-%m-%d)"; echo; echo '```'; cat "$report"; echo '```'; echo; } >> "$out"
fi
[ "$numbered" -eq 0 ] && [ "$changed" -eq 0 ]
