"""The console script turns a usage error into one line and exit code 2 (no server needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["replay", "--bogus"], "No such option: --bogus"),
        (["inbox", "prune"], "Missing option '--older-than'"),
        (["nosuch"], "No such command 'nosuch'"),
        # Not markup, not a terminal control: shown as typed, escapes written out.
        (["status", "--x[/y]\x1b]0;t\x07"], "No such option: --x[/y]\\x1b]0;t\\x07"),
    ],
)
def test_usage_error_is_one_line_and_exit_code_2(args: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "booking_sessions.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and says in lines[0]
    assert "--help" in lines[0]


def test_help_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "booking_sessions.cli", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for command in ("run", "migrate", "demo", "replay", "dlq", "status", "inbox", "outbox", "asyncapi"):
        assert command in done.stdout
