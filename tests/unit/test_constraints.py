"""constraints.txt pins every Python dependency, and the test environment was installed with it."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCAL = {"mlops-localstack", "mlops-operator"}  # installed from this repository, editable


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate((REPO / "constraints.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name.strip() == name and Version(version), \
            f"constraints.txt:{number}: {line!r} is not name==version"  # fmt: skip
        assert canonicalize_name(name) not in pins, f"constraints.txt:{number}: {name} twice"
        pins[canonicalize_name(name)] = version
    return pins


def _requirements() -> list[Requirement]:
    out: list[Requirement] = []
    for pyproject in (REPO / "pyproject.toml", REPO / "localstack" / "pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        out += map(Requirement, project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            out += map(Requirement, extra)
    return [r for r in out if canonicalize_name(r.name) not in LOCAL]


def test_every_declared_dependency_is_pinned_within_its_declared_range() -> None:
    pins = _pins()
    requirements = _requirements()
    assert len(requirements) > 30  # both pyprojects were read, every extra included
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is declared but not pinned: run `make constraints`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside {req}"  # fmt: skip


def test_the_environment_running_the_tests_has_the_pinned_versions() -> None:
    """`make install` installs with -c constraints.txt: what runs here is what CI and the images
    get. A mismatch means the environment was installed some other way."""
    pins, wrong = _pins(), {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        pinned = pins.get(name)
        if pinned is not None and Version(dist.version) != Version(pinned):
            wrong[name] = f"{dist.version} installed, {pinned} pinned"
    assert not wrong, f"{wrong}: run `make install`"
