"""One service process of the bench: ``open_service`` + ``run_until``, what ``run`` runs, driven through a pipe.

Spawned by ``bench.service_path.Fleet``. The child joins its group, reports its assignment, waits for "go", runs
until "stop", and reports every committed batch (after the offset commit, with the monotonic clock, which every
process on the machine shares).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

from booking_sessions.logs import configure_logging
from booking_sessions.observe.metrics import Metrics
from booking_sessions.retention import Retention
from booking_sessions.runtime import tune_gc
from booking_sessions.service import Service, open_service, run_until
from booking_sessions.settings import Settings
from consumer.results import BatchResult

Offsets = dict[tuple[str, int], int]


@dataclass(frozen=True)
class Committed:
    """One batch a child committed, as its ``on_committed`` hook saw it."""

    child: int
    at: float
    offsets: Offsets
    records: int
    duplicates: int
    created: int
    updated: int
    rss_bytes: int
    decode_s: float  # of the batch: parsing and validation (0 where the service does not report it)
    database_s: float  # of the batch: its transaction
    total_s: float = 0.0  # from its apply starting to its offsets committed (0: code that does not say)


@dataclass(frozen=True)
class ShortRetention:
    """Bench only (the soak): the retention a child keeps instead of its settings'. The settings refuse windows
    under an hour, rightly for production; a soak of minutes needs rows to age within seconds. A ``None`` window
    turns that table's pruning off (``ShortRetention(None, None, 1.0)``: retention off)."""

    inbox: timedelta | None
    outbox: timedelta | None
    interval_s: float


class _PrunedReporter:
    """The service's own metrics, plus every deleted batch and failed round reported to the bench."""

    def __init__(self, metrics: Metrics, conn: Connection, index: int) -> None:
        self._metrics, self._conn, self._index = metrics, conn, index

    def retention_deleted(self, table: str, rows: int) -> None:
        self._metrics.retention_deleted(table, rows)
        self._conn.send(("pruned", table, rows))

    def retention_retried(self, error: BaseException) -> None:
        self._metrics.retention_retried(error)
        self._conn.send(("retention_failed", self._index, repr(error)[:300]))


def _keep_short_retention(service: Service, retention: ShortRetention, conn: Connection, index: int) -> None:
    # Replaces the Retention that open_service built from the settings, before run_until starts it.
    service.retention = Retention(
        service.engine,
        inbox=retention.inbox,
        outbox=retention.outbox,
        interval_s=retention.interval_s,
        batch_rows=service.settings.retention_batch_rows,
        observer=_PrunedReporter(service.metrics, conn, index),
    )


def rss_bytes() -> int:
    """Resident set size now (Linux); elsewhere the peak, which is an upper bound."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_main(index: int, settings: Settings, conn: Connection, retention: ShortRetention | None = None) -> None:
    """Entry point of one service process (spawned); ``retention``: keep that instead of the settings'."""
    configure_logging("ERROR")  # the bench owns the terminal; the service's warnings would interleave with it
    # Tansu refuses idempotent producers; the publisher falls back, but aiokafka logs each refusal as an error.
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.CRITICAL)
    try:
        asyncio.run(_serve(index, settings, conn, retention))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", index, traceback.format_exc()))
        raise


async def _serve(index: int, settings: Settings, conn: Connection, retention: ShortRetention | None) -> None:
    loop = asyncio.get_running_loop()
    go, stop = asyncio.Event(), asyncio.Event()

    def on_message() -> None:
        try:
            message = conn.recv()
        except EOFError:  # the bench went away
            message = "stop"
        if message == "rss":
            conn.send(("rss", index, rss_bytes()))
            return
        if message == "stop":
            stop.set()
        go.set()

    loop.add_reader(conn.fileno(), on_message)

    async def committed(result: BatchResult) -> None:
        report = Committed(
            index,
            time.monotonic(),
            dict(result.next_offsets),
            result.records,
            result.duplicates,
            result.sessions_created,
            result.sessions_updated,
            rss_bytes(),
            # Reported by the service since its metrics work; read defensively so the bench runs on older code.
            result.decode_s,
            result.database_s,
            getattr(result, "total_s", 0.0),
        )
        conn.send(("batch", report))

    async with open_service(settings, on_committed=committed) as service:
        if retention is not None:
            _keep_short_retention(service, retention, conn, index)
        tune_gc()  # as `run` does once started
        watcher = asyncio.create_task(_report_assignment(index, service.consumer, conn))
        await go.wait()
        if not stop.is_set():
            await run_until(service, stop)
        watcher.cancel()
    with contextlib.suppress(BrokenPipeError):  # the bench gave up waiting and went away
        conn.send(("done", index, rss_bytes()))


async def _report_assignment(index: int, consumer: Any, conn: Connection) -> None:
    reported: tuple[int, ...] | None = None
    while True:
        now = tuple(sorted(tp.partition for tp in consumer.assignment()))
        if now != reported:
            conn.send(("assigned", index, now))
            reported = now
        await asyncio.sleep(0.02)
