"""Readiness and liveness, decided in the background from what the service already measures, served from memory.

A probe never touches the database or the broker: the sampler's outbox query is the database check, the loop's and
the relay's last progress are the stall checks. So a flood of probes costs nothing the consumer needs, and an answer
never carries a driver's error text (hosts, ports, user names): only a cause from a fixed vocabulary.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from booking_sessions.observe.metrics import Metrics
from consumer.parking import Hold

# A sample older than this many sampling intervals (10 s at least) means that server stopped answering the sampler.
STALE_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class Observed:
    """What the health check looks at, copied out of ``Metrics`` at one instant (monotonic seconds throughout)."""

    now: float
    lag: int | None  # records waiting in the assigned partitions; None before the first sample
    consumer_progress_at: float  # start, the last committed batch, or the last lag sample with nothing waiting
    consumer_error: str | None  # the last retried failure since that progress
    outbox_rows: int | None  # unpublished rows; None before the first sample
    relay_progress_at: float  # start, or the relay's last step that ended without error
    relay_error: str | None
    database_ok_at: float | None
    database_error: str | None
    kafka_ok_at: float | None  # the last lag sample (the broker answered)
    kafka_error: str | None
    group: dict[str, Any] = field(default_factory=dict)  # GroupMembership.check()
    held: dict[str, Hold] = field(default_factory=dict)  # partitions held at a parked booking, by "topic/partition"
    held_lag: int = 0  # the part of ``lag`` in those partitions: it waits for the lock, not for the consumer


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``/readyz`` and ``/healthz`` serve; ``at`` (monotonic) lets the server see a verdict go stale."""

    ready: bool
    alive: bool
    readiness: dict[str, Any]
    liveness: dict[str, Any]
    at: float


def assess(seen: Observed, *, stall_after_s: float, stale_after_s: float) -> Verdict:
    """Pure decision. A part is *stalled* when work waits for it (lag; unpublished rows) and it made no progress
    for ``stall_after_s``: not ready, and not alive either, so that a liveness probe restarts the process. A
    database that stopped answering only makes it not ready: the service retries, and a restart would fix nothing
    unless work piles up, which the stall checks then see."""
    database = _answers(seen.now, seen.database_ok_at, seen.database_error, stale_after_s)
    kafka = _answers(seen.now, seen.kafka_ok_at, seen.kafka_error, stale_after_s)
    # A stale sample says nothing about what waits now: unknown, so no stall is claimed on it (the server's own
    # check fails instead; a restart would not bring it back).
    lag = seen.lag if kafka["ok"] else None
    outbox_rows = seen.outbox_rows if database["ok"] else None
    waiting = None if lag is None else max(0, lag - seen.held_lag)
    consumer = _stall_check(seen.now, waiting, seen.consumer_progress_at, seen.consumer_error, stall_after_s)
    consumer["lag_records"] = lag
    _held_check(consumer, seen, stall_after_s)
    relay = _stall_check(seen.now, outbox_rows, seen.relay_progress_at, seen.relay_error, stall_after_s)
    relay["unpublished_rows"] = outbox_rows
    checks = {
        "database": database,
        "kafka": kafka,
        "kafka_group": seen.group,
        "consumer": consumer,
        "relay": relay,
    }
    ready = all(check.get("ok", False) for check in checks.values())
    stalled = [name for name, check in (("consumer", consumer), ("relay", relay)) if check["stalled"]]
    liveness: dict[str, Any] = {"status": "ok"}
    if stalled:
        liveness = {"status": "stalled", "stalled": {name: checks[name]["why"] for name in stalled}}
    readiness = {"status": "ready" if ready else "not_ready", "checks": checks}
    return Verdict(ready, not stalled, readiness, liveness, seen.now)


def _answers(now: float, ok_at: float | None, error: str | None, stale_after_s: float) -> dict[str, Any]:
    """A server answered the sampler lately; else why not: the cause of the sampler's failure since its last
    answer, else how long it has been waiting (a sample in flight to a silent server fails only at its deadline)."""
    if ok_at is not None and now - ok_at < stale_after_s:
        return {"ok": True}
    return {"ok": False, "error": error or ("no answer yet" if ok_at is None else f"no answer for {now - ok_at:.0f} s")}


