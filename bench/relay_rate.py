"""Stage (g) of the relay: how fast K relay processes drain the outbox, each publishing the shards of the input
partitions it would own in a group of K (producer/shards.py), while no consumer writes.

Every outbox row of a finished stage is handed back (``published_at = NULL``, as ``outbox republish --all`` does),
then the K processes are released together; done when no row waits. The output topic receives a second copy of
every row (same message_ids), after the stage's own output was checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.databases import OutboxWatch
from bench.report import Stage
from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.logs import configure_logging
from booking_sessions.service import create_engine, relay_step_timeout_s
from booking_sessions.settings import Settings
from producer.publish import Publisher
from producer.relay import OutboxRelay
from producer.shards import shards_for

READY_TIMEOUT_S = 120.0
TARGET_ROWS = 40_000
MAX_ROUNDS = 5


def relay_main(index: int, settings: Settings, shards: list[int], go: Any, reports: Any) -> None:
    """One relay process (spawned): ready, wait for ``go``, drain its shards (and the others' once its own are
    done, as in ``run``), report ("done", index, rows, seconds, CPU seconds)."""
    configure_logging("ERROR")
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.CRITICAL)  # Tansu: no idempotent producers
    asyncio.run(_relay(index, settings, frozenset(shards), go, reports))


async def _relay(index: int, settings: Settings, shards: frozenset[int], go: Any, reports: Any) -> None:
    assert settings.kafka_bootstrap is not None
    engine = create_engine(settings)
    publisher = await Publisher.start(settings.kafka_bootstrap, "bench-relay", **kafka_client_options(settings))
    try:
        relay = OutboxRelay(
            engine,
            publisher,
            batch_rows=settings.relay_batch_rows,
            step_timeout_s=relay_step_timeout_s(settings),
            shards=lambda: shards,
        )
        reports.put(("ready", index))
        await asyncio.to_thread(go.wait)
        started, cpu = time.monotonic(), time.process_time()
        sent = await relay.drain()
        reports.put(("done", index, sent, time.monotonic() - started, time.process_time() - cpu))
    finally:
        await publisher.stop()
        await engine.dispose()


async def relay_stage(settings: Settings, relays: int, partitions: int) -> Stage:
    """Hand every outbox row of ``settings``' database back and time ``relays`` processes draining it; again, until
    about TARGET_ROWS were sent (at most MAX_ROUNDS): a few steps alone would measure mostly noise."""
    rows, seconds, cpu_s, sent = 0, 0.0, 0.0, [0] * relays
    for _ in range(MAX_ROUNDS):
        round_rows, round_s, round_cpu_s, round_sent = await _drain_once(settings, relays, partitions)
        rows, seconds, cpu_s = rows + round_rows, seconds + round_s, cpu_s + round_cpu_s
        sent = [a + b for a, b in zip(sent, round_sent, strict=True)]
        if rows >= TARGET_ROWS or not round_rows:
            break
    label = f"(g) relay: {relays} process{'es' if relays > 1 else ''} drain the outbox"
    note = (
        f"output rows/s; rows per process {sorted(sent, reverse=True)}; {settings.relay_batch_rows} rows per step; "
        f"relay processes CPU {cpu_s / max(seconds, 1e-9):.0%} of a core, {cpu_s / max(rows, 1) * 1e6:.0f} µs/row"
    )
    return Stage(f"relay{relays}", label, rows, seconds, note)


async def _drain_once(settings: Settings, relays: int, partitions: int) -> tuple[int, float, float, list[int]]:
    url = settings.database_url_value()
    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            rows = (await conn.execute(text("UPDATE outbox_messages SET published_at = NULL"))).rowcount
            await conn.execute(text("ANALYZE outbox_messages"))
    finally:
        await engine.dispose()
    context = multiprocessing.get_context("spawn")
    go, reports = context.Event(), context.Queue()
    processes = [
        context.Process(
            target=relay_main,
            args=(i, settings, sorted(shards_for(range(i, partitions, relays), partitions)), go, reports),
            name=f"bench-relay-{i}",
            daemon=True,
        )
        for i in range(relays)
    ]
    for process in processes:
        process.start()
    watch = OutboxWatch(url)
    try:
        for _ in processes:
            await _report(reports, "ready")
        go.set()
        started = time.monotonic()
        done = [await _report(reports, "done") for _ in processes]
        seconds = time.monotonic() - started
        if waiting := await watch.unpublished():  # none: the last relay to finish found every shard empty
            raise RuntimeError(f"{waiting} outbox rows left unpublished by the relay processes")
    finally:
        await watch.close()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    by_index = {int(d[1]): int(d[2]) for d in done}
    return rows, seconds, sum(float(d[4]) for d in done), [by_index.get(i, 0) for i in range(relays)]


async def _report(reports: Any, kind: str) -> tuple[Any, ...]:
    with contextlib.suppress(queue.Empty):
        report: tuple[Any, ...] = await asyncio.to_thread(reports.get, True, READY_TIMEOUT_S)
        if report[0] == kind:
            return report
        raise RuntimeError(f"a relay process reported {report!r}, expected {kind!r}")
    raise RuntimeError(f"no relay process reported {kind!r} within {READY_TIMEOUT_S:g} s")
