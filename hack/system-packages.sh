#!/usr/bin/env bash
# The few system programs the local stack takes from the distribution: Alertmanager (and amtool)
# and promtool (Debian's packages prometheus-alertmanager and prometheus; the Prometheus server
# itself is built with Kubernetes service discovery from the Go module proxy instead, see
# localstack/mlops_localstack/prometheus.py). Installs what is missing with apt-get (sudo when
# not root); elsewhere it says what to install.
set -euo pipefail
need=()
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null \
  || need+=(prometheus-alertmanager)
command -v promtool >/dev/null || need+=(prometheus)
((${#need[@]})) || exit 0
if ! command -v apt-get >/dev/null; then
  echo "missing: ${need[*]} (Debian package names); install them, or set MLOPS_ALERTMANAGER_BIN / MLOPS_PROMTOOL" >&2
  exit 1
fi
sudo=""
[[ $(id -u) == 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