def _stall_check(
    now: float, waiting: int | None, progress_at: float, error: str | None, stall_after_s: float
) -> dict[str, Any]:
    idle_s = now - progress_at
    stalled = bool(waiting) and idle_s >= stall_after_s
    check: dict[str, Any] = {"ok": not stalled, "stalled": stalled, "since_progress_s": round(idle_s, 1)}
    if stalled:
        last = f"; last error: {error}" if error else ""
        check["why"] = f"{waiting} waiting, no progress for {idle_s:.0f} s{last}"
    elif error is not None:
        check["last_error"] = error
    return check


def _held_check(consumer: dict[str, Any], seen: Observed, stall_after_s: float) -> None:
    """A partition held at a parked booking (its rows held by another transaction) while the rest goes on: not a stall
    of the process (its lag waits for the lock, not for the consumer, and is not counted as waiting work; a restart
    would not free the lock, and would cost the group a rebalance), but after
    ``stall_after_s`` not ready, saying which partitions and bookings wait on the lock."""
    if not seen.held:
        return
    consumer["held"] = {
        partition: {"offset": h.offset, "bookings": sorted(h.bookings)[:5], "held_s": round(seen.now - h.since, 1)}
        for partition, h in sorted(seen.held.items())
    }
    held_s = seen.now - min(h.since for h in seen.held.values())
    if held_s >= stall_after_s and not consumer["stalled"]:
        bookings = sorted({b for h in seen.held.values() for b in h.bookings})
        consumer["ok"] = False
        consumer["why"] = (
            f"partition(s) {', '.join(sorted(seen.held))} held for {held_s:.0f} s at booking(s) "
            f"{', '.join(bookings[:5])}: rows held by another transaction (a session row locked, or inbox rows of a"
            " consumer frozen in its batch; lock not available, SQLSTATE 55P03)"
        )


class Health:
    """Re-assesses every ``interval_s`` on the service's event loop; ``verdict`` is read from any thread."""

    def __init__(
        self, metrics: Metrics, group_check: Any, *, stall_after_s: float, interval_s: float, refresh_s: float
    ) -> None:
        self._metrics = metrics
        self._group_check = group_check
        self.stall_after_s = stall_after_s
        self._interval_s = interval_s
        self._stale_after_s = max(STALE_INTERVALS * refresh_s, 10.0)
        self.verdict = self.assess_now()  # one attribute, replaced whole: safe to read from the HTTP thread

    def assess_now(self) -> Verdict:
        """Copy what ``Metrics`` holds now into ``Observed``, ``assess`` it, and set the ``stalled`` gauges."""
        m = self._metrics
        seen = Observed(
            now=time.monotonic(),
            lag=m.lag_total,
            consumer_progress_at=m.consumer_progress_at,
            consumer_error=m.consumer_error,
            outbox_rows=m.outbox_waiting,
            relay_progress_at=m.relay_progress_at,
            relay_error=m.relay_error,
            database_ok_at=m.database_ok_at,
            database_error=m.database_error,
            kafka_ok_at=m.kafka_ok_at,
            kafka_error=m.kafka_error,
            group=self._group_check(),
            held=dict(m.held),
            held_lag=sum(m.partition_lag.get(partition, 0) for partition in m.held),
        )
        verdict = assess(seen, stall_after_s=self.stall_after_s, stale_after_s=self._stale_after_s)
        for component in ("consumer", "relay"):
            m.stalled.labels(component).set(1 if verdict.readiness["checks"][component]["stalled"] else 0)
        return verdict

    async def run(self, stop: asyncio.Event) -> None:
        """Replace ``verdict`` every ``interval_s`` (seconds) until ``stop``."""
        while not stop.is_set():
            self.verdict = self.assess_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """From the HTTP thread: also not alive when the event loop stopped re-assessing (a blocked loop)."""
        verdict = self.verdict
        age_s = time.monotonic() - verdict.at
        if age_s >= self.stall_after_s:
            return False, {"status": "stalled", "stalled": {"event_loop": f"no health check for {age_s:.0f} s"}}
        return verdict.alive, verdict.liveness

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """From the HTTP thread: whether ready, and the JSON body of ``/readyz`` (each check with its reason)."""
        verdict = self.verdict
        return verdict.ready, verdict.readiness
