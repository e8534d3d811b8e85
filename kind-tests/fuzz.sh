#!/usr/bin/env bash
# Bounded fuzzing of s2ds's TLS record layer (and its config parser) with
# cargo-fuzz, where a nightly toolchain exists. Each target runs once, bounded
# in time and in executions, niced, from the checked-in seed corpus
# (s2ds-image/fuzz/corpus/TARGET, only read) plus a working corpus that new
# inputs go to; a finding leaves its input in s2ds-image/fuzz/artifacts/TARGET
# and fails the script. Prints executions and exec/s per target and the total.
#
#   kind-tests/fuzz.sh                                   # 60 s per target (CI-sized)
#   SECONDS_PER_TARGET=3600 TARGETS="records" kind-tests/fuzz.sh
#
# Settings (environment):
#   TARGETS              default "records sequence duplex config"
#   SECONDS_PER_TARGET   libFuzzer -max_total_time (default 60)
#   RUNS                 libFuzzer -runs, the bound in executions (default 1000000000)
#   SANITIZER            cargo fuzz -s (default address; none runs the same safe
#                        code 2-3x faster: the record layer has no unsafe)
#   NICE                 niceness of the fuzzers (default 10: the machines are shared)
#   FUZZ_WORK            working corpus directory (default: a temporary one, removed)
#   CARGO_TARGET_DIR     where cargo fuzz builds (default s2ds-image/fuzz/target)
#   REQUIRE_NIGHTLY=1    fail instead of skipping when nightly or cargo-fuzz is missing
set -euo pipefail
cd "$(dirname "$0")/../s2ds-image/fuzz"

TARGETS=${TARGETS:-"records sequence duplex config"}
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-60}
RUNS=${RUNS:-1000000000}
SANITIZER=${SANITIZER:-address}
NICE=${NICE:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: no nightly toolchain or no cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz)" >&2
  [ "${REQUIRE_NIGHTLY:-}" = 1 ] && exit 1
  echo "fuzz.sh: skipped" >&2
  exit 0
fi

if [ -n "${FUZZ_WORK:-}" ]; then
  WORK=$FUZZ_WORK
else
  WORK=$(mktemp -d /tmp/s2ds-fuzz.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi

echo "building the fuzz targets (sanitizer $SANITIZER) ..." >&2
nice -n "$NICE" cargo +nightly fuzz build -s "$SANITIZER" --target-dir "$TARGET_DIR" >&2

total=0
failed=()
for t in $TARGETS; do
  mkdir -p "$WORK/$t" "artifacts/$t"
  log="$WORK/$t.log"
  echo "fuzzing $t: -max_total_time=$SECONDS_PER_TARGET -runs=$RUNS" >&2
  rc=0
  nice -n "$NICE" cargo +nightly fuzz run -s "$SANITIZER" --target-dir "$TARGET_DIR" "$t" "$WORK/$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -runs="$RUNS" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$rc" -ne 0 ] || [ -z "$execs" ]; then
    echo "FINDING or failure in $t (exit $rc); the input is in s2ds-image/fuzz/artifacts/$t; log:" >&2
    tail -40 "$log" >&2
    failed+=("$t")
    continue
  fi
  echo "$t: $execs executions, $rate exec/s, corpus $(find "$WORK/$t" "corpus/$t" -type f | wc -l) files"
  total=$((total + execs))
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "total: $total executions; findings or failures in: ${failed[*]}"
  exit 1
fi
echo "total: $total executions without a finding ($TARGETS)"
