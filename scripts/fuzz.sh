#!/usr/bin/env bash
# Run one or all fuzz targets for a fixed time each.
#   scripts/fuzz.sh [TARGET|all] [SECONDS]
# Installs cargo-fuzz if missing. Uses the stable toolchain with
# RUSTC_BOOTSTRAP=1 (libFuzzer instrumentation needs -Z flags).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-all}
secs=${2:-60}
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
if [ "$target" = all ]; then
  targets=$(cargo fuzz list)
else
  targets=$target
fi
for t in $targets; do
  mkdir -p "corpus/$t"
  echo "== fuzzing $t for ${secs}s" >&2
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10
done
