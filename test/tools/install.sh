#!/usr/bin/env bash
# Installs every tool the test suite drives, outside the repository:
#   Debian packages: skopeo, containerd (with runc), podman, docker-registry (CNCF distribution
#                    2.8), curl, wrk and haproxy (benchmarks); for the real test cluster: the CNI plugins,
#                    iptables, iproute2, conntrack and busybox-static (the shell in test images);
#                    apache2-utils (htpasswd for an authenticating upstream), openssl and python3
#                    (strict certificate verification)
#   Go modules, built through the module proxy into $BERTH_TOOLS_DIR/bin:
#     crane, oras, the OCI distribution-spec conformance suite, crictl (containerd's CRI),
#     CoreDNS (the test cluster's DNS), versitygw (the S3 server the S3 driver is tested
#     against; Apache-2.0, posix backend), helm (v3; the chart in deploy/helm/berth), the
#     sandbox ("pause") binary from test/tools/images, and (build-control-plane.sh) etcd,
#     kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubelet and kubectl
# Idempotent: what is already there at the pinned version is kept.
set -euo pipefail

tools_dir="${BERTH_TOOLS_DIR:-$HOME/.cache/berth-tools}"
bin_dir="$tools_dir/bin"
mkdir -p "$bin_dir"

debian_packages=(skopeo containerd runc podman docker-registry curl wrk
  containernetworking-plugins iptables iproute2 conntrack busybox-static
  apache2-utils openssl python3 haproxy)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# name=module@version; the binary is rebuilt when the recorded version differs.
go_tools=(
  "crane=github.com/google/go-containerregistry/cmd/crane@v0.22.1"
  "oras=oras.land/oras/cmd/oras@v1.3.6"
  "conformance=github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"
  "crictl=sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0"
  "coredns=github.com/coredns/coredns@v1.15.0"
  "versitygw=github.com/versity/versitygw/cmd/versitygw@v1.8.0"
  "helm=helm.sh/helm/v3/cmd/helm@v3.22.0"
)
for entry in "${go_tools[@]}"; do
  name="${entry%%=*}"
  module="${entry#*=}"
  stamp="$bin_dir/.$name.version"
  if [ -x "$bin_dir/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$module" ]; then
    continue
  fi
  echo "install: go install $module"
  GOBIN="$bin_dir" CGO_ENABLED=0 go install "$module"
  echo "$module" > "$stamp"
done

# The test cluster's sandbox container: a static binary of this repository's own.
pause_source="$(cd "$(dirname "$0")/images/pause" && pwd)"
pause_stamp="$(sha256sum "$pause_source/main.go" "$pause_source/go.mod" | sha256sum | cut -c1-16)"
if [ ! -x "$bin_dir/pause" ] || [ "$(cat "$bin_dir/.pause.version" 2>/dev/null)" != "$pause_stamp" ]; then
  echo "install: build pause"
  (cd "$pause_source" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin_dir/pause" .)
  echo "$pause_stamp" > "$bin_dir/.pause.version"
fi

# The Kubernetes components for the operator's tests and the real cluster (about 15 minutes
# cold on 2 cores, most of it the kubelet).
bash "$(dirname "$0")/build-control-plane.sh"

echo "install: tools ready in $bin_dir"
