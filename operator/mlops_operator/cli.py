"""``mlops-operator``: run the operator, print the CRDs, drive the local stack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-operator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace or glob (repeatable); default: MLOPS_NAMESPACES, "
                       "else all")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--liveness", default=None,
                     help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")

    crds = sub.add_parser("crds", help="print the CRDs (generated from the API models)")
    crds.add_argument("--out", type=Path, default=None, help="write one file per CRD here")
    crds.add_argument("--check", action="store_true",
                      help="exit 1 when the files in --out differ from the generated CRDs")

    stages = sub.add_parser("stages", help="pipeline stages: runs, success rate, p50/avg duration")
    stages.add_argument("--url", default=None, help="Prometheus base URL, or an operator's "
                        "/metrics URL (default: MLOPS_PROMETHEUS_URL)")
    stages.add_argument("--window", default=None, help="only the last WINDOW, e.g. 1h (Prometheus)")
    stages.add_argument("--json", action="store_true", help="JSON instead of the table")

    local = sub.add_parser("local", help="the local stack (control plane, node, MLflow, operator)")
    lsub = local.add_subparsers(dest="action", required=True)
    for name, text in (("up", "start it"), ("down", "stop it"), ("status", "show it"),
                       ("build", "build the control-plane binaries from the Go module proxy")):
        a = lsub.add_parser(name, help=text)
        if name != "build":
            a.add_argument("--state-dir", type=Path, default=None)
        if name == "up":
            a.add_argument("--foreground", action="store_true",
                           help="supervise in this process until Ctrl-C")
            a.add_argument("--no-operator", action="store_true")
            a.add_argument("--no-mlflow", action="store_true")
            a.add_argument("--no-node", action="store_true")
            a.add_argument("--no-prometheus", action="store_true")
    return p


def _local(args: argparse.Namespace) -> int:
    try:  # the local stack is its own package (the ``dev`` extra); never imported otherwise
        from mlops_localstack import stack
        from mlops_localstack.procs import LocalStackError
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("mlops_localstack"):
            print("error: `mlops-operator local` needs the local stack: "
                  "pip install 'mlops-operator[dev]'", file=sys.stderr)
            return 2
        raise

    if args.action == "build":
        from mlops_localstack.binaries import ensure_binaries

        b = ensure_binaries()
        print(f"etcd: {b.etcd}\nkube-apiserver: {b.kube_apiserver}\n"
              f"kube-controller-manager: {b.kube_controller_manager}\nkubectl: {b.kubectl}\n"
              f"server version: {b.server_version()}")
        return 0
    state_dir = args.state_dir or stack.default_state_dir()
    try:
        if args.action == "up":
            extra = [f for f, on in (("--no-operator", args.no_operator),
                                     ("--no-mlflow", args.no_mlflow),
                                     ("--no-node", args.no_node),
                                     ("--no-prometheus", args.no_prometheus)) if on]
            if args.foreground:
                st = stack.LocalStack(state_dir, with_node=not args.no_node,
                                      with_mlflow=not args.no_mlflow,
                                      with_operator=not args.no_operator,
                                      with_prometheus=not args.no_prometheus)
                st.run_forever()
                return 0
            state = stack.up_detached(state_dir, extra)
            print(f"local stack up (Kubernetes {state.get('serverVersion')}):")
            for name, where in state.get("components", {}).items():
                print(f"  {name:14} {where}")
            print(f"\n  export KUBECONFIG={state['kubeconfig']}")
            if state.get("kubectl"):
                print(f"  alias kubectl={state['kubectl']}")
            if state.get("mlflowTrackingUri"):
                print(f"  export MLFLOW_TRACKING_URI={state['mlflowTrackingUri']}")
            if state.get("prometheusUrl"):
                print(f"  export MLOPS_PROMETHEUS_URL={state['prometheusUrl']}")
            print("\nstop it with: mlops-operator local down")
            return 0
        if args.action == "down":
            print("stopped" if stack.down(state_dir) else "no local stack was running")
            return 0
        state = stack.read_state(state_dir)
        if not state or not stack.alive(int(state.get("pid", 0))):
            print("no local stack is running")
            return 1
        print(json.dumps(state, indent=2))
        return 0
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        from .runner import run

        run(namespaces=args.namespace or None, verbose=args.verbose, liveness=args.liveness,
            all_namespaces=args.all_namespaces)
        return 0
    if args.command == "stages":
        from .stages import main as stages_main

        return int(stages_main(args.url, args.window, args.json) or 0)
    if args.command == "crds":
        from . import crdgen

        argv2 = (["--check"] if args.check else []) + ([str(args.out)] if args.out else [])
        return int(crdgen.main(argv2) or 0)
    return _local(args)


if __name__ == "__main__":
    sys.exit(main())
