"""`booking-sessions run` with nothing configured: the embedded pair and a throwaway meeting secret, never recorded;
with BOOKING_EMBEDDED_SERVERS=forbid (the production image) it stops instead."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

from tests.integration.harness import REPO, query, sigterm


def bare_env(**booking: str) -> dict[str, str]:
    """This process's environment without any BOOKING_* variable, plus ``booking``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BOOKING_")} | booking


async def read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str], timeout_s: float) -> re.Match[str]:
    """Lines from ``stream`` into ``seen`` until one matches ``pattern``; fails after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while line := (await stream.readline()).decode():
            seen.append(line)
            if found := re.search(pattern, line):
                return found
    raise AssertionError(f"no line matching {pattern!r} before the stream ended:\n{''.join(seen)[-3000:]}")


async def test_run_on_embedded_servers_makes_a_throwaway_secret_and_records_no_key() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "booking_sessions.cli",
        "run",
        env=bare_env(BOOKING_METRICS_PORT="0", BOOKING_LOG_LEVEL="INFO"),
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
    )
    seen: list[str] = []
    try:
        assert process.stderr is not None
        url = (await read_until(process.stderr, r"embedded PostgreSQL: (\S+)", seen, 120)).group(1)
        await read_until(process.stderr, r'"event": "service_started"', seen, 120)
        assert await query(url, "SELECT version FROM meeting_keys") == []  # a throwaway key is never recorded
        stderr = "".join(seen) + (await sigterm(process, timeout_s=60)).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr[-3000:]
    events = {json.loads(line)["event"]: json.loads(line) for line in stderr.splitlines() if line.startswith("{")}
    assert "meeting_secret_throwaway" in events and events["meeting_key_throwaway"]["recorded"] is False
    assert "BOOKING_MEETING_SECRET is required" not in stderr


def test_run_with_embedded_servers_forbidden_fails_closed() -> None:
    env = bare_env(BOOKING_EMBEDDED_SERVERS="forbid", BOOKING_KAFKA_BOOTSTRAP="127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "booking_sessions.cli", "run"], env=env, cwd=REPO, capture_output=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert b"BOOKING_DATABASE_URL not set, and BOOKING_EMBEDDED_SERVERS=forbid" in done.stderr
    assert b"embedded" not in done.stderr.split(b"forbid", 1)[0]  # nothing was started before the refusal
    assert b"Traceback" not in done.stderr
