#!/usr/bin/env bash
# The project's test command: installs what the tests need, checks the generated CRDs, and runs
# every test of the workspace (unit, property, integration against the embedded test cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
kind-tests/setup.sh
cargo nextest run --workspace --locked --profile "${NEXTEST_PROFILE:-default}" "$@"
