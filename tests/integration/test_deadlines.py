"""It never hangs (CONTRACT, Process): real `run` processes behind a fault-injecting TCP proxy (Toxiproxy).

Each case: the fault while work waits, then its end; the processes stay alive and recover, every event is applied
once in effect and every SessionCreated published (rows equal the reference), and what /readyz and /healthz said
meanwhile is recorded. A hang fails the test (the generous waits below, and pytest-timeout); the times to detect
and to recover are printed as figures (run with -s), not asserted to the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import NullPool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.dev.embedded import free_port
from booking_sessions.settings import Settings
from models.events import BookingEvent
from tests.integration.bookings import START, event
from tests.integration.harness import Produced, committed_offsets, publish, query, running_process, some_applied
from tests.integration.http_probes import get, scrape, value
from tests.integration.workloads import all_applied_and_published, assert_matches_reference, workload
from tests.servers.apache_kafka import ApacheKafka
from tests.servers.ladder import KafkaHandle
from tests.toxiproxy import Proxy
from tests.waiting import eventually

pytestmark = pytest.mark.faults

# Short deadlines, so that each fault is detected within seconds (defaults: README, Configuration).
DEADLINES = {
    "BOOKING_DATABASE_STATEMENT_TIMEOUT_S": "2",  # the driver gives up 5 s later: 7 s
    "BOOKING_DATABASE_LOCK_TIMEOUT_S": "1",
    "BOOKING_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_S": "4",
    "BOOKING_DATABASE_CONNECT_TIMEOUT_S": "2",
    "BOOKING_DATABASE_POOL_TIMEOUT_S": "5",
    "BOOKING_KAFKA_REQUEST_TIMEOUT_S": "5",
    "BOOKING_KAFKA_COMMIT_TIMEOUT_S": "5",
    "BOOKING_STALL_AFTER_S": "8",
    "BOOKING_METRICS_REFRESH_S": "0.5",
    "BOOKING_SHUTDOWN_TIMEOUT_S": "5",
}
HANG_S = 120.0  # any wait longer than this is a hang: the test fails


@pytest.fixture(autouse=True)
def apache_kafka_only(kafka: KafkaHandle) -> None:
    """Judged on Apache Kafka, as production runs it: on Tansu two `run`s rejoin their group so slowly that a fault
    test cannot finish within the suite's per-test bound (README, "On the Tansu broker")."""
    if not isinstance(kafka.server, ApacheKafka):
        pytest.skip(f"the never-hangs faults are judged on Apache Kafka, not {kafka.kind}")


@dataclass
class Probe:
    """One answer of /readyz and /healthz, ``at`` seconds after the fault began."""

    at: float
    ready: int
    readiness: dict[str, Any]
    alive: int
    liveness: dict[str, Any]


