"""``python -m mlops_localstack.node``: run the node stand-in in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .ipam import LoopbackAliases
from .standin import NodeStandIn


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops_localstack.node --kubeconfig K --workdir D``."""
    parser = argparse.ArgumentParser(
        prog="python -m mlops_localstack.node",
        description="Run the local node stand-in (kubelet + container runtime as local processes).",
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--name", default="mlops-local-node")
    parser.add_argument("--python-prefix", type=Path, default=None)
    parser.add_argument("--address-mode", choices=["auto", "alias", "loopback"], default=None,
                        help="pod addresses: /32 aliases on lo (EndpointSlices work; needs "
                        "CAP_NET_ADMIN) or 127.x (no privileges, the default); auto picks alias when possible")
    parser.add_argument("--ip-range", default=None,
                        help="pod address range (default 198.18.0.0/16 or 127.10.0.0/16)")
    parser.add_argument("--release-addresses", action="store_true",
                        help="remove leftover pod addresses (label lo:mlops) from lo and exit")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if args.release_addresses:
        print(f"removed {LoopbackAliases().flush_label()} address(es) from lo")
        return 0
    if not args.kubeconfig or not args.workdir:
        parser.error("--kubeconfig (or $KUBECONFIG) and --workdir are required")
    NodeStandIn(args.kubeconfig, args.workdir, name=args.name, python_prefix=args.python_prefix,
                address_mode=args.address_mode, ip_range=args.ip_range).run_forever()
    return 0
