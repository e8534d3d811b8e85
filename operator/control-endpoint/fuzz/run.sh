#!/usr/bin/env bash
# Fuzzes the control endpoint's request decoding and endpoint parsing (cargo-fuzz, nightly).
#
#   operator/control-endpoint/fuzz/run.sh [seconds]       # AddressSanitizer, 60 s per target
#   operator/control-endpoint/fuzz/run.sh --ci [seconds]  # bounded CI mode, 20 s per target
#
# --ci builds without a sanitizer (`--sanitizer none`: much faster to build; safe Rust needs no
# ASan to find panics) in the development profile, keeps the corpus under the target
# directory so later runs on the same machine start from it, and bounds each target by
# -max_total_time plus a hard `timeout`. A crash (panic, failed assertion) fails the script and
# leaves the input under fuzz/artifacts/. Both modes skip with a message, and succeed, when
# the nightly toolchain or cargo-fuzz is missing, so CI can call this unconditionally.
# Builds go to $CARGO_TARGET_DIR/fuzz (default operator/control-endpoint/fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."
ci=0
if [[ "${1:-}" == "--ci" ]]; then
  ci=1
  shift
fi
seconds="${1:-$([[ $ci == 1 ]] && echo 20 || echo 60)}"
targets=(decode_requests parse_endpoint)
if ! rustup run nightly rustc --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain or cargo-fuzz here; skipping (rustup toolchain install nightly; cargo install cargo-fuzz)" >&2
  exit 0
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/fuzz/target}/fuzz"
build=(--fuzz-dir fuzz --target-dir "$target_dir")
if [[ $ci == 1 ]]; then
  build+=(--sanitizer none --dev)
fi
started=$(date +%s)
cargo +nightly fuzz build "${build[@]}"
echo "fuzz: built in $(($(date +%s) - started)) s (${build[*]})"
for target in "${targets[@]}"; do
  corpus="$target_dir/corpus/$target"
  log="$target_dir/$target.log"
  mkdir -p "$corpus"
  # -timeout: an input taking over 10 s is a hang; the outer timeout bounds the whole run.
  if ! timeout --kill-after=30 $((seconds + 300)) \
    cargo +nightly fuzz run "${build[@]}" "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target FAILED; the input is under operator/control-endpoint/fuzz/artifacts/$target/ (log: $log)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: $target ok: $runs inputs in ${seconds} s, corpus $(find "$corpus" -type f | wc -l) files"
done
echo "fuzz: done in $(($(date +%s) - started)) s"
