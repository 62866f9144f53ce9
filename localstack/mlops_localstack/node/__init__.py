"""Node stand-in: a small kubelet + container runtime that runs pods as local processes.

A dev/test tool for the local stack (DESIGN.md §5); on a real cluster the real kubelet runs the
images. See ``docs/node-standin.md``.
"""

from .cli import main
from .runtime import ImageEntrypoint
from .standin import NodeStandIn

__all__ = ["ImageEntrypoint", "NodeStandIn", "main"]
