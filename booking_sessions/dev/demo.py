"""``booking-sessions demo``: the seed's scenarios, live, through the real consumer, database and relay.

The runner: it publishes ``demo_scenario``'s steps while the service runs, waits until the service committed past
them, stops the service, and has ``demo_checks`` read the result back and judge it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.dev.demo_checks import Check, checks, inbox_check, print_tables, read_outcome
from booking_sessions.dev.demo_scenario import Scenario, Steps
from booking_sessions.dev.servers import with_throwaway_secret
from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.service import create_engine, open_service, run_until
from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics, offsets_missing
from consumer.results import BatchResult
from models.records import OutgoingRecord
from producer.publish import Publisher

DRAIN_TIMEOUT_S = 40.0
DEMO_PARTITIONS = 12


@dataclass
class Progress:
    """Offsets produced and committed, so the demo can wait for 'drained' without guessing."""

    produced: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset after the last produced
    committed: dict[tuple[str, int], int] = field(default_factory=dict)  # the group's committed offset
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    duplicates: int = 0  # input records whose message id the inbox already held

    async def on_committed(self, result: BatchResult) -> None:
        """The service's ``on_committed`` hook: record the batch's next offsets and repeats, wake the waiter."""
        for tp, offset in result.next_offsets.items():
            self.committed[tp] = max(self.committed.get(tp, 0), offset)
        self.duplicates += result.duplicates
        self.changed.set()

    def drained(self) -> bool:
        """True once every (topic, partition) produced to is committed up to its end."""
        return all(self.committed.get(tp, 0) >= end for tp, end in self.produced.items())


class Demo:
    """One demo run on its own topics and group (``demo-<random tag>``), never touching live data.

    ``settings`` must name a broker and a database (``servers_for`` fills them in); without a
    BOOKING_MEETING_SECRET the demo's bookings get a throwaway one (``with_throwaway_secret``).
    """

    def __init__(self, settings: Settings, console: Console) -> None:
        tag = secrets.token_hex(3)
        # Own topics, group and booking ids: the demo never touches live data, even on a configured broker.
        self.settings = settings.model_copy(
            update={
                "input_topic": f"demo-{tag}.booking.events",
                "output_topic": f"demo-{tag}.session.events",
                "dlq_topic": f"demo-{tag}.booking.events.dlq",
                "group_id": f"demo-{tag}",
            }
        )
        # The demo's own bookings may use a throwaway key even on configured servers.
        self.settings = with_throwaway_secret(self.settings)
        self.console = console
        self.kafka = kafka_client_options(self.settings)  # TLS/SASL, as for the service's own clients
        self.scenario = Scenario(tag, self.settings.input_topic)
        self.progress = Progress()

    async def send(self, publisher: Publisher, records: list[OutgoingRecord]) -> list[tuple[str, int, int]]:
        """Publish ``records`` in order and note the offsets the service has to commit past; returns each record's
        (topic, partition, offset)."""
        placed = [(m.topic, m.partition, m.offset) for m in await publisher.send_all(records)]
        produced = self.progress.produced
        for topic, partition, offset in placed:
            produced[(topic, partition)] = max(produced.get((topic, partition), 0), offset + 1)
        return placed

    async def send_raced(self, publishers: list[Publisher], records: list[OutgoingRecord]) -> None:
        """One record from each of ``publishers`` at once; then each is read back from the log, and one the broker
        acknowledged without keeping it is published again, with a line saying so. Tansu 0.6.0 can do that to two
        producers writing to one partition at once (README, "On the Tansu broker"), which would otherwise fail the
        demo's inbox check for the broker's fault."""
        assert self.settings.kafka_bootstrap is not None
        placed = await asyncio.gather(*(self.send(p, [r]) for p, r in zip(publishers, records, strict=True)))
        missing = await offsets_missing(self.settings.kafka_bootstrap, [where for (where,) in placed], **self.kafka)
        lost = [r for r, (where,) in zip(records, placed, strict=True) if where in missing]
        if lost:
            self.console.print(
                f"  [yellow]the broker acknowledged {len(lost)} of the two and did not keep it[/] (Tansu 0.6.0,"
                ' README "On the Tansu broker"): published again'
            )
            await self.send(publishers[0], lost)

    async def wait_consumed(self) -> None:
        """Until the service committed offsets past every record the demo produced.

        Raises TimeoutError after DRAIN_TIMEOUT_S (40 s), naming the offsets produced and committed.
        """
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not self.progress.drained():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not consumed: produced {self.progress.produced}, committed {self.progress.committed}"
                )
            self.progress.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.changed.wait(), timeout=1.0)

    async def run(self) -> bool:
        """Create the topics, run the service through both steps, stop it, print the tables and the checks.

        Returns True when every check passed. Raises what the servers raise (and TimeoutError from
        ``wait_consumed``); the service itself is stopped in every case.
        """
        s = self.settings
        assert s.kafka_bootstrap is not None
        started = time.monotonic()
        await ensure_topics(
            s.kafka_bootstrap, [s.input_topic, s.output_topic, s.dlq_topic], DEMO_PARTITIONS, **self.kafka
        )
        publishers = [
            await Publisher.start(s.kafka_bootstrap, client_id=f"demo-upstream-{i}", **self.kafka) for i in (1, 2)
        ]
        try:
            async with open_service(s, on_committed=self.progress.on_committed) as service:
                stop = asyncio.Event()
                runner = asyncio.create_task(run_until(service, stop))
                self.console.print("[bold]step 1[/]: upstream publishes while the service runs")
                await self.publish_step(publishers, self.scenario.first_steps(), race=True)
                self.console.print("[bold]step 2[/]: later, a redelivery and a reschedule")
                await self.publish_step(publishers, self.scenario.later_steps(), race=False)
                stop.set()
                await runner  # finishes the batch in hand, commits, flushes the relay
        finally:
            for publisher in publishers:
                await publisher.stop()
        engine = create_engine(s)
        try:
            results = await self.report(engine)
        finally:
            await engine.dispose()
        elapsed = time.monotonic() - started
        table = Table(title=f"Checks ({elapsed:.1f} s)", show_lines=False)
        table.add_column("")
        table.add_column("check")
        table.add_column("detail")
        for check in results:
            table.add_row("[green]PASS[/]" if check.ok else "[red]FAIL[/]", check.name, check.detail)
        self.console.print(table)
        return all(c.ok for c in results)

    async def publish_step(self, publishers: list[Publisher], steps: Steps, *, race: bool) -> None:
        """Publish while the service runs, then wait until it committed past everything published.

        ``race``: also publish ``Scenario.raced()``, one event from each of the two ``publishers`` at once.
        """
        for title, records in steps:
            self.console.print(f"  [cyan]publish[/] {title}: {len(records)} record(s)")
            await self.send(publishers[0], records)
        if race:
            self.console.print("  [cyan]publish[/] two confirmations of one booking, raced from two producers")
            await self.send_raced(publishers, [self.scenario.record(e) for e in self.scenario.raced()])
        await self.wait_consumed()

    async def report(self, engine: AsyncEngine) -> list[Check]:
        """Read the rows and topics back through ``engine``, print them, and return the checks (CONTRACT rules)."""
        seen = await read_outcome(engine, self.settings, self.scenario, self.kafka)
        print_tables(self.console, seen)
        return [
            *checks(self.scenario, seen, self.settings.meeting_base_url),
            inbox_check(seen.inbox, self.progress.duplicates),
        ]


async def run_demo(settings: Settings, console: Console) -> bool:
    """``booking-sessions demo`` on ``settings``' servers (filled in by ``servers_for``): True if every check passed."""
    return await Demo(settings, console).run()
