#!/usr/bin/env bash
# Builds the real control plane the operator's tests run against, through the Go module proxy,
# into $BERTH_TOOLS_DIR/bin (outside the repository): etcd 3.6 (a wrapper main over etcdmain),
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubelet and kubectl 1.36
# (wrapper modules; k8s.io/kubernetes needs every staging module mapped to its v0.36.x release by
# replace lines). Idempotent: a binary whose recorded version
# matches is kept. Cold, on 2 cores, this takes a while; GOCACHE makes later builds quick.
set -euo pipefail

tools_dir="${BERTH_TOOLS_DIR:-$HOME/.cache/berth-tools}"
bin_dir="$tools_dir/bin"
work_dir="$tools_dir/src"
mkdir -p "$bin_dir" "$work_dir"

etcd_version=v3.6.16
kubernetes_version=v1.36.3
staging_version=v0.36.3

up_to_date() { [ -x "$bin_dir/$1" ] && [ "$(cat "$bin_dir/.$1.version" 2>/dev/null)" = "$2" ]; }
record() { echo "$2" > "$bin_dir/.$1.version"; }

if ! up_to_date etcd "$etcd_version"; then
  echo "build: etcd $etcd_version"
  dir="$work_dir/etcd"
  mkdir -p "$dir"
  cat > "$dir/go.mod" <<GOMOD
module local/berth-etcd

go 1.26

require go.etcd.io/etcd/server/v3 $etcd_version
GOMOD
  cat > "$dir/main.go" <<'GO'
// Command etcd is etcd's own entry point, built as a module of its own.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && go mod tidy && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd" .)
  record etcd "$etcd_version"
fi

# One wrapper module builds every Kubernetes component; main.go of each is its upstream command
# constructor behind component-base's cli.Run.
constructor() {
  case $1 in
    kube-apiserver) echo 'app.NewAPIServerCommand()' ;;
    kube-controller-manager) echo 'app.NewControllerManagerCommand()' ;;
    kube-scheduler) echo 'app.NewSchedulerCommand()' ;;
    kube-proxy) echo 'app.NewProxyCommand()' ;;
    kubelet) echo 'app.NewKubeletCommand(context.Background())' ;;
  esac
}
components=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)
for component in "${components[@]}"; do
  if up_to_date "$component" "$kubernetes_version"; then continue; fi
  echo "build: $component $kubernetes_version"
  started=$(date +%s)
  dir="$work_dir/kubernetes"
  mkdir -p "$dir/cmd/$component"
  if [ ! -f "$dir/go.mod" ] || ! grep -q "k8s.io/kubernetes $kubernetes_version" "$dir/go.mod"; then
    {
      printf 'module local/berth-kubernetes\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\n' "$kubernetes_version"
      # k8s.io/kubernetes requires its staging modules at v0.0.0; map each to its release.
      gomod=$(go mod download -json "k8s.io/kubernetes@$kubernetes_version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
      grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk '{print $1}' | sort -u |
        while read -r module; do echo "replace $module => $module $staging_version"; done
      grep -E '^godebug' "$gomod" || true
    } > "$dir/go.mod"
  fi
  context_import=''
  [ "$component" = kubelet ] && context_import='"context"'
  cat > "$dir/cmd/$component/main.go" <<GO
// Command $component is the upstream command, built as a module of its own.
package main

import (
	$context_import
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/$component/app"
)

func main() { os.Exit(cli.Run($(constructor "$component"))) }
GO
  version_flags="-X k8s.io/component-base/version.gitVersion=$kubernetes_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 -X k8s.io/component-base/version.gitTreeState=clean"
  (cd "$dir" && gofmt -w "cmd/$component/main.go" && go mod tidy && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $version_flags" -o "$bin_dir/$component" "./cmd/$component")
  record "$component" "$kubernetes_version"
  echo "build: $component took $(( $(date +%s) - started ))s"
done

if ! up_to_date kubectl "$staging_version"; then
  echo "build: kubectl $staging_version"
  dir="$work_dir/kubectl"
  mkdir -p "$dir"
  printf 'module local/berth-kubectl\n\ngo 1.26\n\nrequire k8s.io/kubectl %s\n' "$staging_version" > "$dir/go.mod"
  cat > "$dir/main.go" <<'GO'
// Command kubectl is the upstream kubectl command, built as a module of its own.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
GO
  version_flags="-X k8s.io/component-base/version.gitVersion=$kubernetes_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36"
  (cd "$dir" && go mod tidy && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $version_flags" -o "$bin_dir/kubectl" .)
  record kubectl "$staging_version"
fi

echo "build: control plane ready in $bin_dir"
