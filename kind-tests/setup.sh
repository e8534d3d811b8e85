#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine, and nothing when it is
# already there. Safe to run repeatedly. Needs root for apt (CI and the dev machines run as root).
set -euo pipefail

packages=(
  protobuf-compiler   # protoc, for the tonic gRPC code of the control endpoint
  iproute2            # ip netns / veth / bridge, for the node agent's netns mode
  socat iperf3        # test peers and the relay benchmark
  haproxy nginx libnginx-mod-stream stunnel4   # the three non-Rust S2DS implementations
  openssl             # s_client / s_server: s2ds's TLS interop tests (s2ds-image/tests/interop.rs)
  python3-venv        # the independent grpcio client of the control-endpoint tests
  unzip               # unpacking helm (kind-tests/helm.sh)
  docker-registry     # an OCI registry on loopback: the chart installed from oci:// (e2e oci_install)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages' own services are not ours to run: tests start their own instances.
  for svc in haproxy nginx stunnel4 docker-registry; do
    (systemctl disable --now "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
  done
fi

"$(dirname "$0")/helm.sh" >/dev/null
command -v kubectl >/dev/null || { echo "setup: kubectl not found (expected /usr/bin/kubectl)" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: cargo-nextest not found; installing it from crates.io" >&2
  cargo install --locked cargo-nextest >/dev/null
fi
