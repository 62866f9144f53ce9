"""The demo loop on the local stack: `make demo`.

Brings the local stack up (control plane, node stand-in, MLflow, operator), applies the iris
TrainingRun, waits until it has trained, registered, validated and promoted the model, and
prints what a user would look at: `kubectl get mlops -A`, the MLflow runs and the registry
aliases. The stack stays up afterwards (`mlops-operator local down` stops it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlops_localstack import stack
from mlops_localstack.cluster import Cluster, poll
from mlops_localstack.procs import LocalStackError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "iris" / "trainingrun.yaml"


def _wait(what: str, check, timeout: float = 600.0):  # noqa: ANN001, ANN202
    try:
        return poll(what, check, timeout=timeout, interval=1.0)
    except AssertionError as exc:
        raise SystemExit(f"demo: {exc}") from exc


def main() -> int:
    state_dir = stack.default_state_dir()
    state = stack.read_state(state_dir)
    if not (state and state.get("ready") and stack.alive(int(state.get("pid", 0)))):
        print("demo: starting the local stack (first run builds Kubernetes from Go: ~10 min)")
        try:
            state = stack.up_detached(state_dir, [])
        except LocalStackError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
    assert state is not None
    cluster = Cluster(Path(state["kubeconfig"]), kubectl_path=state["kubectl"], kind="local")
    print(f"demo: Kubernetes {state['serverVersion']}, MLflow {state.get('mlflowTrackingUri')}")
    cluster.kubectl("apply", "-f", str(EXAMPLE))
    name = "iris-train-1"

    def tr_status() -> dict:
        out = cluster.kubectl("get", "tr", name, "-o", "json", check=False)
        return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}

    phase = _wait(
        "the TrainingRun to finish",
        lambda: tr_status().get("phase") in ("Succeeded", "Failed") and tr_status()["phase"],
    )
    print(f"demo: TrainingRun {name}: {phase}")
    if phase != "Succeeded":
        print(json.dumps(tr_status(), indent=2))
        return 1
    mv = _wait("the ModelVersion", lambda: (tr_status().get("modelVersion") or {}).get("name"))

    def mv_phase() -> str | None:
        out = cluster.kubectl("get", "mv", mv, "-o", "jsonpath={.status.phase}", check=False)
        return out.stdout.strip() or None

    final = _wait(
        "the ModelVersion to be decided",
        lambda: mv_phase() in ("Promoted", "Rejected", "Failed", "AwaitingApproval", "Validated")
        and mv_phase(),
    )
    print(f"demo: ModelVersion {mv}: {final}\n")
    print(cluster.kubectl("get", "mlops", "-A").stdout)
    uri = state.get("mlflowTrackingUri")
    if uri:
        code = (
            "import sys; from mlflow.tracking import MlflowClient; c = MlflowClient(sys.argv[1]);"
            "[print(f'run {r.info.run_id} {r.info.status} {r.data.metrics}') for e in "
            "c.search_experiments() for r in c.search_runs([e.experiment_id])];"
            "[print(f'model {m.name} aliases {m.aliases}') for m in c.search_registered_models()]"
        )
        subprocess.run([sys.executable, "-c", code, uri], check=False)
    print(f"\nexport KUBECONFIG={state['kubeconfig']}   # then: {state['kubectl']} get mlops -A")
    print("stop the stack with: .venv/bin/mlops-operator local down")
    return 0 if final == "Promoted" else 1


if __name__ == "__main__":
    sys.exit(main())
