"""``python -m bench.hotpath``: the service's CPU path per record, in-process, no servers (issue 15, item 4).

Runs what one batch costs the service's own process apart from the wire and the database, over the bench's
workload (``bench.workload.generate``) cut into batches of the service's size: the SHA-256, ``decode``, the
grouping, ``decide`` and the building of every statement's parameters (``store.insert_inbox_and_lock`` and
``store.write_decisions`` against a connection that only keeps what it is given). Each stage is timed on its own,
best of ``--rounds``, in microseconds per record; ``--profile`` prints cProfile's top functions instead.

An A/B tool: run it before and after a change, on a quiet machine if there is one (other work on the CPU moves
every figure; the best of several rounds is the steadiest). It never touches a server, so it cannot tell what
asyncpg, SQLAlchemy or PostgreSQL cost; ``python -m bench run --profile DIR`` shows those.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from bench.workload import generate
from booking_sessions.runtime import tune_gc
from booking_sessions.settings import Settings
from consumer import store
from consumer.decide import Decision, SessionRow, decide
from consumer.decode import Limits, decode, payload_digest
from consumer.grouping import group_events, share_out, split_repeats
from consumer.ids import meeting_link
from models.records import Decoded, Record

BATCH_RECORDS: int = Settings.model_fields["max_batch_records"].default  # BOOKING_MAX_BATCH_RECORDS's default
PARTS = 2  # its parallel transactions
TOPIC = "booking.events"


class _Result(list[tuple[Any, ...]]):
    """What a statement returned: rows as tuples."""


class KeepingConnection:
    """Stands in for ``AsyncConnection`` in ``store``: keeps the parameters, answers as a database would for a
    stream of new events (no repeat in the inbox; every session row the decisions expected to insert, inserted)."""

    def __init__(self) -> None:
        self.parameters = 0

    async def execute(self, statement: object, parameters: dict[str, Sequence[object]]) -> _Result:
        self.parameters += sum(len(column) for column in parameters.values())
        if statement is store._WRITE_DECISIONS:
            return _Result((b,) for b in parameters["booking_id"])
        return _Result()


def records_of(events: int, seed: int) -> list[Record]:
    """The workload as the service's records, round-robin over 12 partitions, stamped now (ms since the epoch)."""
    now_ms = int(time.time() * 1000)
    workload = generate(events, seed=seed)
    return [Record(TOPIC, i % 12, i // 12, r.key, r.value, (), now_ms) for i, r in enumerate(workload.records)]


def _batches(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + BATCH_RECORDS] for i in range(0, len(items), BATCH_RECORDS)]


class Path:
    """The stages of one pass over the records; each keeps its output for the next."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.limits = Limits()
        self.now = datetime.now(UTC)
        secret = b"bench-secret"
        self.link_for: Callable[[UUID], str] = lambda sid: meeting_link("https://meet.jit.si", sid, secret)
        self.digests: list[str] = []
        self.decoded: list[Decoded] = []
        self.parts: list[list[list[Decoded]]] = []
        self.decisions: list[list[Decision]] = []
        self.rows: dict[str, SessionRow] = {}

    def digest(self) -> None:
        self.digests = [payload_digest(r.value) for r in self.records]

    def decode(self) -> None:
        limits, digests = self.limits, self.digests
        self.decoded = [decode(r, limits, digests[i]) for i, r in enumerate(self.records)]

    def group(self) -> None:
        self.parts = []
        for batch in _batches(self.decoded):
            firsts, _ = split_repeats(batch)
            self.parts.append(share_out(firsts, PARTS))

    def decide(self) -> None:
        """Each part's bookings decided against the rows earlier batches left (as the locked rows would be)."""
        self.decisions = []
        rows: dict[str, SessionRow] = {}
        for parts in self.parts:
            for part in parts:
                decisions = []
                for booking, events in group_events(part).items():
                    decision = decide(rows.get(booking), events, self.link_for, self.now)
                    if decision.session is not None:
                        rows[booking] = decision.session
                    decisions.append(decision)
                self.decisions.append(decisions)
        self.rows = rows

    def store(self) -> None:
        """The parameters of every statement of every part: the inbox insert and the decisions' writes."""
        conn: Any = KeepingConnection()
        parts = [part for parts in self.parts for part in parts]

        async def write() -> None:
            for part, decisions in zip(parts, self.decisions, strict=True):
                await store.insert_inbox_and_lock(conn, [d for d in part if d.message_id is not None])
                await store.write_decisions(conn, decisions, "session.events")

        asyncio.run(write())


STAGES = ("digest", "decode", "group", "decide", "store")


def measure(records: list[Record], rounds: int) -> dict[str, float]:
    """Best seconds of each stage over ``rounds`` passes."""
    best = dict.fromkeys(STAGES, float("inf"))
    for _ in range(rounds):
        path = Path(records)
        for stage in STAGES:
            started = time.process_time()
            getattr(path, stage)()
            best[stage] = min(best[stage], time.process_time() - started)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="records of the workload")
    parser.add_argument("--rounds", type=int, default=5, help="passes; each stage's best counts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile one pass, top functions by own time")
    args = parser.parse_args(argv)
    records = records_of(args.events, args.seed)
    tune_gc()  # as `run` does once started: the collector's pauses would otherwise land on random stages
    if args.profile:
        profiler = cProfile.Profile()
        path = Path(records)
        profiler.enable()
        for stage in STAGES:
            getattr(path, stage)()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    best = measure(records, args.rounds)
    n = len(records)
    for stage in STAGES:
        print(f"{stage:8} {best[stage] / n * 1e6:7.2f} µs/record")
    print(f"{'total':8} {sum(best.values()) / n * 1e6:7.2f} µs/record  ({n} records, best of {args.rounds})")


if __name__ == "__main__":
    main()
