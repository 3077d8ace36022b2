# shellcheck shell=bash
# Sourced by benchmark scripts: two network namespaces, server "$S" and
# client "$C", joined by a veth pair (vs in $S, vc in $C), a work directory
# "$work", and an EXIT trap that kills everything in both namespaces and
# removes them and the work directory.
#
#   netns_pair TAG SERVER_CIDR CLIENT_CIDR     e.g. netns_pair rbfl$$ 10.125.0.1/24 10.125.0.2/24

netns_pair() {
  local tag=$1
  S="${tag}s"; C="${tag}c"
  work=$(mktemp -d)
  trap netns_pair_cleanup EXIT
  ip netns add "$S"; ip netns add "$C"
  ip -n "$S" link set lo up; ip -n "$C" link set lo up
  ip link add vs netns "$S" type veth peer name vc netns "$C"
  ip -n "$S" addr add "$2" dev vs; ip -n "$C" addr add "$3" dev vc
  ip -n "$S" link set vs up; ip -n "$C" link set vc up
}

netns_pair_cleanup() {
  local ns p
  for ns in "$S" "$C"; do
    if ip netns list | grep -qw "$ns"; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
