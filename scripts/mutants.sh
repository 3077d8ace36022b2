#!/usr/bin/env bash
# Prove the coordinator's fault tests can catch durability bugs: build the
# replica with a deliberately broken persistence path and run the same tests;
# each of them must FAIL. Exits 0 when every mutant was caught.
#
#   mutant-no-fsync             redb commits with Durability::None (no fsync)
#   mutant-send-before-persist  votes / append acknowledgements sent before
#                               the entries and HardState are durable
#
# Usage: scripts/mutants.sh [test-filter ...]   (default: crash tests + simulation)
# Logs: target/mutants/<feature>.log
set -u
cd "$(dirname "$0")/.."
filters=("$@")
[ ${#filters[@]} -eq 0 ] && filters=(crash:: sim::simulation_many_seeds)
mkdir -p target/mutants
status=0
for feature in mutant-no-fsync mutant-send-before-persist; do
  for filter in "${filters[@]}"; do
    log="target/mutants/${feature}-${filter//[:\/]/_}.log"
    echo "== $feature: cargo test -p rackboot-coordinator --features $feature --test cluster $filter"
    if cargo test -p rackboot-coordinator --features "$feature" --test cluster "$filter" \
        -- --nocapture --test-threads=1 >"$log" 2>&1; then
      echo "   NOT CAUGHT: the tests passed against the $feature build (see $log)"
      status=1
    else
      caught=$(grep -cE "^test .* FAILED$" "$log" || true)
      total=$(grep -cE "^test .* (ok|FAILED)$" "$log" || true)
      echo "   caught: $caught of $total tests failed (see $log)"
      grep -hoE "[0-9]+ lost, [0-9]+ duplicate numbers, [0-9]+ non-linearizable MACs|to_commit [0-9]+ is out of range[^,]*|replicas did not converge|did not converge" "$log" \
        | sort | uniq -c | sort -rn | head -5 | sed 's/^/     /'
    fi
  done
done
exit $status
