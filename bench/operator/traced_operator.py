"""``mlops-operator run`` under tracemalloc, for ``scale.py --trace-memory``.

Tracing starts before anything is imported, so module imports count too. ``kill -USR2 <pid>``
writes the live Python allocations grouped by top-level package (and the largest files) as JSON
to ``$MLOPS_TRACE_OUT``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tracemalloc

tracemalloc.start(1)


def _package(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1:]
        return rest[0].removesuffix(".py") if rest else filename
    if "mlops_operator" in parts:
        return "mlops_operator." + parts[parts.index("mlops_operator") + 1].removesuffix(".py")
    return "python stdlib" if "/lib/python" in filename else filename


def _dump(*_: object) -> None:
    snap = tracemalloc.take_snapshot()
    by_pkg: dict[str, int] = {}
    by_file: dict[str, int] = {}
    for stat in snap.statistics("filename"):
        name = stat.traceback[0].filename
        by_pkg[_package(name)] = by_pkg.get(_package(name), 0) + stat.size
        by_file[name] = stat.size
    top = dict(sorted(by_pkg.items(), key=lambda kv: -kv[1])[:25])
    files = dict(sorted(by_file.items(), key=lambda kv: -kv[1])[:15])
    out = {"traced_mb": tracemalloc.get_traced_memory()[0] / 2**20,
           "packages_mb": {k: v / 2**20 for k, v in top.items()},
           "files_mb": {k: v / 2**20 for k, v in files.items()}}
    with open(os.environ["MLOPS_TRACE_OUT"], "w") as fh:
        json.dump(out, fh, indent=1)


signal.signal(signal.SIGUSR2, _dump)

if __name__ == "__main__":
    from mlops_operator.cli import main

    sys.argv[0] = "mlops-operator"
    raise SystemExit(main())
