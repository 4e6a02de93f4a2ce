"""A second Ctrl-C or SIGTERM while an operator's command closes its clients exits at once (ops/terminal.py ``run``):
the first cancels the command, whose clean-up may wait up to 15 s on a silent server (a newcomer's find: a second
Ctrl-C was ignored for those 15 s)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A command whose clean-up waits, as a client's close does on a silent broker.
COMMAND = """
import asyncio
from booking_sessions.ops import terminal

async def work():
    try:
        print("ready", flush=True)
        await asyncio.sleep(120)
    finally:
        print("closing", flush=True)
        await asyncio.sleep(120)

terminal.run(work, on_interrupt="; nothing was done")
"""


def stopped_twice(first: int, second: int, *, nohup: bool = False) -> tuple[int, str]:
    """COMMAND run, ``first`` sent once it is ready, then ``second`` once it closes: its exit code and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-c", COMMAND],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None,  # as nohup does
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        process.send_signal(first)
        if nohup:
            process.send_signal(signal.SIGTERM)  # delivered after the hangup: the command is stopped by this one
        # Two signals sent back to back may reach the process as one (a pending signal is not queued twice).
        assert process.stdout.readline() == b"closing\n"
        process.send_signal(second)
        _, stderr = process.communicate(timeout=30)  # not the 120 s of the clean-up
    finally:
        process.kill()
    return process.returncode, stderr.decode()


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated"), (signal.SIGHUP, 129, "hung up")],
)
def test_a_second_signal_exits_at_once(signum: int, code: int, said: str) -> None:
    returncode, stderr = stopped_twice(signum, signum)
    assert returncode == code
    assert " ".join(stderr.split()) == f"{said}; nothing was done; a second signal: exiting without closing the clients"


def test_a_hangup_ignored_by_nohup_stays_ignored() -> None:
    # SIGHUP stops a command as Ctrl-C does (a closed ssh session), unless it was ignored when the command started.
    returncode, stderr = stopped_twice(signal.SIGHUP, signal.SIGTERM, nohup=True)
    assert returncode == 143, stderr
    assert stderr.startswith("terminated")