@dataclass
class Watched:
    """A `run` process with its HTTP port, its probes polled in the background and its stderr drained."""

    process: asyncio.subprocess.Process
    port: int
    probes: list[Probe] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)
    fault_at: float = math.inf  # set when the fault begins: probes before it are not counted

    async def poll(self) -> None:
        base = f"http://127.0.0.1:{self.port}"
        while self.process.returncode is None:
            with contextlib.suppress(OSError):
                ready, readiness = await get(f"{base}/readyz")
                alive, liveness = await get(f"{base}/healthz")
                at = time.monotonic() - self.fault_at
                self.probes.append(Probe(at, ready, json.loads(readiness), alive, json.loads(liveness)))
            await asyncio.sleep(0.25)  # the polling rate of a probe, not a synchronisation

    async def drain(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():  # a full pipe would block the process's logging
            self.stderr.append(line)

    def since_fault(self) -> list[Probe]:
        return [p for p in self.probes if p.at >= 0]

    def said(self) -> dict[str, Any]:
        """What the probes said since the fault: each distinct failing check and its reason, and the stalls."""
        failing: dict[str, set[str]] = {}
        stalled: set[str] = set()
        for p in self.since_fault():
            for name, check in p.readiness.get("checks", {}).items():
                if not check.get("ok", True):
                    failing.setdefault(name, set()).add(str(check.get("error") or check.get("why") or check))
            stalled |= {f"{name}: {why}" for name, why in p.liveness.get("stalled", {}).items()}
        return {
            "readyz_failing": {name: sorted(reasons)[:3] for name, reasons in failing.items()},
            "healthz_stalled": sorted(stalled)[:3],
        }

    def first(self, ready: bool | None = None, alive: bool | None = None) -> float | None:
        for p in self.since_fault():
            if (ready is None or (p.ready == 200) == ready) and (alive is None or (p.alive == 200) == alive):
                return round(p.at, 1)
        return None


@contextlib.asynccontextmanager
async def watched_run(settings: Settings, **env: str) -> AsyncIterator[Watched]:
    port = free_port()
    extra = DEADLINES | {"BOOKING_METRICS_PORT": str(port), "BOOKING_METRICS_HOST": "127.0.0.1"} | env
    async with running_process(settings, **extra) as process:
        run = Watched(process, port)
        tasks = [asyncio.create_task(run.poll()), asyncio.create_task(run.drain())]
        try:
            yield run
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def through(settings: Settings, proxy: Proxy, *, database: bool = False, kafka: bool = False) -> Settings:
    """The settings of a process whose database or broker connections pass the proxy."""
    update: dict[str, Any] = {}
    if database:
        url = make_url(settings.database_url_value()).set(port=proxy.listen_port)
        update["database_url"] = url.render_as_string(hide_password=False)
    if kafka:
        update["kafka_bootstrap"] = f"127.0.0.1:{proxy.listen_port}"
    return Settings.model_validate(settings.model_dump() | update)


def second_wave(bookings: int, step: int = 3) -> list[BookingEvent]:
    """Reschedules of every ``step``-th booking, newer than anything in ``workload``."""
    return [
        event("BookingConfirmed", f"bk_{i:04d}", 10, scheduled_start=START + timedelta(hours=2))
        for i in range(0, bookings, step)
    ]


def report(case: str, **figures: Any) -> None:
    print(f"\nFAULT FIGURES {case}: {json.dumps(figures, default=str)}")


async def all_answer_ready(*runs: Watched) -> bool:
    for run in runs:
        latest = run.probes[-1] if run.probes else None
        assert latest is not None and latest.ready == 200 and latest.alive == 200, (
            f"port {run.port}: {latest.readiness if latest else 'no answer'}"
        )
    return True


async def lift_and_recover(
    proxy: Proxy, toxics: list[str], database_url: str, events: list[BookingEvent], *runs: Watched
) -> tuple[float, float]:
    """End the fault; wait until every event is applied and published and every process ready and alive again.
    Returns when the fault was lifted (monotonic) and how long the work took to complete after it."""
    for name in toxics:
        proxy.remove(name)
    lifted = time.monotonic()
    await all_applied_and_published(database_url, events, timeout_s=HANG_S)
    recovered_s = time.monotonic() - lifted
    await eventually(lambda: all_answer_ready(*runs), what="ready and alive again", timeout_s=HANG_S)
    assert all(run.process.returncode is None for run in runs), "a process ended"
    return lifted, recovered_s


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


async def test_a_lock_held_elsewhere_parks_only_its_booking_and_keeps_the_group(
    settings: Settings, database_url: str
) -> None:
    """Issue 12 (2): an operator's open transaction holds FOR UPDATE on one session row. Only that booking waits
    (and its partition's offset commit): every other booking, later ones of its partition included, is applied and
    published meanwhile, the group is never left, and after the release everything is applied in order."""
    bookings = 200
    first, later = workload(bookings), second_wave(bookings)  # bk_0000's reschedule is the first of ``later``
    produced = Produced()
    await publish(settings, first, produced)
    locked = later[0]
    assert locked.booking_id == "bk_0000"
    async with watched_run(settings) as run:
        await all_applied_and_published(database_url, first, timeout_s=HANG_S)
        await eventually(lambda: all_answer_ready(run), what="ready before the fault", timeout_s=HANG_S)
        [home] = await query(
            database_url, "SELECT DISTINCT topic, partition FROM inbox_messages WHERE booking_id = 'bk_0000'"
        )
        held_at = produced.ends[(home["topic"], home["partition"])]  # the offset bk_0000's reschedule gets
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as operator, operator.begin():
                await operator.execute(
                    text("SELECT id FROM live_sessions WHERE booking_request_id = 'bk_0000' FOR UPDATE")
                )
                run.fault_at = started = time.monotonic()
                await publish(settings, later, produced)
                others = [e for e in later if e.booking_id != locked.booking_id]
                await all_applied_and_published(database_url, first + others, timeout_s=HANG_S)
                others_s = time.monotonic() - started
                behind = await query(
                    database_url,
                    "SELECT count(*) AS n FROM inbox_messages WHERE topic = :t AND partition = :p AND \"offset\" > :o",
                    t=home["topic"], p=home["partition"], o=held_at,
                )  # fmt: skip
                assert behind[0]["n"] > 0, "no later record of the held partition was applied"

                async def others_committed() -> bool:
                    committed = await committed_offsets(settings, sorted(produced.ends))
                    held = committed.pop((home["topic"], home["partition"]))
                    assert held == held_at, f"held partition committed at {held}, the parked record is {held_at}"
                    assert committed == {tp: end for tp, end in produced.ends.items() if tp in committed}, (
                        f"other partitions not committed to their end: {committed} vs {produced.ends}"
                    )
                    return True

                await eventually(others_committed, what="every other partition committed", timeout_s=HANG_S)

                async def lock_reported() -> bool:
                    consumer = run.probes[-1].readiness["checks"]["consumer"]
                    assert consumer["ok"] is False and "55P03" in consumer["why"], f"consumer check: {consumer}"
                    assert "bk_0000" in consumer["why"], f"the booking is not named: {consumer}"
                    return True

                what = "/readyz to name the held booking and the lock"
                await eventually(lock_reported, what=what, timeout_s=HANG_S)
                samples = await scrape(f"http://127.0.0.1:{run.port}")
                assert value(samples, "booking_sessions_held_partitions") == 1
                assert value(samples, "booking_sessions_bookings_parked_total") >= 1
                held_s = time.monotonic() - started
                inbox = await query(
                    database_url, "SELECT 1 FROM inbox_messages WHERE message_id = :m", m=locked.message_id
                )
                assert not inbox, "the locked booking's event was applied while its row was locked"
            released = time.monotonic()  # the operator's transaction ended (rolled back)
            await all_applied_and_published(database_url, first + later, timeout_s=HANG_S)
            recovered_s = time.monotonic() - released
        finally:
            await engine.dispose()
        await eventually(lambda: all_answer_ready(run), what="ready and alive again", timeout_s=HANG_S)

        async def all_committed() -> bool:
            committed = await committed_offsets(settings, sorted(produced.ends))
            assert committed == produced.ends, f"committed {committed}, produced {produced.ends}"
            return True

        await eventually(all_committed, what="every partition committed to its end", timeout_s=HANG_S)
        assert run.process.returncode is None
        assert all(p.alive == 200 for p in run.since_fault()), f"/healthz failed during the lock: {run.said()}"
        groups = {p.readiness["checks"]["kafka_group"]["state"] for p in run.since_fault()}
        assert groups == {"assigned"}, f"the group was left during the lock: {groups}"
        rebalances = [line for line in run.stderr if b"partitions_assigned" in line]
        assert len(rebalances) == 1, "assigned again: the consumer had left its group"
        assert any(b"bookings_parked" in line and b"bk_0000" in line for line in run.stderr)
        report(
            "lock held elsewhere",
            others_applied_and_published_s=round(others_s, 1),
            detect_not_ready_s=run.first(ready=False),
            lock_held_s=round(held_s, 1),
            recover_all_applied_after_release_s=round(recovered_s, 1),
            said=run.said(),
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


async def test_sigterm_ends_run_in_time_while_the_database_is_silent(
    settings: Settings, database_url: str, database_proxy: Proxy
) -> None:
    """Issue 12 (3): SIGTERM with every database connection silent still ends the process, and says what it left."""
    events = workload(300)
    await publish(settings, events[:100], Produced())
    async with watched_run(through(settings, database_proxy, database=True)) as run:
        await some_applied(database_url, timeout_s=HANG_S)
        database_proxy.silence()
        await publish(settings, events[100:], Produced())
        timeout_s = float(DEADLINES["BOOKING_SHUTDOWN_TIMEOUT_S"])
        sent = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(run.process.wait(), timeout=timeout_s + 10)
        took_s = time.monotonic() - sent
        await asyncio.sleep(0)  # let the drain task read the last lines
    stderr = b"".join(run.stderr)
    assert took_s < timeout_s + 5, f"SIGTERM took {took_s:.1f} s"
    assert code in (0, 1)
    if code == 1:  # it gave up: the last line says what was left
        assert b"shutdown_timed_out" in stderr and b"unfinished" in stderr
    last = [line for line in run.stderr if b"shutdown_" in line][-1:]
    report("SIGTERM with a silent database", exit_code=code, exited_after_s=round(took_s, 1), said=last)


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
            lambda: _logged(run, b"shutdown_requested"), what="the first signal to be taken", timeout_s=HANG_S
        )
        sent = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(run.process.wait(), timeout=10)
        took_s = time.monotonic() - sent
    assert code == 1 and took_s < 3, f"exit {code} after {took_s:.1f} s"
    report("second SIGTERM", exit_code=code, exited_after_s=round(took_s, 2))


async def _logged(run: Watched, event_name: bytes) -> bool:
    return any(event_name in line for line in run.stderr)
