"""The structure rules of docs/architecture.md: the operator never depends on the local stack,
and the operator wheel does not carry it."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OPERATOR = REPO / "operator" / "mlops_operator"
#: the one place allowed to import the local stack: `mlops-operator local ...`, lazily
LAZY_ENTRY = ("cli.py", "_local")


def _imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """Every imported module name with the node importing it (top level and inside functions)."""
    found: list[tuple[str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node))
    return found


def _enclosing_function(tree: ast.AST, target: ast.AST) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                child is target for child in ast.walk(node)):
            return node.name
    return None


def test_no_operator_module_imports_the_local_stack() -> None:
    offenders = []
    for path in sorted(OPERATOR.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for module, node in _imports(tree):
            if module.split(".")[0] != "mlops_localstack":
                continue
            where = (path.name, _enclosing_function(tree, node))
            if where != LAZY_ENTRY:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {module}")
    assert offenders == []


def test_importing_and_registering_every_operator_module_loads_no_local_stack() -> None:
    """Every module imported (the handlers register the controllers), CRDs generated: still no
    ``mlops_localstack`` module in the process."""
    code = """
import pkgutil, sys, importlib, io, contextlib
import mlops_operator, mlops_operator.handlers
for mod in pkgutil.walk_packages(mlops_operator.__path__, "mlops_operator."):
    importlib.import_module(mod.name)
from mlops_operator import cli
from mlops_operator.controller import CONTROLLERS
with contextlib.redirect_stdout(io.StringIO()):
    cli.main(["crds"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "mlops_localstack")
print(sorted(CONTROLLERS), loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['ModelDeployment', 'ModelVersion', 'TrainingRun'] []", out.stdout + out.stderr


def test_local_subcommand_without_the_local_stack_says_how_to_install_it() -> None:
    code = """
import sys
sys.modules["mlops_localstack"] = None  # as if the dev extra were not installed
from mlops_operator import cli
sys.exit(cli.main(["local", "status"]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "mlops-operator[dev]" in out.stderr


@pytest.mark.slow
def test_operator_wheel_has_no_local_stack(tmp_path: Path) -> None:
    """The wheel the images install: the operator and the runtime, not the stand-in."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = tmp_path.glob("mlops_operator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("mlops_operator/handlers/") for n in names)
    assert any(n.startswith("mlops_runtime/") for n in names)
    assert not [n for n in names if n.startswith("mlops_localstack/") or "standin" in n]
