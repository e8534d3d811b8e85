#!/usr/bin/env bash
# Builds the static binaries and the two FROM-scratch images (operator, s2ds) with podman
# (installed from Debian if missing) or docker. Tags follow the chart's appVersion.
#   kind-tests/build-images.sh [--no-image]   # --no-image: binaries only
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' charts/scistream-operator/Chart.yaml)
target=x86_64-unknown-linux-gnu
out=${CARGO_TARGET_DIR:-target}/$target/release
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target $target \
  -p scistream-controller --bin scistream-operator -p s2ds --bin s2ds
for bin in "$out/scistream-operator" "$out/s2ds"; do
  if ldd "$bin" 2>&1 | grep -q "=>"; then echo "$bin is not static" >&2; exit 1; fi
done
cp "$out/scistream-operator" operator/scistream-operator
cp "$out/s2ds" s2ds-image/s2ds
[[ ${1:-} == --no-image ]] && exit 0
engine=$(command -v podman || command -v docker || true)
if [[ -z $engine ]] || ! "$engine" info >/dev/null 2>&1; then
  apt-get install -y -qq podman >/dev/null && engine=podman
fi
"$engine" build -t "ghcr.io/scistream/scistream-operator:$version" operator
"$engine" build -t "ghcr.io/scistream/s2ds:$version" s2ds-image
"$engine" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep scistream
