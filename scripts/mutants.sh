#!/usr/bin/env bash
# Prove the coordinator's fault tests can catch durability bugs: build the
# replica with a deliberately broken persistence path and run the tests that
# target it; each run must FAIL. Exits 0 when every mutant was caught.
#
#   mutant-no-fsync             redb commits with Durability::None (no fsync):
#                               the crash tests (a follower SIGKILLed while the
#                               leader runs comes back without its log; raft-rs
#                               then finds committed entries missing). The
#                               leader-kill test alone does not catch it: the
#                               replica that forgets is always the old leader,
#                               and the new leader probes it from scratch.
#   mutant-send-before-persist  votes / append acknowledgements sent before
#                               the entries and HardState are durable: the
#                               crash-before-append test and the simulation
#                               (which crashes replicas inside a Ready)
#
# (The simulation keeps its in-memory storage across simulated crashes, so it
# cannot see a missing fsync; that is what the multi-process tests are for.)
#
# Usage: scripts/mutants.sh        Logs: target/mutants/<feature>-<filter>.log
# The mutant builds go to their own target directory (target/mutants/build),
# never over target/debug/rackboot-coordinator, which other tests run.
set -u
cd "$(dirname "$0")/.."
mkdir -p target/mutants
export CARGO_TARGET_DIR="${MUTANTS_TARGET_DIR:-$PWD/target/mutants/build}"
status=0
run() {
  local feature=$1 filter=$2
  local log="target/mutants/${feature}-${filter//[:\/]/_}.log"
  echo "== $feature: cargo test -p rackboot-coordinator --features $feature --test cluster $filter"
  if RACKBOOT_LEADER_KILL_SECS=${RACKBOOT_LEADER_KILL_SECS:-20} \
      cargo test -p rackboot-coordinator --features "$feature" --test cluster "$filter" \
      -- --nocapture --test-threads=1 >"$log" 2>&1; then
    echo "   NOT CAUGHT: the tests passed against the $feature build (see $log)"
    status=1
  else
    echo "   caught: $(grep -hE '^test result:' "$log" | tail -1) (see $log)"
    grep -hoE "[1-9][0-9]* lost, [0-9]+ duplicate numbers, [0-9]+ non-linearizable MACs|to_commit [0-9]+ is out of range|replicas did not converge|fail point [a-z-]+ was never reached" "$log" \
      | sed -E 's/to_commit [0-9]+ is out of range/raft-rs: a follower lost committed entries (to_commit out of range)/' \
      | sort | uniq -c | sort -rn | head -5 | sed 's/^/     /'
  fi
}
run mutant-no-fsync crash::
run mutant-send-before-persist crash::crash_before_append
run mutant-send-before-persist sim::simulation_many_seeds
exit $status
