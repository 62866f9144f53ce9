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
# The node stand-in gives the pod a kubeconfig with tokenFile, which pykube (kopf's preferred
# login) ignores: log in with the official client until the operator selects it itself.
shim='["python","-c","import sys, kopf; kopf.on.login()(kopf.login_via_client); from mlops_operator.cli import main; sys.exit(main())"]'
exec "$helm" "$action" mlops charts/mlops-operator --namespace mlops-system --create-namespace \
  --set mlflow.trackingUri="$mlflow" --set-json "command=$shim" --wait --timeout 5m "$@"
