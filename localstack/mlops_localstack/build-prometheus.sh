#!/usr/bin/env bash
# Build Prometheus from the Go module proxy and cache it in
# $MLOPS_CACHE_DIR/prometheus/<version>/prometheus (default ~/.cache/mlops-operator).
#
# Why not Debian's `prometheus` package: Debian builds it without Kubernetes service discovery
# (its 2.42 rejects `kubernetes_sd_configs`: "field kubernetes_sd_configs not found"), and the
# local stack discovers pods exactly as on a cluster.
#
# Prometheus 3.x is published as module versions v0.3xx.y (v3.5.0 -> v0.305.0). Some releases
# carry replace directives, so `go install ...@version` fails like kubernetes' does; we build
# from a throw-away wrapper module that requires the release and copies its replace lines.
# The web UI's built assets are not in the module; the HTTP API (/api/v1/*, /-/ready,
# /-/reload) is all the stack needs.
set -euo pipefail

PROM_VERSION="${MLOPS_PROMETHEUS_VERSION:-v3.5.0}"
CACHE_ROOT="${MLOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator}"
OUT="$CACHE_ROOT/prometheus/$PROM_VERSION"
WORK="$CACHE_ROOT/build"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

mkdir -p "$OUT" "$WORK"
exec 9>"$WORK/.prometheus.lock"
flock 9
[[ -x "$OUT/prometheus" ]] && { echo "$OUT/prometheus"; exit 0; }

major="${PROM_VERSION#v}"; major="${major%%.*}"
rest="${PROM_VERSION#v*.}"
minor="${rest%%.*}"; patch="${rest#*.}"
module_version="v0.$((major * 100 + minor)).$patch"   # v3.5.0 -> v0.305.0
start=$(date +%s)
echo ">> building prometheus $PROM_VERSION (module $module_version)" >&2
dir="$WORK/prometheus-$PROM_VERSION"
mkdir -p "$dir"
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

import _ "github.com/prometheus/prometheus/cmd/prometheus"
GO
go mod tidy -e >/dev/null
go build -ldflags "-s -w \
  -X github.com/prometheus/common/version.Version=${PROM_VERSION#v} \
  -X github.com/prometheus/common/version.Branch=release \
  -X github.com/prometheus/common/version.BuildUser=mlops-localstack \
  -X github.com/prometheus/common/version.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)" \
  -o "$OUT/prometheus.tmp" github.com/prometheus/prometheus/cmd/prometheus
mv "$OUT/prometheus.tmp" "$OUT/prometheus"
echo ">> prometheus in $OUT ($(( $(date +%s) - start ))s)" >&2
echo "$OUT/prometheus"
