"""The whole bench in one run: the same records through every stage, each stage on its own topics, consumer group
and freshly migrated database, on one broker and one PostgreSQL server."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

from rich.console import Console

from bench import checks
from bench.ceilings import consume_ceiling, median_ceiling
from bench.databases import OutboxWatch, durability, rows, vacuum
from bench.harness import Harness, Options
from bench.naive import NaiveConsumer, run_naive
from bench.peer_stage import run_peer, same_rows_check
from bench.produce import Ends, produce_bulk
from bench.profile import recording
from bench.relay_rate import relay_stage
from bench.report import Check, Results, Stage, machine
from bench.service_path import Fleet
from bench.user_latency import half_rate, trickle
from bench.workload import Workload, generate
from booking_sessions.dev.servers import servers_for, with_throwaway_secret
from booking_sessions.service import meeting_links
from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics, read_topic

__all__ = ["Options", "run_bench"]


async def run_bench(settings: Settings, options: Options, console: Console) -> Results:
    async with servers_for(settings, console.print) as servers:
        bench = Bench(with_throwaway_secret(servers.settings), options, console, embedded=servers.embedded)
        try:
            return await bench.run()
        finally:
            await bench.clean_up()


class Bench(Harness):
    """The stages, in order, on the same records."""

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
        peer_topics = self.topic("peer", "booking.events"), self.topic("peer", "session.events")
        latency_topic = self.topic("latency", "booking.events")
        trickle_topic = self.topic("trickle", "booking.events")
        stages = ("naive", "peer", "service", "latency", "trickle", *(("scaleout",) if o.consumers > 1 else ()))
        urls = {stage: await self.database(stage) for stage in stages}
        fleets = {
            "service": self.fleet("service", self.stage_settings("service", main, urls["service"])),
            # The replay reads the same topic under a new group into the database the service just filled.
            "replay": self.fleet("replay", self.stage_settings("replay", main, urls["service"])),
            "latency": self.fleet("latency", self.stage_settings("latency", latency_topic, urls["latency"])),
            "trickle": self.fleet("trickle", self.stage_settings("trickle", trickle_topic, urls["trickle"])),
        }
        if o.consumers > 1:
            scaleout = self.stage_settings("scaleout", main, urls["scaleout"])
            fleets["scaleout"] = self.fleet("scaleout", scaleout, o.consumers)
        await ensure_topics(self.bootstrap, self.topics, o.partitions)
        with self.bar:
            with self.task("producing the records", workload.events + 2 * sample.events) as t:
                ends = await produce_bulk(self.bootstrap, main, workload.records, o.partitions, self.advance(t))
                naive_ends = await produce_bulk(
                    self.bootstrap, naive_topic, sample.records, o.partitions, self.advance(t)
                )
                peer_ends = await produce_bulk(
                    self.bootstrap, peer_topics[0], sample.records, o.partitions, self.advance(t)
                )
            # All service processes join their groups at once: the broker's join delay is paid once, unmeasured.
            with self.task("starting the service processes", len(fleets)) as t:
                for fleet in fleets.values():
                    fleet.start()
                for fleet in fleets.values():
                    await fleet.ready(o.partitions)
                    self.bar.advance(t)
            for decoding, label in ((False, "(a) raw consume"), (True, "(b) consume + decode")):
                stage = await self.ceiling(main, ends, label, decoding=decoding)
                results.stages.append(stage)
            decoded = f"{workload.events} applied"
            results.checks.append(Check("(b) every record decodes", stage.note == decoded, stage.note))
            ceiling_reads = [stage]
            results.stages.append(await self._naive(urls["naive"], naive_topic, naive_ends, sample.events, every))
            naive_rows = await rows(urls["naive"])
            results.checks.append(
                checks.naive_rows_check(naive_rows, bookings=sample.bookings, cancelled=sample.cancelled_bookings)
            )
            peer = await run_peer(self, urls["peer"], peer_topics, peer_ends, sample, every)
            results.stages.append(peer.stage)

            service = fleets["service"]
            ceiling_reads.append(await self.ceiling(main, ends, "(b) again, before (d)"))
            results.stages.append(await self._service("service", "(d) service: run path, 1 process", service, ends))
            ceiling_reads.append(await self.ceiling(main, ends, "(b) again, after (d)"))
            first = results.stages.index(ceiling_reads[0])
            results.stages[first] = median_ceiling(ceiling_reads, ("at the start", "before (d)", "after (d)"))
            results.rss_mb_at_tenth = service.rss_at(o.events // 10) / 2**20
            results.rss_mb = await service.measure_rss() / 2**20
            await service.stop()
            await self._check_service("(d) service", service, workload)
            results.checks.append(
                checks.duplicates_check("(d) service", service.duplicates, workload.counts["redelivered"])
            )
            results.checks.append(await same_rows_check(peer, urls["service"]))

            before = await rows(urls["service"])
            replay = fleets["replay"]
            results.stages.append(await self._service("replay", "(e) replay: new group, all duplicates", replay, ends))
            await replay.stop()
            results.checks.append(checks.duplicates_check("(e) replay", replay.duplicates, workload.events))
            after = await rows(urls["service"])
            results.checks.append(Check("(e) replay changed no row", after == before, f"{after}"))

            with self.task("VACUUM of the databases of (c), (c2), (d) and (e)", 1):
                await vacuum(urls[stage] for stage in ("naive", "peer", "service"))
            results.e2e_trickle = await trickle(self, fleets["trickle"], trickle_topic)
            half = o.latency_rate or results.rate("service") / 2
            results.latency, results.e2e_half = await half_rate(self, fleets["latency"], latency_topic, half)

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

    async def ceiling(self, topic: str, ends: Ends, label: str, *, decoding: bool = True) -> Stage:
        """A read of (b) on ``topic`` (of (a) without ``decoding``), under a progress bar named ``label``."""
        with self.task(label, sum(ends.values())) as t:
            return await consume_ceiling(
                self.bootstrap,
                topic,
                ends,
                decoding=decoding,
                max_message_bytes=self.settings.max_message_bytes,
                progress=self.advance(t),
            )

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
                    progress=self.advance(t),
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
                cpu_before = self.servers.mark(fleet.pids)
                started = fleet.go()
                consumed = await fleet.drained(topic, ends)
                finished = consumed
                while await watch.unpublished():  # the relay's tail
                    await asyncio.sleep(0.01)
                    finished = time.monotonic()
                cpu = self.servers.busy_since(cpu_before, fleet.pids)
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
