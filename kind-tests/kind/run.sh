#!/usr/bin/env bash
# The end-to-end suite on two real clusters: kind clusters "aps" (producer facility) and
# "alcf" (consumer facility), each with two gateway worker nodes, the operator installed by
# its Helm chart, and a Gateway "dtn". Relays run in real pods (hostNetwork) on the kind
# nodes; the shared "kind" container network plays the WAN; the producer and consumer
# applications run in the test process on the host, reaching the relays over that network.
#
#   kind-tests/kind/run.sh [--keep] [--reuse] [-- NEXTEST ARGS...]
#     --keep    leave both clusters running (prints how to reach them)
#     --reuse   use existing clusters of the same names instead of recreating them
#
# Needs: kind (v0.20+, for per-node labels), docker or podman (KIND_EXPERIMENTAL_PROVIDER=
# podman), kubectl, cargo + cargo-nextest, network access for the relay images. It cannot run
# on the project's CI machines (no container runtime there); the embedded facilities run the
# same suite instead (kind-tests/run-tests.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
keep=false reuse=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --keep) keep=true ;;
    --reuse) reuse=true ;;
    --) shift; break ;;
    *) echo "usage: $0 [--keep] [--reuse] [-- NEXTEST ARGS...]" >&2; exit 2 ;;
  esac
  shift
done
for tool in kind kubectl cargo; do
  command -v $tool >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done
engine=$(command -v docker || command -v podman || true)
[[ -n $engine ]] || { echo "run.sh: docker or podman is required" >&2; exit 1; }
helm=$(kind-tests/helm.sh)
version=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' charts/scistream-operator/Chart.yaml)
images=("ghcr.io/scistream/scistream-operator:$version" "ghcr.io/scistream/s2ds:$version")
work=${SCISTREAM_KIND_DIR:-/var/tmp/scistream-kind}
mkdir -p "$work"

kind-tests/build-images.sh --no-demo
"$engine" save -o "$work/images.tar" "${images[@]}"

for facility in aps alcf; do
  if $reuse && kind get clusters | grep -qx $facility; then
    echo "=== reusing cluster $facility"
  else
    kind delete cluster --name $facility >/dev/null 2>&1 || true
    kind create cluster --config kind-tests/kind/$facility.yaml --wait 120s
  fi
  kind load image-archive "$work/images.tar" --name $facility
  kind get kubeconfig --name $facility > "$work/$facility.kubeconfig"
  k=(kubectl --kubeconfig "$work/$facility.kubeconfig")
  # The operator, as a facility installs it: the control endpoint on a NodePort that the
  # cluster config publishes on the host's loopback, its certificate valid for 127.0.0.1, and
  # the Gateway "dtn" over the two worker nodes. kind nodes have only an InternalIP, on the
  # shared kind network: it is both their WAN and their LAN address.
  "$helm" upgrade --install scistream charts/scistream-operator \
    --kubeconfig "$work/$facility.kubeconfig" -n scistream-system --create-namespace \
    --set image.pullPolicy=Never \
    --set controlEndpoint.service.type=NodePort --set controlEndpoint.service.nodePort=30500 \
    --set 'controlEndpoint.tls.ipAddresses={127.0.0.1}' \
    --set controlEndpoint.legacy.gateway=dtn \
    --set defaultGateway.enabled=true --set defaultGateway.portRange.end=5199 \
    --set defaultGateway.addresses.wan.nodeAddressType=InternalIP \
    --set defaultGateway.addresses.lan.nodeAddressType=InternalIP \
    --wait --timeout 5m
  "${k[@]}" create namespace science --dry-run=client -o yaml | "${k[@]}" apply -f -
  "${k[@]}" label --overwrite namespace science pod-security.kubernetes.io/enforce=restricted
  "${k[@]}" wait --for=condition=Ready gateway/dtn --timeout=120s
done

# The host's address on the kind network: relays reach the producer application there.
app=$("$engine" network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' 2>/dev/null \
  | tr ' ' '\n' | grep -m1 '\.' || true)
[[ -n $app ]] || { echo "run.sh: cannot find the kind network's gateway address" >&2; exit 1; }

export SCISTREAM_E2E_KUBECONFIG_PROD=$work/aps.kubeconfig
export SCISTREAM_E2E_KUBECONFIG_CONS=$work/alcf.kubeconfig
export SCISTREAM_E2E_CONTROL_PROD=127.0.0.1:15000
export SCISTREAM_E2E_CONTROL_CONS=127.0.0.1:15001
export SCISTREAM_E2E_CONTROL_SECRET=scistream-system/scistream-operator-control-tls
export SCISTREAM_E2E_APP_ADDRESS=$app
status=0
# One scenario at a time: they share the two clusters, and each checks that its release
# leaves the Gateways holding nothing.
cargo nextest run -p scistream-e2e --locked --profile ci --test-threads 1 "$@" || status=$?

if $keep; then
  cat <<EOF
Both facilities are running:
  kubectl --kubeconfig $work/aps.kubeconfig get gateways,streamrequests -A
  kubectl --kubeconfig $work/alcf.kubeconfig get gateways,streamrequests -A
Delete them with: kind delete cluster --name aps; kind delete cluster --name alcf
EOF
else
  kind delete cluster --name aps
  kind delete cluster --name alcf
fi
exit $status
