#!/usr/bin/env bash
# The e2e suite's real-cluster mode, checked on this machine: the demo keeps its two
# facilities running (loopback addresses, so that gateway nodes reach this machine), writes
# the SCISTREAM_E2E_* variables that kind-tests/kind/run.sh sets for kind clusters, and the
# suite runs against those facilities as against real clusters: it starts nothing itself, its
# applications run on 127.0.0.1, scenarios needing the embedded parts skip themselves.
#   kind-tests/external-check.sh [nextest filter expression]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
filter=${1:-'binary(implementations) | binary(patterns) | binary(concurrency) | binary(faults)'}
cargo build --locked --release -q -p s2ds --bin s2ds
cargo build --locked -q -p scistream-e2e --bin scistream-demo -p scistream-plugin --bin kubectl-scistream

work=$(mktemp -d /tmp/scistream-external.XXXXXX)
demo_pid=
cleanup() {
  if [[ -n $demo_pid ]] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -INT "$demo_pid"
    # The demo tears its facilities down on Ctrl-C; bounded wait, then force.
    for _ in $(seq 1 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$CARGO_TARGET_DIR/debug/scistream-demo" --s2ds "$CARGO_TARGET_DIR/release/s2ds" --loopback \
  --bytes $((16 << 20)) --keep --env-file "$work/env" >"$work/demo.log" 2>&1 &
demo_pid=$!
deadline=$((SECONDS + 300))
until [[ -f $work/env ]]; do
  if ! kill -0 "$demo_pid" 2>/dev/null || ((SECONDS > deadline)); then
    echo "external-check: the demo's facilities did not come up:" >&2
    cat "$work/demo.log" >&2
    exit 1
  fi
  sleep 0.5
done
cat "$work/demo.log"
# shellcheck disable=SC1091
. "$work/env"
# One scenario at a time: they share the two facilities, and each checks that its release
# leaves the Gateways holding nothing.
cargo nextest run --locked -p scistream-e2e --profile "${NEXTEST_PROFILE:-default}" --test-threads 1 -E "$filter"
