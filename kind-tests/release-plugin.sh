#!/usr/bin/env bash
# The plugin's release: a static kubectl-scistream (and kubectl_complete-scistream, kubectl's
# completion helper) in kubectl-scistream-linux-amd64.tar.gz, its .sha256, and the krew
# manifest scistream.yaml generated from operator/plugin/krew.yaml with that archive's URL and
# checksum. Install without a toolchain: docs/user-guide.md ("Installing the plugin").
#   kind-tests/release-plugin.sh [--out DIR] [--binaries DIR] [--base-url URL]
#     --out DIR       where to write (default: dist)
#     --binaries DIR  package the binaries in DIR instead of building static ones (tests)
#     --base-url URL  where the archive is published, before /v<version>/<archive>
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist binaries="" base=https://github.com/scistream/scistream-operator/releases/download
while (($#)); do
  case $1 in
    --out) out=$2; shift 2 ;;
    --binaries) binaries=$2; shift 2 ;;
    --base-url) base=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--binaries DIR] [--base-url URL]" >&2; exit 2 ;;
  esac
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
if [[ -z $binaries ]]; then
  target=x86_64-unknown-linux-gnu
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target $target -p scistream-plugin
  binaries=${CARGO_TARGET_DIR:-target}/$target/release
  for bin in kubectl-scistream kubectl_complete-scistream; do
    if ldd "$binaries/$bin" 2>&1 | grep -q "=>"; then echo "$binaries/$bin is not static" >&2; exit 1; fi
  done
fi
name=kubectl-scistream-linux-amd64
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$binaries/kubectl-scistream" "$binaries/kubectl_complete-scistream" "$stage/"
cp README.md "$stage/README.md"
chmod 0755 "$stage/kubectl-scistream" "$stage/kubectl_complete-scistream"
# Reproducible: fixed owner, time and order.
tar -C "$stage" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -czf "$out/$name.tar.gz" \
  kubectl-scistream kubectl_complete-scistream README.md
sha=$(sha256sum "$out/$name.tar.gz" | cut -d' ' -f1)
echo "$sha  $name.tar.gz" > "$out/$name.tar.gz.sha256"
sed -e "s|^  version: .*|  version: v$version|" \
    -e "s|^      uri: .*|      uri: $base/v$version/$name.tar.gz|" \
    -e "s|^      sha256: .*|      sha256: \"$sha\"|" \
    operator/plugin/krew.yaml > "$out/scistream.yaml"
echo "$out/$name.tar.gz ($sha), $out/scistream.yaml"
