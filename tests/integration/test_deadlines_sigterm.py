"""It never hangs (CONTRACT, Process), at shutdown: SIGTERM with every database connection silent still ends a
`run` process within its shutdown timeout, saying what it left; a second SIGTERM ends it at once.

The helpers (short deadlines, watched processes, the proxy) are in watched_runs.py; Apache Kafka only, as every
test_deadlines_* module."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from booking_sessions.settings import Settings
from tests.integration.harness import Produced, publish, some_applied
from tests.integration.watched_runs import DEADLINES, HANG_S, logged, report, through, watched_run
from tests.integration.workloads import workload
from tests.toxiproxy import Proxy
from tests.waiting import eventually

# Judged on Apache Kafka only (the apache_kafka_only fixture says why), as every never-hangs module.
pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("apache_kafka_only")]


@pytest.mark.parametrize("when", ["at-once", "once-retrying"])
async def test_sigterm_ends_run_in_time_while_the_database_is_silent(
    when: str, settings: Settings, database_url: str, database_proxy: Proxy
) -> None:
    """Issue 12 (3): SIGTERM with every database connection silent still ends the process, and says what it left.
    Once the batch and the relay were retrying (a newcomer's find), it ended with exit code 2 and "error:
    TimeoutError:": the relay's last flush timed out, and a TimeoutError is an OSError, read as a configuration
    error; now exit 1 with ``shutdown_incomplete``."""
    events = workload(300)
    await publish(settings, events[:100], Produced())
    async with watched_run(through(settings, database_proxy, database=True)) as run:
        await some_applied(database_url, timeout_s=HANG_S)
        database_proxy.silence()
        await publish(settings, events[100:], Produced())
        if when == "once-retrying":
            await eventually(lambda: logged(run, b"batch_retry"), what="the batch retrying", timeout_s=HANG_S)
            await eventually(lambda: logged(run, b"relay_retry"), what="the relay retrying", timeout_s=HANG_S)
        timeout_s = float(DEADLINES["BOOKING_SHUTDOWN_TIMEOUT_S"])
        sent = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(run.process.wait(), timeout=timeout_s + 10)
        took_s = time.monotonic() - sent
        await asyncio.sleep(0)  # let the drain task read the last lines
    stderr = b"".join(run.stderr)
    assert took_s < timeout_s + 5, f"SIGTERM took {took_s:.1f} s"
    assert code in ((0, 1) if when == "at-once" else (1,)), stderr[-2000:]
    assert not [line for line in run.stderr if line.startswith(b"error: ")]  # never a configuration error's line
    if code == 1:  # it gave up, or could not finish: the last line says what was left
        assert b"shutdown_timed_out" in stderr or b"shutdown_incomplete" in stderr
        assert b"unfinished" in stderr
    last = [line for line in run.stderr if b"shutdown_" in line][-1:]
    report(f"SIGTERM with a silent database ({when})", exit_code=code, exited_after_s=round(took_s, 1), said=last)


async def test_a_second_sigterm_ends_run_at_once(settings: Settings, database_url: str, database_proxy: Proxy) -> None:
    """Issue 12 (3): the operator who does not want to wait sends the signal again."""
    events = workload(100)
    await publish(settings, events[:50], Produced())
    async with watched_run(through(settings, database_proxy, database=True), BOOKING_SHUTDOWN_TIMEOUT_S="60") as run:
        await some_applied(database_url, timeout_s=HANG_S)
        database_proxy.silence()
        await publish(settings, events[50:], Produced())  # a batch now waits on a silent connection
        run.process.send_signal(signal.SIGTERM)
        await eventually(
            lambda: logged(run, b"shutdown_requested"), what="the first signal to be taken", timeout_s=HANG_S
        )
        sent = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(run.process.wait(), timeout=10)
        took_s = time.monotonic() - sent
    assert code == 1 and took_s < 3, f"exit {code} after {took_s:.1f} s"
    report("second SIGTERM", exit_code=code, exited_after_s=round(took_s, 2))
