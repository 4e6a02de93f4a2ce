"""The latency stages: (f) produce -> offset commit and (h2) produce -> SessionCreated at half (d)'s rate, measured
in one paced run, and (h1) produce -> SessionCreated at a trickle, one event at a time (the idle path)."""

from __future__ import annotations

import asyncio
import time

from bench.cpu import CpuMark
from bench.databases import OutboxWatch
from bench.e2e import (
    BUSY_FETCH_WAIT_MS,
    IDLE_FETCH_WAIT_MS,
    CreatedWatch,
    creating_records,
    filling_records,
    produce_trickle,
)
from bench.harness import Harness
from bench.heap import frozen_heap
from bench.latency import (
    batch_trend,
    commit_latencies_s,
    created_latencies_s,
    created_split,
    first_sent_at,
    latency_split,
    median,
    p99_by_second,
    percentile,
)
from bench.produce import produce_paced
from bench.profile import recording
from bench.report import Check, EndToEnd, Latency
from bench.service_path import Fleet
from bench.workload import BenchRecord, generate

# (h1)'s warm-up first fills each partition past its first offset-index entry (``trickle``), quickly.
FILL_PER_PARTITION = 20
FILL_PER_S = 500.0
RELAY_TAIL_TIMEOUT_S = 60.0  # after the last offset commit: the relay's last rows, and the watcher reading them


async def half_rate(h: Harness, fleet: Fleet, topic: str, rate_per_s: float) -> tuple[Latency, EndToEnd]:
    """Offer records at ``rate_per_s`` for the configured time: (f) produce -> offset commit of every record, and
    (h2) produce -> SessionCreated readable of every session they create, from one run.

    First, unmeasured, ``h.options.warm_up_s`` seconds of the same load through the same service process and
    topics, until every record is committed and every SessionCreated read: the timed run then meets what a service
    that has been running meets, partitions the broker has written and read before, a process with its connections
    and prepared statements. On fresh topics, Apache Kafka spent about 0.1 s of CPU on the first writes to 12 new
    partitions (on top of what the records themselves cost), and the queue a cold start left took the service four
    seconds to work off (docs/performance-log.md, "Warm-up"). 0: the timed run starts cold."""
    count = max(20, int(rate_per_s * h.options.latency_s))
    records = generate(count, seed=h.options.seed + 1, prefix="lt").records
    output = fleet.settings.output_topic
    watch = CreatedWatch(h.bootstrap, output, h.options.partitions, fetch_wait_ms=BUSY_FETCH_WAIT_MS)
    await watch.start()
    try:
        with frozen_heap():  # until the last SessionCreated is read: the watcher's clock must not pause either
            fleet.go()
            warmed = await _warm_up(h, fleet, topic, rate_per_s, watch)
            with h.task(f"(f, h2) at {rate_per_s:,.0f}/s", len(records)) as t:
                marks: list[CpuMark] = []  # from the first record due: placing 100,000 records takes the bench ~1 s

                def pacing() -> None:
                    marks.append(h.servers.mark(fleet.pids))

                with recording(h.options.profile_dir, "half-rate", fleet.pids):
                    paced = await produce_paced(h.bootstrap, topic, records, rate_per_s, h.advance(t), on_start=pacing)
                    await fleet.drained(topic, paced.ends)
                cpu = h.servers.busy_since(marks[0], fleet.pids)
            created = await _created_rows(fleet)
            complete = await watch.until(created, RELAY_TAIL_TIMEOUT_S)
    finally:
        await fleet.stop()
        await watch.stop()
    batches = [b for b in fleet.batches if b.at > paced.started]  # the warm-up's were committed before it
    latencies_ms = [s * 1000 for s in commit_latencies_s(topic, paced.sent_at, batches)]
    h.results.checks.append(
        Check("(f) every record committed", len(latencies_ms) == len(records), f"{len(latencies_ms):,}")
    )
    sent = first_sent_at((r.key.decode() for r in records), paced.started, rate_per_s)
    creating: dict[str, tuple[int, int]] = {}
    for i, r in enumerate(records):  # each booking's first record created its session (first_sent_at)
        if i in paced.placed:
            creating.setdefault(r.key.decode(), paced.placed[i])
    seen = {booking: at for booking, at in watch.seen_at.items() if booking in sent}  # not the warm-up's
    e2e_ms = [s * 1000 for s in created_latencies_s(sent, seen)]
    read = f"{len(seen):,} read, {created - warmed:,} in the outbox"
    h.results.checks.append(Check("(h2) every SessionCreated read", complete and len(seen) == created - warmed, read))
    offered = len(records) / paced.seconds if paced.seconds else rate_per_s
    latency = Latency(
        offered_per_s=offered,
        records=len(latencies_ms),
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        max_ms=max(latencies_ms, default=0.0),
        batches=len(batches),
        cpu=cpu,
        chosen=h.options.latency_rate is not None,
        trend=batch_trend(batches),
        split=latency_split(topic, paced.sent_at, batches),
    )
    split = created_split(topic, creating, paced.sent_at, seen, batches)
    note = (
        f"a record's send time is when it was due; the upstream producer lingers 5 ms, the watcher's fetch waits "
        f"up to {BUSY_FETCH_WAIT_MS} ms; {len(batches)} batches" + (f"; {split}" if split else "")
    )
    if by_second := p99_by_second(sent, seen, paced.started):
        note += f"; p99 by second sent: {by_second} ms"
    return latency, _end_to_end(offered, e2e_ms, note)


