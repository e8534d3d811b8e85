#!/usr/bin/env bash
# The e2e suite away from its embedded API servers, as CI runs it:
#
# 1. API-server mode, the whole suite: two `testcluster` processes (API servers separate from
#    the suite, as a facility's kube-apiserver is), and every scenario run against them with
#    the suite's own operators and node agents (SCISTREAM_E2E_APISERVER_PROD/_CONS). Fails
#    unless every scenario ran: 0 skipped.
# 2. Installed mode, one scenario: the demo keeps its two facilities running (loopback
#    addresses, so that gateway nodes reach this machine) and writes the SCISTREAM_E2E_*
#    variables that kind-tests/kind/run.sh sets for kind clusters; the suite then treats them
#    as clusters with the operator installed (it starts nothing itself).
#
#   kind-tests/external-check.sh [nextest filter expression for part 1]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
filter=${1:-'all()'}
# The workspace's test build, as kind-tests/run-tests.sh makes it, and its binaries, as
# kind-tests/demo.sh builds them: they hold what is used here (testcluster, scistream-demo,
# kubectl-scistream, s2ds), and after run-tests.sh and demo.sh (as in CI) nothing is compiled
# again. A `-p` selection unifies dependency features differently (kube,
# tonic, serde_json, ...) and rebuilt most of the dependency tree: 10 min of a CI run.
cargo build --locked -q --workspace --tests --bins

work=$(mktemp -d /tmp/scistream-external.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -INT "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # Bounded wait (the demo tears its facilities down on Ctrl-C), then force.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until file $1 holds a line matching $2 while process $3 lives (at most 300 s).
wait_for() {
  local deadline=$((SECONDS + 300))
  until grep -q "$2" "$1" 2>/dev/null; do
    if ! kill -0 "$3" 2>/dev/null || ((SECONDS > deadline)); then
      echo "external-check: no '$2' in $1:" >&2
      cat "$1" >&2
      exit 1
    fi
    sleep 0.2
  done
}

echo "== 1. the whole suite against two testcluster processes (API-server mode)"
# Users `scientist` and `colleague` of the 1.x client scenarios (kube-apiserver's static token
# file format).
printf '%s\n' 'scientist-token,scientist,scientist-uid,""' 'colleague-token,colleague,colleague-uid,""' \
  >"$work/tokens.csv"
for facility in aps alcf; do
  "$CARGO_TARGET_DIR/debug/testcluster" --name "$facility" --kubeconfig "$work/$facility.kubeconfig" \
    --tokens "$work/tokens.csv" >"$work/$facility.log" 2>&1 &
  pids+=($!)
  wait_for "$work/$facility.log" '^ready ' "$!"
done
start=$SECONDS
selection="package(scistream-e2e) & ($filter)"
# Every selected scenario must run (none ignored): the count nextest lists, ignored ones included.
expected=$(cargo nextest list --locked --workspace --run-ignored all -E "$selection" --message-format oneline | wc -l)
# One scenario at a time: they share the two API servers.
SCISTREAM_E2E_APISERVER_PROD="$work/aps.kubeconfig" SCISTREAM_E2E_APISERVER_CONS="$work/alcf.kubeconfig" \
  cargo nextest run --locked --workspace --profile "${NEXTEST_PROFILE:-default}" --test-threads 1 \
  --no-fail-fast -E "$selection" 2>&1 | tee "$work/suite.log"
summary=$(grep -E '^ +Summary' "$work/suite.log" | tail -1)
if ! grep -qE " $expected tests? run: $expected passed" <<<"$summary"; then
  echo "external-check: not every one of the $expected selected scenarios ran and passed in API-server mode: $summary" >&2
  exit 1
fi
echo "API-server mode: the suite took $((SECONDS - start)) s ($summary)"

echo "== 2. one scenario against the demo's facilities as installed clusters"
"$CARGO_TARGET_DIR/debug/scistream-demo" --s2ds "$CARGO_TARGET_DIR/debug/s2ds" --loopback \
  --bytes $((16 << 20)) --keep --env-file "$work/env" >"$work/demo.log" 2>&1 &
demo=$!
pids+=("$demo")
deadline=$((SECONDS + 300))
until [[ -f $work/env ]]; do
  if ! kill -0 "$demo" 2>/dev/null || ((SECONDS > deadline)); then
    echo "external-check: the demo's facilities did not come up:" >&2
    cat "$work/demo.log" >&2
    exit 1
  fi
  sleep 0.5
done
cat "$work/demo.log"
# shellcheck disable=SC1091
. "$work/env"
cargo nextest run --locked --workspace --profile "${NEXTEST_PROFILE:-default}" --test-threads 1 \
  -E 'package(scistream-e2e) & binary(implementations) & test(=s2ds_mutual_tls)'
