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
# takes about 10 minutes on 2 cores, a warm one seconds.
echo "== building the relay (release mode), then the demo and the plugin" >&2
cargo build --locked --release -p s2ds --bin s2ds
cargo build --locked -p scistream-e2e --bin scistream-demo -p scistream-plugin --bin kubectl-scistream
exec "$CARGO_TARGET_DIR/debug/scistream-demo" --s2ds "$CARGO_TARGET_DIR/release/s2ds" "$@"