async def _warm_up(h: Harness, fleet: Fleet, topic: str, rate_per_s: float, watch: CreatedWatch) -> int:
    """``half_rate``'s warm-up: ``h.options.warm_up_s`` seconds of records at ``rate_per_s`` (bookings of their
    own), until all are committed and every SessionCreated they made is read; returns how many those were."""
    if h.options.warm_up_s <= 0:
        return 0
    records = generate(max(20, int(rate_per_s * h.options.warm_up_s)), seed=h.options.seed + 2, prefix="wu").records
    with h.task(f"(f, h2) warming up at {rate_per_s:,.0f}/s", len(records)) as t:
        paced = await produce_paced(h.bootstrap, topic, records, rate_per_s, h.advance(t))
        await fleet.drained(topic, paced.ends)
        created = await _created_rows(fleet)
        await watch.until(created, RELAY_TAIL_TIMEOUT_S)
    return created


async def trickle(h: Harness, fleet: Fleet, topic: str) -> EndToEnd:
    """(h1): the first event of new bookings, each produced alone at ``trickle_per_s`` (acks=all, awaited): every
    one creates a session, whose SessionCreated the watcher times. The note splits the time: the produce
    acknowledgement, produce -> offset commit (fetch wait, decoding, the batch's transaction, the offset commit),
    the batch's transaction alone, and the rest (relay wake-up, its transaction and produce, the watcher's fetch).
    Timed after ``h.options.warm_up_s`` seconds of the same trickle, unmeasured, as in ``half_rate``: the first
    three events of a cold stage took 82-131 ms where the rest took 10-20 (Apache Kafka, three runs). Before that
    trickle, ``FILL_PER_PARTITION`` creating events per partition, sent at ``FILL_PER_S``: each partition of the new
    input and output topics then holds more than its segment's first offset-index entry (4 KB in), whose record
    reached the service or the watcher 20-65 ms late on Apache Kafka, on every partition of both topics at the same
    offsets run after run (docs/performance-log.md, "The first offset-index entry"); a topic in service meets that
    once per segment (1 GB by default)."""
    rate = h.options.trickle_per_s
    count = max(20, int(rate * h.options.latency_s))
    records = creating_records(generate(count * 10, seed=h.options.seed + 2, prefix="tr").records, count)
    warm_up: list[BenchRecord] = []
    fill: list[BenchRecord] = []
    if h.options.warm_up_s > 0:
        warm = max(1, int(rate * h.options.warm_up_s))
        warm_up = creating_records(generate(max(20, warm * 10), seed=h.options.seed + 3, prefix="tw").records, warm)
        # Bookings enough for every partition's share: five times the filling (ten events each).
        bookings = generate(50 * FILL_PER_PARTITION * h.options.partitions, seed=h.options.seed + 4, prefix="tf")
        fill = filling_records(bookings.records, h.options.partitions, FILL_PER_PARTITION)
    output = fleet.settings.output_topic
    watch = CreatedWatch(h.bootstrap, output, h.options.partitions, fetch_wait_ms=IDLE_FETCH_WAIT_MS)
    await watch.start()
    try:
        with frozen_heap():  # as in half_rate
            fleet.go()
            if warm_up:  # as in half_rate: the first events on new partitions and a new process are not timed
                with h.task(f"(h1) warming up at {rate:g}/s", len(fill) + len(warm_up)) as t:
                    filling = await produce_trickle(h.bootstrap, topic, fill, FILL_PER_S, h.advance(t))
                    await fleet.drained(topic, filling.ends)
                    warmed = await produce_trickle(h.bootstrap, topic, warm_up, rate, h.advance(t))
                    await fleet.drained(topic, warmed.ends)
                    await watch.until(len(fill) + len(warm_up), RELAY_TAIL_TIMEOUT_S)
            with h.task(f"(h1) trickle at {rate:g}/s", len(records)) as t:
                started = time.monotonic()
                sent = await produce_trickle(h.bootstrap, topic, records, rate, h.advance(t))
                await fleet.drained(topic, sent.ends)
            complete = await watch.until(len(fill) + len(warm_up) + len(records), RELAY_TAIL_TIMEOUT_S)
    finally:
        await fleet.stop()
        await watch.stop()
    seen = {booking: at for booking, at in watch.seen_at.items() if booking in sent.sent_at}  # not the warm-up's
    h.results.checks.append(
        Check(
            "(h1) every SessionCreated read",
            complete and len(seen) == len(records),
            f"{len(seen):,} of {len(records):,}",
        )
    )
    batches = [b for b in fleet.batches if b.at > started]
    e2e_ms = [s * 1000 for s in created_latencies_s(sent.sent_at, seen)]
    commit_ms = [s * 1000 for s in commit_latencies_s(topic, sent.by_offset, batches)]
    ack_ms = median([s * 1000 for s in sent.ack_s])
    database_ms = median([b.database_s * 1000 for b in batches])
    to_commit = median(commit_ms)
    note = (
        f"p50s: produce ack {ack_ms:.1f} ms, produce -> offset commit {to_commit:.1f} ms (of which the batch's "
        f"transaction {database_ms:.1f} ms), offset commit -> read {median(e2e_ms) - to_commit:.1f} ms; "
        f"{len(batches)} batches"
    )
    return _end_to_end(len(records) / sent.seconds if sent.seconds else rate, e2e_ms, note)


async def _created_rows(fleet: Fleet) -> int:
    """SessionCreated rows in the stage's outbox, once the relay has published every row (or it timed out)."""
    watch = OutboxWatch(fleet.settings.database_url_value())
    try:
        deadline = time.monotonic() + RELAY_TAIL_TIMEOUT_S
        # Polling a table: there is no event to wait on.
        while await watch.unpublished() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return await watch.count_created()
    finally:
        await watch.close()


def _end_to_end(offered_per_s: float, latencies_ms: list[float], note: str) -> EndToEnd:
    return EndToEnd(
        offered_per_s=offered_per_s,
        sessions=len(latencies_ms),
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        max_ms=max(latencies_ms, default=0.0),
        note=note,
    )
