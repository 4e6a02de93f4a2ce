"""The whole bench in one run: the same records through every stage, each stage on its own topics, consumer group
and freshly migrated database, on one broker and one PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from bench import checks
from bench.ceilings import consume_ceiling
from bench.cpu import Servers, busy_note
from bench.databases import OutboxWatch, create_database, drop_databases, durability, rows
from bench.latency import commit_latencies_s, percentile
from bench.naive import NaiveConsumer, run_naive
from bench.produce import Ends, produce_bulk, produce_paced
from bench.profile import recording
from bench.relay_rate import relay_stage
from bench.report import Check, Latency, Results, Stage, machine
from bench.service_path import Fleet
from bench.workload import Workload, generate
from booking_sessions.dev.servers import servers_for, with_throwaway_secret
from booking_sessions.service import meeting_links
from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics, read_topic


@dataclass(frozen=True)
class Options:
    events: int = 200_000
    partitions: int = 12
    consumers: int = 1  # processes of the scale-out stage; 1: no such stage
    naive_events: int = 5_000  # the baseline runs on a sample of whole bookings of about this many records
    latency_s: float = 10.0
    seed: int = 7
    profile_dir: Path | None = None  # py-spy the service processes of (d), (e) and (g) into this directory


async def run_bench(settings: Settings, options: Options, console: Console) -> Results:
    async with servers_for(settings, console.print) as servers:
        bench = Bench(with_throwaway_secret(servers.settings), options, console, embedded=servers.embedded)
        try:
            return await bench.run()
        finally:
            await bench.clean_up()


class Bench:
    def __init__(self, settings: Settings, options: Options, console: Console, *, embedded: bool) -> None:
        assert settings.kafka_bootstrap is not None
        self.settings = settings
        self.embedded = embedded
        self.bootstrap = settings.kafka_bootstrap
        self.server_url = settings.database_url_value()
        self.servers = Servers.of(self.server_url, self.bootstrap)
        self.options = options
        self.console = console
        self.tag = secrets.token_hex(3)
        self.topics: list[str] = []
        self.databases: list[str] = []
        self.fleets: list[Fleet] = []
        self.bar = Progress(
            TextColumn("{task.description:<44}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )

    def topic(self, stage: str, kind: str) -> str:
        name = f"bench-{self.tag}-{stage}.{kind}"
        self.topics.append(name)
        return name

    async def database(self, stage: str) -> str:
        name = f"bench_{self.tag}_{stage}"
        self.databases.append(name)
        return await create_database(self.server_url, name)

    def stage_settings(self, stage: str, input_topic: str, database_url: str) -> Settings:
        return self.settings.model_copy(
            update={
                "input_topic": input_topic,
                "output_topic": self.topic(stage, "session.events"),
                "dlq_topic": self.topic(stage, "booking.events.dlq"),
                "group_id": f"bench-{self.tag}-{stage}",
                "database_url": SecretStr(database_url),
                "metrics_port": 0,
            }
        )

    def fleet(self, name: str, settings: Settings, count: int = 1) -> Fleet:
        fleet = Fleet(name, settings, count)
        self.fleets.append(fleet)
        return fleet

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[TaskID]:
        task = self.bar.add_task(description, total=total)
        try:
            yield task
        finally:
            self.bar.update(task, completed=total, visible=False)

    async def run(self) -> Results:
        o = self.options
        servers = "embedded (Tansu)" if self.embedded else "configured (BOOKING_ URLs)"
        servers = f"{servers}, {await durability(self.server_url)}"
        self.results = results = Results(o.events, o.partitions, machine(), servers)
        results.load = (os.getloadavg()[0], 0.0)
        workload = generate(o.events, seed=o.seed)
        every = max(1, round(o.events / o.naive_events))
        sample = workload.sample(every)
        main, naive_topic = self.topic("in", "booking.events"), self.topic("naive", "booking.events")
        latency_topic = self.topic("latency", "booking.events")
        stages = ("naive", "service", "latency", *(("scaleout",) if o.consumers > 1 else ()))
        urls = {stage: await self.database(stage) for stage in stages}
        fleets = {
            "service": self.fleet("service", self.stage_settings("service", main, urls["service"])),
            # The replay reads the same topic under a new group into the database the service just filled.
            "replay": self.fleet("replay", self.stage_settings("replay", main, urls["service"])),
            "latency": self.fleet("latency", self.stage_settings("latency", latency_topic, urls["latency"])),
        }
        if o.consumers > 1:
            scaleout = self.stage_settings("scaleout", main, urls["scaleout"])
            fleets["scaleout"] = self.fleet("scaleout", scaleout, o.consumers)
        await ensure_topics(self.bootstrap, self.topics, o.partitions)
        with self.bar:
            with self.task("producing the records", workload.events + sample.events) as t:
                ends = await produce_bulk(self.bootstrap, main, workload.records, o.partitions, self._advance(t))
                naive_ends = await produce_bulk(
                    self.bootstrap, naive_topic, sample.records, o.partitions, self._advance(t)
                )
            # All service processes join their groups at once: the broker's join delay is paid once, unmeasured.
            with self.task("starting the service processes", len(fleets)) as t:
                for fleet in fleets.values():
                    fleet.start()
                for fleet in fleets.values():
                    await fleet.ready(o.partitions)
                    self.bar.advance(t)
            for decoding, label in ((False, "(a) raw consume"), (True, "(b) consume + decode")):
                with self.task(label, workload.events) as t:
                    stage = await consume_ceiling(
                        self.bootstrap,
                        main,
                        ends,
                        decoding=decoding,
                        max_message_bytes=self.settings.max_message_bytes,
                        progress=self._advance(t),
                    )
                    results.stages.append(stage)
            decoded = f"{workload.events} applied"
            results.checks.append(Check("(b) every record decodes", stage.note == decoded, stage.note))
            results.stages.append(await self._naive(urls["naive"], naive_topic, naive_ends, sample.events, every))
            naive_rows = await rows(urls["naive"])
            results.checks.append(
                checks.naive_rows_check(naive_rows, bookings=sample.bookings, cancelled=sample.cancelled_bookings)
            )

            service = fleets["service"]
            results.stages.append(await self._service("service", "(d) service: run path, 1 process", service, ends))
            results.rss_mb_at_tenth = service.rss_at(o.events // 10) / 2**20
            results.rss_mb = await service.measure_rss() / 2**20
            await service.stop()
            await self._check_service("(d) service", service, workload)
            results.checks.append(
                checks.duplicates_check("(d) service", service.duplicates, workload.counts["redelivered"])
            )

            before = await rows(urls["service"])
            replay = fleets["replay"]
            results.stages.append(await self._service("replay", "(e) replay: new group, all duplicates", replay, ends))
            await replay.stop()
            results.checks.append(checks.duplicates_check("(e) replay", replay.duplicates, workload.events))
            after = await rows(urls["service"])
            results.checks.append(Check("(e) replay changed no row", after == before, f"{after}"))

            service_rate = results.rate("service")
            results.latency = await self._latency(fleets["latency"], latency_topic, service_rate / 2)

            if "scaleout" in fleets:
                label = f"(g) service: {o.consumers} processes, one group"
                results.stages.append(await self._service("scaleout", label, fleets["scaleout"], ends))
                await fleets["scaleout"].stop()
                name = f"(g) {o.consumers} processes"
                await self._check_service(name, fleets["scaleout"], workload)
                for relays in sorted({1, o.consumers}):  # the relay's own rate per K (bench/relay_rate.py)
                    results.stages.append(await relay_stage(fleets["scaleout"].settings, relays, o.partitions))
        results.load = (results.load[0], os.getloadavg()[0])
        return results

    def _advance(self, task: TaskID) -> Callable[[int], None]:
        return lambda n: self.bar.advance(task, n)

    async def _naive(self, url: str, topic: str, ends: Ends, records: int, every: int) -> Stage:
        # Its outbox rows name an output topic, but it publishes nothing: no topic to create.
        naive = NaiveConsumer(url, meeting_links(self.settings), f"bench-{self.tag}-naive.session.events")
        try:
            with self.task("(c) naive check-then-create", records) as t:
                stage = await run_naive(
                    self.bootstrap,
                    topic,
                    ends,
                    f"bench-{self.tag}-naive",
                    naive,
                    max_message_bytes=self.settings.max_message_bytes,
                    progress=self._advance(t),
                )
        finally:
            await naive.close()
        note = f"1 booking in {every}, whole histories; {stage.note}"
        return dataclasses.replace(stage, note=note)

    async def _service(self, key: str, label: str, fleet: Fleet, ends: Ends) -> Stage:
        """Release the processes; done when offsets past every record are committed and the outbox is empty."""
        topic = fleet.settings.input_topic
        watch = OutboxWatch(fleet.settings.database_url_value())
        try:
            with recording(self.options.profile_dir, key, fleet.pids), self.task(label, sum(ends.values())) as t:
                fleet.on_batch = lambda b: self.bar.advance(t, b.records)
                await fleet.ready(self.options.partitions)  # still split as at the start (no rebalance since)
                cpu_before = self.servers.cpu_times(fleet.pids)
                started = fleet.go()
                consumed = await fleet.drained(topic, ends)
                finished = consumed
                while await watch.unpublished():  # the relay's tail
                    await asyncio.sleep(0.01)
                    finished = time.monotonic()
                cpu = busy_note(cpu_before, self.servers.cpu_times(fleet.pids), time.monotonic() - started)
        finally:
            await watch.close()
        batches = fleet.batches
        records = sum(b.records for b in batches)
        created, updated = sum(b.created for b in batches), sum(b.updated for b in batches)
        wall = max(finished - started, 1e-9) * fleet.count
        decode, database = sum(b.decode_s for b in batches) / wall, sum(b.database_s for b in batches) / wall
        note = (
            f"{len(batches)} batches, {records / max(1, len(batches)):.0f} avg; {fleet.duplicates:,} dup; "
            f"{created:,} created, {updated:,} updated; relay +{max(0.0, finished - consumed):.2f} s; "
            # Decoding runs a batch ahead, while the transactions of the one before wait for PostgreSQL: the
            # two shares overlap and may add up to more than 100%.
            f"time: transactions {database:.0%}, decoding {decode:.0%} (of the next batch meanwhile); {cpu}"
        )
        return Stage(key, label, sum(ends.values()), finished - started, note)

    async def _check_service(self, name: str, fleet: Fleet, workload: Workload) -> None:
        counted = await rows(fleet.settings.database_url_value())
        self.results.checks.append(
            checks.rows_check(
                name,
                counted,
                inbox=workload.unique_message_ids,
                bookings=workload.bookings,
                cancelled=workload.cancelled_bookings,
            )
        )
        published = await read_topic(self.bootstrap, fleet.settings.output_topic, expected=counted.outbox)
        self.results.checks.append(checks.output_check(name, published, counted.outbox))

    async def _latency(self, fleet: Fleet, topic: str, rate_per_s: float) -> Latency:
        """Offer records at ``rate_per_s`` for the configured time; produce -> offset commit of each."""
        count = max(20, int(rate_per_s * self.options.latency_s))
        records = generate(count, seed=self.options.seed + 1, prefix="lt").records
        with self.task(f"(f) p99 at {rate_per_s:,.0f}/s", len(records)) as t:
            fleet.go()
            paced = await produce_paced(self.bootstrap, topic, records, rate_per_s, self._advance(t))
            await fleet.drained(topic, paced.ends)
        await fleet.stop()
        latencies_ms = [s * 1000 for s in commit_latencies_s(topic, paced.sent_at, fleet.batches)]
        self.results.checks.append(
            Check("(f) every record committed", len(latencies_ms) == len(records), f"{len(latencies_ms):,}")
        )
        return Latency(
            offered_per_s=len(records) / paced.seconds if paced.seconds else rate_per_s,
            records=len(latencies_ms),
            p50_ms=percentile(latencies_ms, 50),
            p99_ms=percentile(latencies_ms, 99),
            max_ms=max(latencies_ms, default=0.0),
            batches=len(fleet.batches),
        )

    async def clean_up(self) -> None:
        """Stop every service process; on configured servers also drop the bench's databases and topics."""
        for fleet in self.fleets:
            await fleet.stop()
        if self.embedded:
            return  # the embedded servers take everything with them
        try:
            await drop_databases(self.server_url, self.databases)
        except (SQLAlchemyError, OSError) as error:
            self.console.print(f"could not drop the bench databases {self.databases}: {error}")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            await admin.start()
            await admin.delete_topics(sorted(set(self.topics)))
        except KafkaError as error:
            self.console.print(f"could not delete the bench topics: {error!r}")
        finally:
            await admin.close()
