"""requirements.lock and requirements-dev.lock: every dependency pinned with hashes, in step with pyproject.toml,
and what the Makefile installs (reproducible installs: the image and CI run exactly the locked files)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# One requirement of a lock: `name==version \` then its `--hash=sha256:...` lines (and `# via` comments).
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M)


def pins(lock: str) -> dict[str, str]:
    """Name (canonical) to version; fails on any requirement line that is not pinned with hashes."""
    text = (ROOT / lock).read_text()
    found: dict[str, str] = {canonicalize_name(m.group(1)): m.group(2) for m in ENTRY.finditer(text)}
    requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert len(requirement_lines) == len(found), "a requirement without == and --hash lines"
    return found


def declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [*project["dependencies"], *(d for extra in extras for d in project["optional-dependencies"][extra])]
    return {canonicalize_name(Requirement(d).name) for d in names}


@pytest.mark.parametrize(("lock", "extras"), [("requirements.lock", ()), ("requirements-dev.lock", ("dev",))])
def test_each_lock_pins_every_declared_dependency_with_hashes(lock: str, extras: tuple[str, ...]) -> None:
    locked = pins(lock)
    assert declared(*extras) <= set(locked)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in map(Requirement, [*project["dependencies"]]):
        assert dependency.specifier.contains(locked[canonicalize_name(dependency.name)]), dependency


def test_the_image_runs_the_versions_the_tests_ran() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {name: dev[name] for name in runtime} == runtime
    assert not (declared("dev") - declared()) & set(runtime), "a dev-only tool in the image's lock"


def test_make_installs_the_dev_lock_with_hashes_then_the_project_alone() -> None:
    makefile = (ROOT / "Makefile").read_text()
    stamp = makefile[makefile.index("$(STAMP): pyproject.toml $(DEV_LOCK)") :]
    assert re.search(r"--require-hashes -r \$\(DEV_LOCK\)\n\t\$\(PIP\) --no-deps -e \.\n", stamp)
    assert re.search(r"^lock: ", makefile, flags=re.M) and "--generate-hashes" in makefile
