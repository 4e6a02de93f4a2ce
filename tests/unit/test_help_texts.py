"""The help and the README say what the code does: lists derived from the contract's types, every operator command in
the README's table, and help paragraphs without hard line breaks (rich wraps each docstring line again)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import typer

from bench.cli import app as bench_app
from booking_sessions.cli import app
from models.errors import DlqReason
from models.events import SessionEventType

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def commands(group: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf command of the tree, as ('dlq list', command) (typer vendors click: matched by shape, not class)."""
    if hasattr(group, "commands"):
        for name, command in group.commands.items():
            yield from commands(command, f"{path} {name}".strip())
    else:
        yield path, group


ALL = [
    *commands(typer.main.get_command(app)),
    *(("bench " + p, c) for p, c in commands(typer.main.get_command(bench_app))),
]


@pytest.mark.parametrize(("path", "command"), ALL, ids=[p for p, _ in ALL])
def test_help_paragraphs_have_no_hard_line_breaks(path: str, command: Any) -> None:
    for paragraph in (command.help or "").split("\n\n"):
        if not paragraph.startswith("Examples:"):
            assert "\n" not in paragraph, f"{path}: {paragraph!r}"


def help_of(path: str) -> str:
    return dict(ALL)[path].help or ""


def test_dlq_help_names_every_reason_of_the_contract() -> None:
    for reason in get_args(DlqReason):
        assert reason in help_of("dlq list"), reason
    options = {p.name: p for p in dict(ALL)["dlq list"].params}
    assert "undecodable" in (getattr(options["reason"], "help", "") or "")


def test_republish_help_names_every_session_event_type() -> None:
    command = dict(ALL)["outbox republish"]
    type_help = next(getattr(p, "help", "") or "" for p in command.params if p.name == "type_")
    for kind in get_args(SessionEventType):
        assert kind in help_of("outbox republish") and kind in type_help, kind


def test_the_readme_lists_every_operators_command_and_every_type() -> None:
    operations = README.split("## Operations", 1)[1].split("###", 1)[0]
    for path, _ in ALL:
        if path.split()[0] in ("status", "replay", "outbox", "dlq", "inbox", "meeting"):
            assert f"| `{path}" in operations, path
    assert "`--type " + "|".join(get_args(SessionEventType)) + "`" in README


def test_bench_soak_points_at_bench_run() -> None:
    assert "`bench run`" in help_of("bench soak") and "as for `bench` " not in help_of("bench soak")
