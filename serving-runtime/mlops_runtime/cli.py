"""``mlops-runtime``: ``serve`` a model, run the ``router``, ``train`` (the reference trainer) or
``evaluate`` a model on a holdout set (the default validation Job)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve one MLflow model over the Open Inference Protocol")
    p.add_argument("--model-uri", help="models:/name/version, models:/name@alias or a directory")
    p.add_argument("--model-name", help="name under /v2/models/ (default: registered name)")
    p.add_argument("--variant", help="variant label for metrics")
    p.add_argument("--host", help="bind address (default 0.0.0.0, or MLOPS_RUNTIME_HOST)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8081; 0 = no gRPC)")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-batch-wait-ms", type=float)
    p.add_argument("--log-level")


def _router_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("router", help="split traffic between model variants")
    p.add_argument("--config", help="router config file (YAML/JSON), reloaded on change")
    p.add_argument("--configmap", help="namespace/name of a ConfigMap holding the config")
    p.add_argument("--host", help="bind address")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--log-level")


def _overrides(args: argparse.Namespace, skip: set[str]) -> dict[str, object]:
    return {k: v for k, v in vars(args).items() if v is not None and k not in skip}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlops-runtime`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from mlops_runtime.train import main as train_main  # the reference trainer

        return int(train_main(argv[1:]) or 0)
    if argv and argv[0] == "evaluate":
        from mlops_runtime.evaluate import main as evaluate_main  # the holdout evaluator

        return int(evaluate_main(argv[1:], prog="mlops-runtime evaluate") or 0)

    parser = argparse.ArgumentParser(prog="mlops-runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _router_parser(sub)
    sub.add_parser("train", help="run the reference trainer (see mlops_runtime.train)")
    sub.add_parser("evaluate", help="evaluate a model on a holdout set (mlops_runtime.evaluate)")
    args = parser.parse_args(argv)

    if args.command == "serve":
        from mlops_runtime.server import serve
        from mlops_runtime.settings import RuntimeSettings

        serve(RuntimeSettings(**_overrides(args, {"command"})))
    elif args.command == "router":
        from mlops_runtime.router.server import serve_router
        from mlops_runtime.router.settings import RouterSettings

        serve_router(RouterSettings(**_overrides(args, {"command"})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
