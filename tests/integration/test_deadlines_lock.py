"""It never hangs (CONTRACT, Process) when a lock is held elsewhere: an operator's open transaction holding one
session row parks only that booking and its partition's offset commit, while every other booking is applied and
published, the group is never left, and /readyz and the metrics name the held booking.

The helpers (short deadlines, watched processes) are in watched_runs.py; Apache Kafka only, as every
test_deadlines_* module."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.settings import Settings
from tests.integration.harness import Produced, committed_offsets, committed_to_the_end, publish, query
from tests.integration.http_probes import scrape, value
from tests.integration.watched_runs import HANG_S, all_answer_ready, report, second_wave, watched_run
from tests.integration.workloads import all_applied_and_published, assert_matches_reference, workload
from tests.waiting import eventually

# Judged on Apache Kafka only (the apache_kafka_only fixture says why), as every never-hangs module.
pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("apache_kafka_only")]


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

        await eventually(
            lambda: committed_to_the_end(settings, produced),
            what="every partition committed to its end",
            timeout_s=HANG_S,
        )
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
