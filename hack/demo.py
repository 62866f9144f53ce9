"""The demo: `make demo` — the whole loop on the local stack.

Brings the local stack up (control plane, node stand-in, MLflow, Prometheus, Alertmanager, the
operator), then runs the closed loop of :mod:`mlops_localstack.loop` — train → promote → deploy
90/10 → normal traffic → drifted traffic → alert → retraining → validation → promotion → the
deployment rolls to the new champion — printing a timeline as it goes, and ends with
`kubectl get mlops -A` and the pipeline stage table. The stack stays up afterwards
(`mlops-operator local down` stops it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlops_localstack import stack
from mlops_localstack.cluster import Cluster
from mlops_localstack.loop import run_loop
from mlops_localstack.procs import LocalStackError


def main() -> int:
    state_dir = stack.default_state_dir()
    state = stack.read_state(state_dir)
    if not (state and state.get("ready") and stack.alive(int(state.get("pid", 0)))):
        print("demo: starting the local stack (the first run builds Kubernetes and Prometheus "
              "from Go: ~15 min)")
        try:
            state = stack.up_detached(state_dir, [])
        except LocalStackError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
    assert state is not None
    print(f"demo: Kubernetes {state['serverVersion']}, MLflow {state.get('mlflowTrackingUri')}, "
          f"Prometheus {state.get('prometheusUrl')}, Alertmanager {state.get('alertmanagerUrl')}")
    if not state.get("alertmanagerUrl"):
        print("demo: the loop needs Prometheus and Alertmanager in the stack", file=sys.stderr)
        return 1
    try:
        result = run_loop(state)
    except (TimeoutError, RuntimeError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    cluster = Cluster(Path(state["kubeconfig"]), kubectl_path=state["kubectl"], kind="local")
    print()
    print(cluster.kubectl("get", "mlops", "-A").stdout)
    from mlops_operator.stages import main as stages

    operator_metrics = state["components"]["operator"].split()[-1]
    stages(operator_metrics)
    total = result.timeline.rows[-1][0]
    print(f"\ndemo: the loop took {total:.0f}s; {len(result.retrains)} retraining run(s); "
          f"{sum(result.answers.values())} requests, {result.failed_requests} failed")
    print(f"\nexport KUBECONFIG={state['kubeconfig']}   # then: {state['kubectl']} get mlops -A")
    print("stop the stack with: .venv/bin/mlops-operator local down")
    return 0 if len(result.retrains) == 1 and result.failed_requests == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
