#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each) when a nightly toolchain and
# cargo-fuzz are available; otherwise says so and succeeds, so CI can call it unconditionally:
#   operator/control-endpoint/fuzz/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! rustup run nightly rustc --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain or cargo-fuzz here; skipping (rustup toolchain install nightly; cargo install cargo-fuzz)" >&2
  exit 0
fi
for target in decode_requests parse_endpoint; do
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
