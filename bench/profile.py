"""``--profile DIR``: py-spy records each service process of a stage (collapsed stacks, for flame graphs)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

RATE_HZ = 250


def py_spy() -> str | None:
    beside_python = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)


@contextlib.contextmanager
def recording(directory: Path | None, stage: str, pids: Sequence[int]) -> Iterator[list[Path]]:
    """While inside, sample ``pids`` without pausing them; yields the output files (written on exit)."""
    exe = py_spy() if directory is not None else None
    if directory is None or exe is None:
        yield []
        return
    directory.mkdir(parents=True, exist_ok=True)
    outputs = [directory / f"{stage}-{i}.collapsed.txt" for i in range(len(pids))]
    spies = [
        subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(RATE_HZ),
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(pids, outputs, strict=True)
    ]
    time.sleep(0.5)  # attached before the stage starts
    try:
        yield outputs
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
