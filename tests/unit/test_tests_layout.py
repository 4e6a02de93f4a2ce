"""The tests' own house rules (issue 11): shared helpers live in helper modules, never in a test module that another
module imports, and no module under tests/ grows past 300 lines (STYLE.md: modules <= ~300 lines, tests too)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
MAX_LINES = 300


def modules() -> list[Path]:
    """Every Python module under tests/, in a stable order."""
    return sorted(TESTS.rglob("*.py"))


def package_of(path: Path) -> str:
    """The dotted package a module under the repository sits in: tests/unit/x.py -> ``tests.unit``."""
    return ".".join(path.relative_to(REPO).parent.parts)


def is_test_module(dotted: str) -> bool:
    """``tests.integration.test_faults`` is a test module; ``tests.integration.harness`` is not."""
    return dotted.rpartition(".")[2].startswith("test_")


def imported_test_modules(source: str, package: str) -> list[str]:
    """The test modules a module of ``package`` imports, as ``"line: module"``, whatever the spelling:
    ``from tests.x.test_y import z``, ``import tests.x.test_y``, ``from tests.x import test_y``, or relative."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: {alias.name}" for alias in node.names if is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the module's own package
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            if is_test_module(base):
                found.append(f"{node.lineno}: {base}")
            found += [f"{node.lineno}: {base}.{alias.name}" for alias in node.names if is_test_module(alias.name)]
    return found


def test_no_module_under_tests_imports_from_a_test_module() -> None:
    offenders = {
        str(path.relative_to(REPO)): found
        for path in modules()
        if (found := imported_test_modules(path.read_text(), package_of(path)))
    }
    assert offenders == {}, (
        "imports from test modules (move what they share to a helper module named for what it holds, as "
        f"tests/integration/harness.py or tests/unit/builders.py): {offenders}"
    )


def test_no_module_under_tests_is_over_300_lines() -> None:
    sizes = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in modules()}
    offenders = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert offenders == {}, f"modules over {MAX_LINES} lines (split them along the behaviours they test): {offenders}"


def test_the_rules_see_every_module_and_every_spelling() -> None:
    """The two rules above can fail: they read every module, and find each spelling of an import from a test
    module while letting a helper module's pass."""
    names = {str(path.relative_to(REPO)) for path in modules()}
    assert {"tests/conftest.py", "tests/unit/test_tests_layout.py", "tests/integration/harness.py"} <= names
    source = "\n".join(
        [
            "from tests.integration.test_faults import workload",
            "import tests.unit.test_wire",
            "from tests.integration import test_scenarios, harness",
            "from .test_replay import invalid",
            "from ..unit import test_decode",
            "from tests.integration.harness import query",
            "from . import bookings",
        ]
    )
    assert imported_test_modules(source, "tests.integration") == [
        "1: tests.integration.test_faults",
        "2: tests.unit.test_wire",
        "3: tests.integration.test_scenarios",
        "4: tests.integration.test_replay",
        "5: tests.unit.test_decode",
    ]
