"""The real service path, each instance in its own process (``bench.child``): ``open_service`` + ``run_until``,
what ``run`` runs.

A process of its own per instance, so that its RSS is the service's alone (not the bench's records) and several
instances in one group use both cores as separate deployments would. The bench starts, releases and stops them
together and gathers what each reports through its pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.child import Committed, Offsets, ShortRetention, child_main
from booking_sessions.settings import Settings

__all__ = ["ChildFailed", "Committed", "Fleet", "ShortRetention"]

READY_TIMEOUT_S = 90.0
STALL_TIMEOUT_S = 60.0  # no committed batch for this long while records are waiting: something is wrong
STOP_TIMEOUT_S = 60.0


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
