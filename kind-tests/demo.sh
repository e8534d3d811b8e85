#!/usr/bin/env bash
# The README's first command: two facilities on this machine (an embedded API server, a node
# agent running the gateway nodes' pods as real processes and an operator each; facility LANs
# and a WAN in network namespaces as root, loopback addresses otherwise), one stream created
# with `kubectl scistream create`, Hellos from both application controllers through the
# control endpoints, 1 GiB streamed through real s2ds relays and verified with SHA-256 at both
# ends, and `kubectl scistream release` leaving nothing behind. Timings of every step.
#   kind-tests/demo.sh [--keep] [--bytes N] [--connections N] [--data-channel Plain] [--implementation Haproxy|Nginx|Stunnel]
#                      [--podman-images]   # relay pods from the s2ds image with podman (root; kind-tests/build-images.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
kind-tests/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# cargo shows its progress (a bar on a terminal, a line per crate otherwise): a cold build
# takes about 10 minutes on 2 cores, a warm one seconds. The workspace's binaries, as the
# tests build them (after kind-tests/run-tests.sh nothing is compiled again; a `-p` selection
# would unify dependency features differently and rebuild them). The relay is the dev build:
# the s2ds crate is optimized there (Cargo.toml), 1 GiB takes about 3 s against 2.6 s for the
# release build, whose figures are in docs/performance.md.
echo "== building the demo, the relay and the plugin" >&2
cargo build --locked --workspace --bins
exec "$CARGO_TARGET_DIR/debug/scistream-demo" --s2ds "$CARGO_TARGET_DIR/debug/s2ds" "$@"
