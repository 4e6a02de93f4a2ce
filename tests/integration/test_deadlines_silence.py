"""It never hangs (CONTRACT, Process): real `run` processes behind a fault-injecting TCP proxy (Toxiproxy).

Each case: the fault while work waits, then its end; the processes stay alive and recover, every event is applied
once in effect and every SessionCreated published (rows equal the reference), and what /readyz and /healthz said
meanwhile is recorded. A hang fails the test (the generous waits below, and pytest-timeout); the times to detect
and to recover are printed as figures (run with -s), not asserted to the second.

Here: every connection to the database or the broker silenced, and latency then resets. A lock held elsewhere:
test_deadlines_lock.py; SIGTERM: test_deadlines_sigterm.py; their helpers: watched_runs.py.
"""

from __future__ import annotations

import time

import pytest

from booking_sessions.settings import Settings
from tests.integration.harness import Produced, publish, some_applied
from tests.integration.watched_runs import (
    HANG_S,
    all_answer_ready,
    lift_and_recover,
    report,
    second_wave,
    through,
    watched_run,
)
from tests.integration.workloads import all_applied_and_published, assert_matches_reference, workload
from tests.toxiproxy import Proxy
from tests.waiting import eventually

# Judged on Apache Kafka only (the apache_kafka_only fixture says why), as every never-hangs module.
pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("apache_kafka_only")]


async def test_silent_database_connections_two_processes_recover_with_nothing_lost(
    settings: Settings, database_url: str, database_proxy: Proxy
) -> None:
    """Issue 12 (1): two `run`s, a few thousand bookings, the open database connections silenced mid-stream."""
    bookings = 1500
    first, later = workload(bookings), second_wave(bookings)
    await publish(settings, first, Produced())
    proxied = through(settings, database_proxy, database=True)
    async with watched_run(proxied) as one, watched_run(proxied) as two:
        await some_applied(database_url, timeout_s=HANG_S)
        await eventually(lambda: all_answer_ready(one, two), what="both ready before the fault", timeout_s=HANG_S)
        started = time.monotonic()
        one.fault_at = two.fault_at = started
        silenced = database_proxy.silence()
        await publish(settings, later, Produced())  # work waits while the database is silent

        async def both_stalled() -> bool:
            assert all(r.first(alive=False) is not None for r in (one, two)), "a /healthz still answers 200"
            said = [r.said()["readyz_failing"] for r in (one, two)]
            assert all("database" in failing for failing in said), f"the database check not failed yet: {said}"
            return True

        what = "both /healthz to report the stall, and /readyz the database"
        await eventually(both_stalled, what=what, timeout_s=HANG_S)
        lifted, recovered_s = await lift_and_recover(database_proxy, silenced, database_url, first + later, one, two)
        report(
            "silent database connections",
            detect_not_ready_s=[one.first(ready=False), two.first(ready=False)],
            detect_healthz_failed_s=[one.first(alive=False), two.first(alive=False)],
            silence_held_s=round(lifted - started, 1),
            recover_all_applied_after_lift_s=round(recovered_s, 1),
            said=[one.said(), two.said()],
        )
    await assert_matches_reference(settings, database_url, first + later)


async def test_broker_silence_is_reported_and_recovered(
    settings: Settings, database_url: str, kafka_proxy: Proxy
) -> None:
    """Every connection to the broker silent for a while (a partition between the service and Kafka)."""
    bookings = 300
    first, later = workload(bookings), second_wave(bookings)
    await publish(settings, first, Produced())
    async with watched_run(through(settings, kafka_proxy, kafka=True)) as run:
        await all_applied_and_published(database_url, first, timeout_s=HANG_S)
        await eventually(lambda: all_answer_ready(run), what="ready before the fault", timeout_s=HANG_S)
        run.fault_at = started = time.monotonic()
        silenced = kafka_proxy.silence()
        await publish(settings, later, Produced())  # straight to the broker: work waits

        async def broker_reported() -> bool:
            latest = run.probes[-1]
            assert latest.at > 1 and latest.readiness["checks"]["kafka"]["ok"] is False, "kafka check still ok"
            return True

        await eventually(broker_reported, what="/readyz to report the broker", timeout_s=HANG_S)
        lifted, recovered_s = await lift_and_recover(kafka_proxy, silenced, database_url, first + later, run)
        report(
            "broker silence",
            detect_not_ready_s=run.first(ready=False),
            detect_healthz_failed_s=run.first(alive=False),
            silence_held_s=round(lifted - started, 1),
            recover_all_applied_after_lift_s=round(recovered_s, 1),
            said=run.said(),
        )
    await assert_matches_reference(settings, database_url, first + later)


async def test_latency_then_resets_on_the_database_are_ridden_out(
    settings: Settings, database_url: str, database_proxy: Proxy
) -> None:
    """100 ms each way on every database round trip, then every connection reset as soon as it carries data."""
    bookings = 200
    first, later = workload(bookings), second_wave(bookings)
    # A stall is judged over 30 s here: under this latency, opening a connection alone takes a second or two.
    async with watched_run(through(settings, database_proxy, database=True), BOOKING_STALL_AFTER_S="30") as run:
        run.fault_at = started = time.monotonic()
        with (
            database_proxy.toxic("latency", latency=100),
            database_proxy.toxic("latency", stream="upstream", latency=100),
        ):
            await publish(settings, first, Produced())
            await all_applied_and_published(database_url, first, timeout_s=HANG_S)
        slow_s = time.monotonic() - started
        assert all(p.alive == 200 for p in run.since_fault()), f"latency alone is no stall: {run.said()}"
        reset_at = time.monotonic()
        with database_proxy.toxic("reset_peer", timeout=0):
            await publish(settings, later, Produced())

            async def retried() -> bool:
                assert run.probes and "connection" in str(run.probes[-1].readiness), "no reset seen yet"
                return True

            await eventually(retried, what="/readyz to report the resets", timeout_s=HANG_S)
        lifted = time.monotonic()
        await all_applied_and_published(database_url, first + later, timeout_s=HANG_S)
        assert run.process.returncode is None
        report(
            "latency 100 ms each way, then resets",
            all_applied_under_latency_s=round(slow_s, 1),
            resets_held_s=round(lifted - reset_at, 1),
            recover_all_applied_after_lift_s=round(time.monotonic() - lifted, 1),
            said=run.said(),
        )
    await assert_matches_reference(settings, database_url, first + later)
