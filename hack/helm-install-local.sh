#!/usr/bin/env bash
# helm install the chart onto the running local stack (`mlops-operator local up --no-operator`),
# the way the chart tests do: the kubeconfig and MLflow URI come from the stack's state.json.
#   hack/helm-install-local.sh [install|upgrade|uninstall] [extra helm args...]
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-install}
shift || true
state="${MLOPS_LOCAL_DIR:-$HOME/.local/state/mlops-operator/local}/state.json"
[ -f "$state" ] || { echo "no local stack state at $state: mlops-operator local up --no-operator" >&2; exit 1; }
py=.venv/bin/python
KUBECONFIG=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["kubeconfig"])' "$state")
mlflow=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("mlflowTrackingUri") or "")' "$state")
export KUBECONFIG
helm="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin/helm"
[ -x "$helm" ] || { echo "helm not found: make helm" >&2; exit 1; }
if [ "$action" = uninstall ]; then
  exec "$helm" uninstall mlops --namespace mlops-system "$@"
fi
# the node stand-in runs the image's entrypoint (mlops-operator run) from the project venv
exec "$helm" "$action" mlops charts/mlops-operator --namespace mlops-system --create-namespace \
  --set mlflow.trackingUri="$mlflow" --wait --timeout 5m "$@"
