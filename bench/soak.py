"""The soak: many events through one service process with retention on, rate and table sizes printed over time.

Every record is on the broker before the service is released, so the service always has work: each interval's
rate is what it can do at that inbox size, which is the question (does the rate fall as the tables grow?). A
producer paced below that would show a flat rate by construction and hide a slowdown as lag.

Retention ages rows within seconds through ``ShortRetention`` (bench only; the settings' one-hour floor stays for
production). The process is the bench's: ``open_service`` + ``run_until``, what ``run`` runs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench import checks
from bench.databases import Rows, create_database, durability, rows
from bench.produce import produce_bulk
from bench.report import Check, machine
from bench.service_path import Fleet, ShortRetention
from bench.soak_report import HEADER, Sample, line, summary
from bench.workload import generate
from booking_sessions.dev.servers import servers_for, with_throwaway_secret
from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics

RELAY_TAIL_TIMEOUT_S = 60.0  # after the last commit, for the relay to publish the last outbox rows

_SIZES = text(
    """
    SELECT (SELECT count(*) FROM inbox_messages),
           (SELECT count(*) FROM outbox_messages WHERE published_at IS NOT NULL),
           (SELECT count(*) FROM outbox_messages WHERE published_at IS NULL),
           pg_total_relation_size('inbox_messages'),
           pg_total_relation_size('outbox_messages')
    """
)


@dataclass(frozen=True)
class SoakOptions:
    retention: ShortRetention | None  # the soak's own; None: the settings' (BOOKING_INBOX_RETENTION, ...)
    events: int = 2_000_000
    partitions: int = 12
    every_s: float = 10.0
    seed: int = 7

    @property
    def retention_label(self) -> str:
        r = self.retention
        if r is None or (r.inbox is None and r.outbox is None):
            return "off"
        windows = {"inbox": r.inbox, "outbox": r.outbox}
        kept = ",".join(f"{k}:{w.total_seconds():g}s" for k, w in windows.items() if w is not None)
        return f"{kept},every:{r.interval_s:g}s"


async def run_soak(settings: Settings, options: SoakOptions, say: Callable[[str], None]) -> bool:
    """Produce, release the service, print a line every ``every_s`` until every record is committed and published,
    then the checks and the summary line. True when every check passed. Raises TimeoutError when the service
    stalls (no committed batch for a minute) or the relay does not finish in ``RELAY_TAIL_TIMEOUT_S``."""
    async with servers_for(settings, say) as servers:
        settings = with_throwaway_secret(servers.settings)
        bootstrap = settings.kafka_bootstrap
        assert bootstrap is not None
        tag = secrets.token_hex(3)
        server_url = settings.database_url_value()
        say(
            f"# {machine()}; {'embedded' if servers.embedded else 'configured'} servers, {await durability(server_url)}"
        )
        url = await create_database(server_url, f"soak_{tag}")
        topic = f"soak-{tag}.booking.events"
        settings = settings.model_copy(
            update={
                "input_topic": topic,
                "output_topic": f"soak-{tag}.session.events",
                "dlq_topic": f"soak-{tag}.booking.events.dlq",
                "group_id": f"soak-{tag}",
                "database_url": SecretStr(url),
                "metrics_port": 0,
            }
        )
        await ensure_topics(bootstrap, [topic, settings.output_topic, settings.dlq_topic], options.partitions)
        say(f"# generating {options.events:,} events")
        workload = generate(options.events, seed=options.seed)
        say(f"# producing them to {topic}")
        ends = await produce_bulk(bootstrap, topic, workload.records, options.partitions, lambda _: None)
        unique, bookings, cancelled = workload.unique_message_ids, workload.bookings, workload.cancelled_bookings
        redelivered = workload.counts["redelivered"]
        del workload  # 2,000,000 records hold about 1.5 GB: let them go before the service runs
        fleet = Fleet("soak", settings, 1, retention=options.retention)
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            fleet.start()
            await fleet.ready(options.partitions)
            samples = await _watch(fleet, engine, ends, options, say)
        finally:
            await fleet.stop()
            await engine.dispose()
        counted = await rows(url)
        found = soak_checks(
            counted, fleet, unique=unique, bookings=bookings, cancelled=cancelled, redelivered=redelivered
        )
        for check in found:
            say(f"# {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        ok = all(c.ok for c in found)
        say(summary(samples, events=options.events, retention=options.retention_label, pruned=fleet.pruned, ok=ok))
        return ok


async def _watch(
    fleet: Fleet, engine: AsyncEngine, ends: dict[int, int], options: SoakOptions, say: Callable[[str], None]
) -> list[Sample]:
    """Release the service; a sample every ``every_s`` until committed past ``ends`` and nothing unpublished."""
    say(HEADER)
    started = fleet.go()
    drained = asyncio.create_task(fleet.drained(fleet.settings.input_topic, ends))
    samples: list[Sample] = []
    before = Sample(0.0, 0, 0, 0, 0, 0, 0, 0)
    tail_deadline: float | None = None
    try:
        while True:
            if drained.done():  # the relay's tail: a line a second until the outbox is empty
                await asyncio.sleep(1.0)
            else:
                await asyncio.wait({drained}, timeout=options.every_s)
            sample = await _sample(fleet, engine, started)
            samples.append(sample)
            say(line(before, sample))
            before = sample
            if not drained.done():
                continue
            drained.result()  # raises what stopped the wait: a stall, a failed process
            if sample.unpublished_rows == 0:
                return samples
            tail_deadline = tail_deadline or time.monotonic() + RELAY_TAIL_TIMEOUT_S
            if time.monotonic() > tail_deadline:
                raise TimeoutError(f"{sample.unpublished_rows} outbox rows still unpublished")
    finally:
        drained.cancel()


async def _sample(fleet: Fleet, engine: AsyncEngine, started: float) -> Sample:
    async with engine.connect() as conn:
        inbox, published, unpublished, inbox_bytes, outbox_bytes = (await conn.execute(_SIZES)).one()
    last_rss = fleet.batches[-1].rss_bytes if fleet.batches else 0
    records = sum(b.records for b in fleet.batches)
    elapsed = time.monotonic() - started
    load = os.getloadavg()[0]
    return Sample(elapsed, records, inbox, published, unpublished, inbox_bytes, outbox_bytes, last_rss, load)


def soak_checks(
    counted: Rows, fleet: Fleet, *, unique: int, bookings: int, cancelled: int, redelivered: int
) -> list[Check]:
    """The bench's row check with what retention deleted added back. A redelivered copy that arrives after its
    original's inbox row was pruned is not a duplicate any more: it is decided again (changing nothing, CONTRACT)
    and inserts a new inbox row. So with pruning, each redelivery is either reported as a duplicate or adds an
    inbox row; without it, every one must be a duplicate."""
    pruned_inbox, pruned_outbox = fleet.pruned.get("inbox", 0), fleet.pruned.get("outbox", 0)
    late = redelivered - fleet.duplicates if pruned_inbox else 0
    late_ok = 0 <= late <= redelivered
    duplicates = Check(
        "soak duplicates",
        late_ok and fleet.duplicates + late == redelivered,
        f"{fleet.duplicates:,} reported, {redelivered:,} redelivered, {late:,} after their inbox row was pruned",
    )
    counted_rows = checks.rows_check(
        "soak",
        counted,
        inbox=unique + late,
        bookings=bookings,
        cancelled=cancelled,
        pruned_inbox=pruned_inbox,
        pruned_outbox=pruned_outbox,
    )
    failures = Check("retention rounds", not fleet.retention_failures, f"{len(fleet.retention_failures)} failed")
    return [counted_rows, duplicates, failures]
