"""The ``mlops-runtime`` command line."""

from __future__ import annotations

import sys
import types

import pytest

from mlops_runtime import cli


def test_help_lists_the_subcommands(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("serve", "router", "train", "evaluate"))


def test_train_is_dispatched_lazily(monkeypatch) -> None:  # noqa: ANN001
    seen: list[list[str]] = []
    fake = types.ModuleType("mlops_runtime.train")
    fake.main = lambda argv: seen.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlops_runtime.train", fake)
    assert cli.main(["train", "--epochs", "3"]) == 0
    assert seen == [["--epochs", "3"]]


def test_serve_flags_override_the_environment(monkeypatch) -> None:  # noqa: ANN001
    captured = {}
    import mlops_runtime.server

    monkeypatch.setenv("MLOPS_RUNTIME_MODEL_URI", "models:/env/1")
    monkeypatch.setenv("MLOPS_RUNTIME_HOST", "127.0.0.9")
    monkeypatch.setattr(mlops_runtime.server, "serve", lambda s: captured.setdefault("s", s))
    assert cli.main(["serve", "--model-uri", "models:/flag@champion", "--port", "9000"]) == 0
    settings = captured["s"]
    assert settings.model_uri == "models:/flag@champion"
    assert settings.port == 9000 and settings.host == "127.0.0.9"


def test_router_settings_from_flags(monkeypatch) -> None:  # noqa: ANN001
    captured = {}
    import mlops_runtime.router.server

    monkeypatch.setattr(mlops_runtime.router.server, "serve_router",
                        lambda s: captured.setdefault("s", s))  # fmt: skip
    assert cli.main(["router", "--config", "/etc/router/router.yaml"]) == 0
    assert captured["s"].config == "/etc/router/router.yaml"
