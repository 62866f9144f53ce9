"""Every third-party module the operator and the runtime import is declared by the root
``pyproject.toml`` (its dependencies or an extra), not merely installed as someone else's
dependency. Imports guarded by ``except ImportError`` are optional and exempt."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
FIRST_PARTY = {"mlops_operator", "mlops_runtime", "mlops_localstack"}
#: modules that come with a declared distribution by definition, not by accident
PART_OF = {"pydantic_core": "pydantic", "starlette": "fastapi", "uvloop": "uvicorn"}


def _guarded(tree: ast.AST) -> set[int]:
    """ids of import nodes inside a ``try`` that handles ImportError."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            "ImportError" in ast.unparse(h.type or ast.Name("BaseException")) or
            "ModuleNotFoundError" in ast.unparse(h.type or ast.Name("BaseException"))
            for h in node.handlers
        ):  # fmt: skip
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def imported(root: Path) -> dict[str, str]:
    """Top-level third-party module → one file importing it (unguarded)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = _guarded(tree)
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra != "dev":
            reqs += items
    return {_norm(re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0]) for r in reqs}


def test_every_import_of_the_operator_and_runtime_is_declared() -> None:
    names = declared()
    dists = packages_distributions()
    missing = {}
    modules = {**imported(REPO / "operator" / "mlops_operator"),
               **imported(REPO / "serving-runtime" / "mlops_runtime")}  # fmt: skip
    modules.pop("grpc_tools", None)  # oip/generate.py: the dev-only stub generator
    for module, where in modules.items():
        providers = {_norm(d) for d in dists.get(module, [])} | {_norm(PART_OF.get(module, ""))}
        if not providers & names:
            missing[module] = where
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
