#!/usr/bin/env bash
# Builds the static binaries and the three FROM-scratch images (operator, s2ds, and Stunnel
# from Debian's stunnel4 with its shared libraries) with podman (installed from Debian if
# missing) or docker. Tags follow the chart's appVersion. Then, as root with podman, proves
# the relay images in use: the demo with its relay pods run from the s2ds image by the node
# agent (bytes verified at both ends), and the agent's podman runtime tests (s2ds and a
# Stunnel TLS pair).
#   kind-tests/build-images.sh [--no-image] [--no-demo]
#     --no-image: binaries only; --no-demo: images only (no demo, no podman test)
set -euo pipefail
cd "$(dirname "$0")/.."
no_image=false no_demo=false
for arg in "$@"; do
  case $arg in
    --no-image) no_image=true ;;
    --no-demo) no_demo=true ;;
    *) echo "usage: $0 [--no-image] [--no-demo]" >&2; exit 2 ;;
  esac
done
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
$no_image && exit 0
engine=$(command -v podman || command -v docker || true)
if [[ -z $engine ]] || ! "$engine" info >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null && engine=podman
fi
if [[ $engine == *podman ]] && [[ -z ${CONTAINERS_CONF:-} ]]; then
  # On a host that is itself a sandbox, podman's default ulimits exceed what a container
  # may set (runc: "error setting rlimit ... operation not permitted"): modest explicit
  # limits and the runc runtime.
  export CONTAINERS_CONF=${TMPDIR:-/tmp}/scistream-containers.conf
  printf '[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]\n[engine]\nruntime = "%s"\n' \
    "$(command -v runc >/dev/null && echo runc || echo crun)" > "$CONTAINERS_CONF"
fi
operator_image="ghcr.io/scistream/scistream-operator:$version"
s2ds_image="ghcr.io/scistream/s2ds:$version"
stunnel_image="ghcr.io/scistream/stunnel:$version"
"$engine" build -t "$operator_image" operator
"$engine" build -t "$s2ds_image" s2ds-image
# Stunnel: the Debian binary and each library it loads, at their own paths.
command -v stunnel4 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null
rootfs=s2ds-image/stunnel/rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs/usr/bin"
cp /usr/bin/stunnel4 "$rootfs/usr/bin/stunnel"
# glibc loads libgcc_s at run time (thread exit and cancellation): ldd does not list it.
# (Debian's libgcc-s1 is an essential package.)
for lib in $(ldd /usr/bin/stunnel4 | grep -oE '/[^ ]+') /lib/x86_64-linux-gnu/libgcc_s.so.1; do
  mkdir -p "$rootfs$(dirname "$lib")" && cp -L "$lib" "$rootfs$lib"
done
"$engine" build -t "$stunnel_image" --label "org.opencontainers.image.version=$(dpkg-query -W -f '${Version}' stunnel4)" \
  s2ds-image/stunnel
"$engine" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep scistream
# Smoke test: each image starts as its non-root user on an empty filesystem and answers.
[[ $("$engine" image inspect -f '{{.Config.User}}' "$operator_image") == 65532:65532 ]]
for pair in "$operator_image scistream-operator" "$s2ds_image s2ds"; do
  read -r image binary <<<"$pair"
  v=$("$engine" run --rm --network none "$image" --version)
  [[ $v == "$binary "* ]] || { echo "$image --version printed: $v" >&2; exit 1; }
  echo "$v"
done
# s2ds refuses a missing config with its own error, not a loader failure.
if out=$("$engine" run --rm --network none "$s2ds_image" 2>&1); then
  echo "s2ds started without a config" >&2; exit 1
fi
grep -q "config" <<<"$out" || { echo "unexpected s2ds output: $out" >&2; exit 1; }
# Stunnel loads every library from the image and says its version (on stderr).
v=$("$engine" run --rm --network none "$stunnel_image" -version 2>&1 || true)
grep -q "^stunnel 5" <<<"$v" || { echo "$stunnel_image -version printed: $v" >&2; exit 1; }
grep -m1 "^stunnel" <<<"$v"
echo "images built and smoke-tested: $operator_image $s2ds_image $stunnel_image"
# The operator's relay pods use its default s2ds image: it must be the tag built here.
operator/scistream-operator --help | grep -qF "[default: $s2ds_image]" \
  || { echo "the operator's default --s2ds-image is not $s2ds_image: align it with the chart's appVersion" >&2; exit 1; }
operator/scistream-operator --help | grep -qF "[default: $stunnel_image]" \
  || { echo "the operator's default --stunnel-image is not $stunnel_image: align it with the chart's appVersion" >&2; exit 1; }
$no_demo && exit 0
if [[ $engine != *podman ]] || [[ $(id -u) -ne 0 ]]; then
  echo "relay pods from the images: not checked (the node agent's podman runtime needs root and podman)"
  exit 0
fi
echo "== the demo, its relay pods run from $s2ds_image with podman"
t=$(date +%s)
kind-tests/demo.sh --podman-images --bytes $((256 << 20))
echo "== the node agent's podman runtime test"
# --workspace: dependencies keep the features of CI's workspace test run, so only the agent
# and this test are compiled here (-p scistream-nodeagent would rebuild kube and more).
cargo nextest run --locked --workspace --features scistream-nodeagent/podman-tests --test podman
echo "relay pods from the images: demo and podman test passed in $(( $(date +%s) - t ))s"
