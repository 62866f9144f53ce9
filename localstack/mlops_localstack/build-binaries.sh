#!/usr/bin/env bash
# Build the local stack's Go binaries from the Go module proxy into $MLOPS_CACHE_DIR (default
# ~/.cache/mlops-operator); idempotent (built binaries are kept).
#   build-binaries.sh              etcd, kube-apiserver, kube-controller-manager, kubectl into
#                                  k8s/<k8s-version>/ (`mlops-operator local build`)
#   build-binaries.sh prometheus   Prometheus into prometheus/<version>/
#                                  (`python -m mlops_localstack.prometheus build`)
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` fails because the release go.mod
# replaces every staging module with ./staging/src/k8s.io/<m>.  We build instead from a
# throw-away wrapper module that requires k8s.io/kubernetes and pins each of those staging
# modules (read from the release's own go.mod) to its published k8s.io/<m> v0.<minor>.<patch>.
# etcd's server module has replace directives too, so it gets a wrapper of its own.
#
# Prometheus: Debian's package is built without Kubernetes service discovery (its 2.42 rejects
# `kubernetes_sd_configs`), and the local stack discovers pods as on a cluster. Prometheus 3.x
# is published as module versions v0.3xx.y (v3.5.0 -> v0.305.0); some releases carry replace
# directives, so it is built from a wrapper module too, which copies them. The web UI's built
# assets are not in the module; the HTTP API (/api/v1/*, /-/ready, /-/reload) is what we use.
set -euo pipefail

K8S_VERSION="${MLOPS_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${MLOPS_ETCD_VERSION:-v3.6.6}"
PROM_VERSION="${MLOPS_PROMETHEUS_VERSION:-v3.5.0}"
CACHE_ROOT="${MLOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator}"
OUT="$CACHE_ROOT/k8s/$K8S_VERSION"
WORK="$CACHE_ROOT/build"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

mkdir -p "$OUT" "$WORK"
# one build at a time (parallel test sessions may all find the cache empty)
exec 9>"$WORK/.lock"
flock 9
staging_version="v0.${K8S_VERSION#v1.}"

build_k8s() {
  local dir="$WORK/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  cd "$dir"
  if [[ ! -f go.mod ]]; then
    go mod init mlops.dev/k8s-build >/dev/null 2>&1
  fi
  local modfile
  modfile="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  # every `k8s.io/<m> => ./staging/src/k8s.io/<m>` line of the release becomes a pin
  grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/' "$modfile" | awk '{print $1}' | while read -r m; do
    go mod edit -replace="$m=$m@$staging_version"
  done
  cat > tools.go <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy -e >/dev/null
  local gitmajor gitminor
  gitmajor="1"
  gitminor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  local ldflags="-s -w \
    -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
    -X k8s.io/component-base/version.gitMajor=$gitmajor \
    -X k8s.io/component-base/version.gitMinor=$gitminor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
    -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  for cmd in ${MLOPS_K8S_COMMANDS:-kube-apiserver kube-controller-manager kubectl}; do
    if [[ ! -x "$OUT/$cmd" ]]; then
      echo ">> building $cmd $K8S_VERSION" >&2
      go build -ldflags "$ldflags" -o "$OUT/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$OUT/$cmd.tmp" "$OUT/$cmd"
    fi
  done
}

build_etcd() {
  [[ -x "$OUT/etcd" ]] && return 0
  local dir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cd "$dir"
  [[ -f go.mod ]] || go mod init mlops.dev/etcd-build >/dev/null 2>&1
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  cat > tools.go <<GO
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy -e >/dev/null
  echo ">> building etcd $ETCD_VERSION" >&2
  go build -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$OUT/etcd.tmp" "$OUT/etcd"
}

build_prometheus() {
  local out="$CACHE_ROOT/prometheus/$PROM_VERSION"
  [[ -x "$out/prometheus" && -x "$out/promtool" ]] && return 0
  local major minor patch rest modfile module_version
  major="${PROM_VERSION#v}"; major="${major%%.*}"
  rest="${PROM_VERSION#v*.}"
  minor="${rest%%.*}"; patch="${rest#*.}"
  module_version="v0.$((major * 100 + minor)).$patch"   # v3.5.0 -> v0.305.0
  local dir="$WORK/prometheus-$PROM_VERSION"
  mkdir -p "$out" "$dir"
  cd "$dir"
  [[ -f go.mod ]] || go mod init mlops.dev/prometheus-build >/dev/null 2>&1
  modfile="$(go mod download -json "github.com/prometheus/prometheus@$module_version" \
    | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  go mod edit -require="github.com/prometheus/prometheus@$module_version"
  # `replace a v1 => b v2` (single or in a block) -> the same replace in the wrapper
  sed -n 's/^\(replace\)\{0,1\}[[:space:]]*\([^ ]*\) \([^ ]* \)\{0,1\}=> \([^ ]*\) \([^ ]*\)$/\2 \4@\5/p' "$modfile" \
    | while read -r old new; do go mod edit -replace="$old=$new"; done
  cat > tools.go <<GO
//go:build tools

package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
GO
  go mod tidy -e >/dev/null 2>&1
  echo ">> building prometheus $PROM_VERSION (module $module_version)" >&2
  go build -ldflags "-s -w \
    -X github.com/prometheus/common/version.Version=${PROM_VERSION#v} \
    -X github.com/prometheus/common/version.Branch=release \
    -X github.com/prometheus/common/version.BuildUser=mlops-localstack \
    -X github.com/prometheus/common/version.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)" \
    -o "$out/prometheus.tmp" github.com/prometheus/prometheus/cmd/prometheus
  mv "$out/prometheus.tmp" "$out/prometheus"
  # promtool of the same build (Debian's lacks Kubernetes service discovery, so its `check
  # config` rejects the local stack's config)
  go build -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROM_VERSION#v}" \
    -o "$out/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool
  mv "$out/promtool.tmp" "$out/promtool"
}

start=$(date +%s)
if [[ "${1:-}" == "prometheus" ]]; then
  build_prometheus
  echo ">> prometheus in $CACHE_ROOT/prometheus/$PROM_VERSION ($(( $(date +%s) - start ))s)" >&2
  exit 0
fi
build_etcd
build_k8s
echo ">> binaries in $OUT ($(( $(date +%s) - start ))s)" >&2
ls -la "$OUT" >&2
