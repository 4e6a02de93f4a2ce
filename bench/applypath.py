"""``python -m bench.applypath``: what applying a batch costs the service's process and PostgreSQL, per record, by
batch size, against a real PostgreSQL (no broker on the path).

``bench.hotpath`` leaves out the wire and the database; ``python -m bench run`` mixes in the broker, the relay and
the bench's own producer. This runs ``BatchProcessor.process`` (decode, then the batch's transactions, as ``run``
does) over the bench's workload cut into batches of each size, on an emptied database, and reads the CPU time of
this process and of every PostgreSQL process. From the sizes it fits how much of the cost is per batch and how
much per record: a live stream's batches are small, so its per-batch cost weighs on every record it carries.

Servers as for ``python -m bench run``: ``BOOKING_DATABASE_URL`` (and ``BOOKING_KAFKA_BOOTSTRAP``, unused but
required with it), else the embedded pair. PostgreSQL's CPU is read from /proc, so only a local server is counted.
An A/B tool like ``bench.hotpath``: figures move with whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.cpu import Servers as ServerProcesses
from bench.hotpath import records_of
from booking_sessions.dev.servers import servers_for, with_throwaway_secret
from booking_sessions.migrate import upgrade_head
from booking_sessions.runtime import tune_gc
from booking_sessions.service import create_engine, input_limits, meeting_links
from booking_sessions.settings import Settings
from consumer.batch import BatchProcessor, transactions_for
from models.records import OutgoingRecord, Refusal

TABLES = ("inbox_messages", "outbox_messages", "session_participants", "session_reservations", "live_sessions")
WARM_UP_BATCHES = 3  # every statement prepared and planned on each pooled connection before the clock starts


@dataclass(frozen=True)
class Cost:
    """CPU per record of one batch size, in µs: this process (decode and transactions) and PostgreSQL's processes."""

    batch_records: int
    transactions: int  # per batch (``parallel_transactions``, as the batch size allows)
    service_us: float
    postgres_us: float
    wall_us: float


@dataclass(frozen=True)
class Fit:
    """cost per record = per_batch / batch size + per_record, in µs (least squares over the sizes measured)."""

    per_batch_us: float
    per_record_us: float


def fit(points: Sequence[tuple[int, float]]) -> Fit | None:
    """The least-squares line through (batch size, µs per record) as ``per_batch / size + per_record``: per batch
    in µs of a whole batch, per record in µs. None for fewer than two distinct sizes."""
    n = len(points)
    if n < 2:
        return None
    xs = [1 / size for size, _ in points]
    ys = [cost for _, cost in points]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    return Fit(per_batch_us=slope, per_record_us=mean_y - slope * mean_x)


class _NoDeadLetters:
    """The bench's workload has no poison; a dead letter here would be a bench error."""

    async def send_dead_letters(self, records: Sequence[OutgoingRecord]) -> list[Refusal]:
        if records:
            raise AssertionError(f"{len(records)} dead letters from the bench's workload")
        return []


async def measure(settings: Settings, engine: AsyncEngine, processes: ServerProcesses, size: int, events: int) -> Cost:
    """Apply ``events`` records in batches of ``size`` on emptied tables; the first batches warm up, unmeasured."""
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
    processor = BatchProcessor(
        engine,
        _NoDeadLetters(),
        link_for=meeting_links(settings),
        output_topic=settings.output_topic,
        dlq_topic=settings.dlq_topic,
        limits=input_limits(settings),
        parallel_transactions=settings.parallel_transactions,
    )
    records = records_of(events, seed=7)
    batches = [records[i : i + size] for i in range(0, len(records), size)]
    for batch in batches[:WARM_UP_BATCHES]:
        await processor.process(batch)
    measured = batches[WARM_UP_BATCHES:]
    count = sum(len(b) for b in measured)
    if not count:
        raise SystemExit(f"--events {events} leaves no batch of {size} to measure after {WARM_UP_BATCHES} warm-ups")
    postgres_before = processes.cpu_times(()).get("postgres", 0.0)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    for batch in measured:
        await processor.process(batch)
    wall_s, cpu_s = time.perf_counter() - wall_before, time.process_time() - cpu_before
    postgres_s = processes.cpu_times(()).get("postgres", 0.0) - postgres_before
    parts = transactions_for(size, settings.parallel_transactions)
    return Cost(size, parts, cpu_s * 1e6 / count, postgres_s * 1e6 / count, wall_s * 1e6 / count)


async def run(sizes: Sequence[int], events: int, transactions: int | None, console: Console) -> list[Cost]:
    async with servers_for(Settings(), console.print) as servers:
        settings = with_throwaway_secret(servers.settings)
        if transactions is not None:
            settings = settings.model_copy(update={"parallel_transactions": transactions})
        url = settings.database_url_value()
        await asyncio.to_thread(upgrade_head, url)
        processes = ServerProcesses.of(url, settings.kafka_bootstrap or "")
        if processes.postmaster is None:
            console.print("[yellow]PostgreSQL is not a local process here: its CPU is not counted[/]")
        engine = create_engine(settings)
        try:
            return [await measure(settings, engine, processes, size, events) for size in sizes]
        finally:
            await engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.applypath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,500,2000", help="batch sizes in records, comma-separated")
    parser.add_argument("--events", type=int, default=40_000, help="records of the workload, per size")
    parser.add_argument(
        "--transactions", type=int, default=None, help="transactions per large batch (default: the settings')"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    tune_gc()  # as `run` does once started
    console = Console(stderr=True)
    costs = asyncio.run(run(sizes, args.events, args.transactions, console))
    for c in costs:
        print(
            f"batches of {c.batch_records:5}, {c.transactions} transaction(s) each: service {c.service_us:6.1f} µs, "
            f"PostgreSQL {c.postgres_us:6.1f} µs of CPU per record; {c.wall_us:6.1f} µs wall per record"
        )
    for name, points in (
        ("service", [(c.batch_records, c.service_us) for c in costs]),
        ("PostgreSQL", [(c.batch_records, c.postgres_us) for c in costs]),
    ):
        if (line := fit(points)) is not None:
            print(f"{name}: {line.per_batch_us / 1000:.1f} ms per batch + {line.per_record_us:.1f} µs per record")


if __name__ == "__main__":
    main()
