"""Regenerate the Open Inference Protocol gRPC stubs from ``open_inference.proto``.

``python -m mlops_runtime.oip.generate [OUT_DIR]`` (needs the ``dev`` extra's grpcio-tools). The
generated messages, ``open_inference_pb2.py`` and ``open_inference_pb2.pyi``, are committed beside the .proto so that the runtime image needs no code generator; a unit test
regenerates them into a temporary directory and fails when they differ from the committed ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent.parent  # serving-runtime/, so imports read mlops_runtime.oip...
PROTO = "mlops_runtime/oip/open_inference.proto"
GENERATED = ("open_inference_pb2.py", "open_inference_pb2.pyi")


def generate(out_root: Path = SOURCE_ROOT) -> list[Path]:
    """Run protoc (grpcio-tools) on the .proto; return the paths written under ``out_root``.

    No ``_pb2_grpc`` module: the service lives under the protocol's name, not the .proto's
    package, so servers and clients take its methods from the descriptor
    (:func:`mlops_runtime.oip.methods`)."""
    from grpc_tools import protoc  # dev extra only

    out_root.mkdir(parents=True, exist_ok=True)
    args = ["grpc_tools.protoc", f"-I{SOURCE_ROOT}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", PROTO]  # fmt: skip
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return [out_root / "mlops_runtime" / "oip" / name for name in GENERATED]


if __name__ == "__main__":
    written = generate(Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE_ROOT)
    print("\n".join(str(p) for p in written))
