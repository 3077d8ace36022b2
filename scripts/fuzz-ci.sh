#!/usr/bin/env bash
# Build every fuzz target with libFuzzer's coverage instrumentation and run
# each for a short, fixed time on its committed corpus: what CI does.
#
#   scripts/fuzz-ci.sh [SECONDS]      (default 8 per target; env FUZZ_SECONDS too)
#
# Needs no cargo-fuzz and no nightly: the instrumentation flags cargo-fuzz
# passes (SanitizerCoverage, `--cfg fuzzing`, debug assertions, overflow
# checks) are stable rustc flags; only AddressSanitizer (a -Z flag) is left
# out, which safe Rust does not need to find a panic. A crash, a panic, a
# timeout (10 s on one input) or an OOM (2 GiB) fails the script, leaving the
# input in fuzz/artifacts/TARGET/. New inputs found go to a temporary
# directory, not into the committed corpus. Longer runs, with
# AddressSanitizer: scripts/fuzz.sh TARGET SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-${FUZZ_SECONDS:-8}}"
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cdebug-assertions
    -Coverflow-checks
)
export RUSTFLAGS="${flags[*]}"
# opt-level 1: a third less build time than 3, fast enough for short runs.
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-1}"
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-0}"
# A target directory of its own: these flags must not mix with other builds.
export CARGO_TARGET_DIR="$PWD/fuzz/target/ci"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros
# (as cargo-fuzz does): only the targets' code is instrumented.
host="$(rustc -vV | sed -n 's/^host: //p')"
echo "== building the fuzz targets (instrumented, release, $host)" >&2
cargo build --manifest-path fuzz/Cargo.toml --release --bins --locked --target "$host"

targets=()
while IFS= read -r t; do targets+=("$t"); done < <(
    sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^rackboot-fuzz$'
)
[[ ${#targets[@]} -gt 0 ]] || { echo "no fuzz targets in fuzz/Cargo.toml" >&2; exit 1; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    bin="$CARGO_TARGET_DIR/$host/release/$t"
    corpus="fuzz/corpus/$t"
    [[ -x "$bin" ]] || { echo "fuzz target $t was not built ($bin)" >&2; exit 1; }
    [[ -d "$corpus" ]] || { echo "fuzz target $t has no corpus ($corpus)" >&2; exit 1; }
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    log="$scratch/$t.log"
    status=0
    "$bin" "$scratch/$t" "$corpus" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    if [[ $status -eq 0 ]]; then
        printf '  ok    %-16s %10s runs in %ss, %s corpus files\n' "$t" "${runs:-?}" "$secs" \
            "$(find "$corpus" -type f | wc -l)" >&2
    else
        printf '  FAIL  %-16s exit %d after %s runs:\n' "$t" "$status" "${runs:-?}" >&2
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all ${#targets[@]} fuzz targets ran ${secs}s each: 0 crashes, timeouts or OOMs" >&2
