"""The real service path, each instance in its own process: ``open_service`` + ``run_until``, what ``run`` runs.

A process of its own per instance, so that its RSS is the service's alone (not the bench's records) and several
instances in one group use both cores as separate deployments would. Each child joins its group, reports its
assignment, waits for "go", runs until "stop", and reports every committed batch (after the offset commit, with
the monotonic clock, which every process on the machine shares) through a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

from booking_sessions.logs import configure_logging
from booking_sessions.observe.metrics import Metrics
from booking_sessions.retention import Retention
from booking_sessions.runtime import tune_gc
from booking_sessions.service import Service, open_service, run_until
from booking_sessions.settings import Settings
from consumer.batch import BatchResult

Offsets = dict[tuple[str, int], int]
READY_TIMEOUT_S = 90.0
STALL_TIMEOUT_S = 60.0  # no committed batch for this long while records are waiting: something is wrong
STOP_TIMEOUT_S = 60.0


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


# --- the child --------------------------------------------------------------------------------------------------


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


# --- the bench's side -------------------------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    """A service process died or reported an exception; the message carries its traceback."""


@dataclass
class Fleet:
    """``count`` service processes sharing ``settings`` (one group); started, released and stopped together."""

    name: str
    settings: Settings
    count: int
    batches: list[Committed] = field(default_factory=list)
    committed: Offsets = field(default_factory=dict)
    assignments: dict[int, tuple[int, ...]] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)
    done: dict[int, int] = field(default_factory=dict)
    on_batch: Callable[[Committed], None] | None = None
    retention: ShortRetention | None = None  # the soak's; None: the settings'
    pruned: dict[str, int] = field(default_factory=dict)  # rows deleted by retention, per table
    retention_failures: list[str] = field(default_factory=list)
    _processes: list[Any] = field(default_factory=list)
    _pipes: list[Connection] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _error: str | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        for index in range(self.count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=child_main,
                args=(index, self.settings, theirs, self.retention),
                name=f"bench-{self.name}-{index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            loop.add_reader(ours.fileno(), self._receive, ours)
            self._processes.append(process)
            self._pipes.append(ours)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    @property
    def duplicates(self) -> int:
        return sum(b.duplicates for b in self.batches)

    def rss_at(self, records: int) -> int:
        """RSS reported with the first batch that brought the processed total to ``records``."""
        total = 0
        for batch in sorted(self.batches, key=lambda b: b.at):
            total += batch.records
            if total >= records:
                return batch.rss_bytes
        return self.batches[-1].rss_bytes if self.batches else 0

    def _receive(self, pipe: Connection) -> None:
        try:
            kind, *rest = pipe.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(pipe.fileno())
            if len(self.done) < self.count and self._error is None:
                self._error = f"a {self.name} service process exited unexpectedly"
            self._changed.set()
            return
        if kind == "batch":
            report: Committed = rest[0]
            self.batches.append(report)
            for tp, offset in report.offsets.items():
                self.committed[tp] = max(self.committed.get(tp, 0), offset)
            if self.on_batch is not None:
                self.on_batch(report)
        elif kind == "assigned":
            self.assignments[rest[0]] = rest[1]
        elif kind == "rss":
            self.rss[rest[0]] = rest[1]
        elif kind == "pruned":
            self.pruned[rest[0]] = self.pruned.get(rest[0], 0) + rest[1]
        elif kind == "retention_failed":
            self.retention_failures.append(rest[1])
        elif kind == "done":
            self.done[rest[0]] = rest[1]
        elif kind == "error":
            self._error = f"{self.name} service process {rest[0]} failed:\n{rest[1]}"
        self._changed.set()

    async def _until(self, condition: Callable[[], bool], what: str, timeout_s: float, *, progressing: bool) -> None:
        """Wait for ``condition``; the timeout restarts with each committed batch when ``progressing``."""
        deadline = time.monotonic() + timeout_s
        seen = len(self.batches)
        while not condition():
            if self._error is not None:
                raise ChildFailed(self._error)
            if progressing and len(self.batches) != seen:
                seen, deadline = len(self.batches), time.monotonic() + timeout_s
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {what} within {timeout_s:g} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=1.0)

    async def ready(self, partitions: int) -> None:
        """Every child joined and the group's partitions are split among them (each has some)."""

        def split() -> bool:
            owned = [p for a in self.assignments.values() for p in a]
            everyone = len(self.assignments) == self.count and all(self.assignments.values())
            return everyone and sorted(owned) == list(range(partitions))

        await self._until(split, "every process to join and own partitions", READY_TIMEOUT_S, progressing=False)

    def go(self) -> float:
        for pipe in self._pipes:
            pipe.send("go")
        return time.monotonic()

    async def drained(self, topic: str, ends: dict[int, int]) -> float:
        """Once offsets past every produced record are committed; returns when the last needed commit happened."""

        def caught_up() -> bool:
            return all(self.committed.get((topic, p), 0) >= end for p, end in ends.items())

        await self._until(caught_up, "offsets committed past every record", STALL_TIMEOUT_S, progressing=True)
        return max(b.at for b in self.batches) if self.batches else time.monotonic()

    async def measure_rss(self) -> int:
        """The largest RSS among the processes, asked now."""
        self.rss.clear()
        for pipe in self._pipes:
            pipe.send("rss")
        await self._until(lambda: len(self.rss) == self.count, "RSS reports", 10.0, progressing=False)
        return max(self.rss.values())

    async def stop(self) -> None:
        """Drain, commit and exit; kill whatever does not exit in time. Safe to call twice."""
        for pipe, process in zip(self._pipes, self._processes, strict=True):
            if process.is_alive():
                with contextlib.suppress(OSError):
                    pipe.send("stop")
        with contextlib.suppress(TimeoutError, ChildFailed):
            await self._until(lambda: len(self.done) == self.count, "a clean stop", STOP_TIMEOUT_S, progressing=False)
        for pipe in self._pipes:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(pipe.fileno())
            pipe.close()
        for process in self._processes:
            await asyncio.to_thread(process.join, 10.0)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 5.0)
        self._pipes.clear()
        self._processes.clear()
