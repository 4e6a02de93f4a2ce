"""``python -m bench ab A B``: stage (d) of two checkouts, alternating on one set of servers, for a change's A/B;
with ``--rate R``, the (f, h2) stage instead, at R records/s.

Full runs of ``bench run`` told changes of 5% apart poorly on this workplace's 2-core machines: from one run to the
next, minutes apart, the decode ceiling moved 111,000-143,000 records/s and (d) 31,000-39,000. Here both sides
share the servers and the produced records, and run in turns (A B, then B A, ...), each on a fresh consumer group
and migrated database with the decode ceiling (b) read just before it, so that a slow minute falls on both.

(h2)'s p99 at half of (d)'s rate is noisier still: about that rate the service is close to what it can do live
(README, "Under load"). ``--rate`` runs the (f, h2) stage alone in the same turns, each on new topics, group and
database, at a rate the caller chooses, after one unmeasured run of A that warms the broker (a fresh Apache Kafka
spent 36-47% of a core on the stage where a warm one spent 26-30%). Its own noise, read with A and B the same code
(2026-12-01, Apache Kafka and PostgreSQL 15 on the 2-core AMD EPYC), as medians of (h2)'s p99 over six rounds: two
worktrees of one commit at 15,000 records/s, 117 and 138 ms, B lower in 3 of 6; a worktree and this checkout, 156
and 197 ms at 15,000/s, 208 and 308 ms at 18,000/s, B lower in 2 and 1 of 6 (why this checkout read higher twice
is not known: compare two worktrees). A difference within that is no evidence of a change; the CPU each run prints
moved far less (service 60-70% of a core, PostgreSQL 47-60%).

A side is a directory holding a checkout of this repository (``git worktree add /tmp/old HEAD~3``): its service
process imports ``consumer``, ``producer``, ``models`` and ``booking_sessions`` from there; the bench itself
(workload, servers, measurements) is this checkout's.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from bench.harness import Options
from bench.produce import produce_bulk
from bench.report import Results, machine
from bench.runner import Bench
from bench.service_path import Fleet
from bench.user_latency import half_rate
from bench.workload import generate
from booking_sessions.dev.servers import servers_for, with_throwaway_secret
from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics


@dataclass
class Side:
    """One checkout and what its (d) runs measured, in run order."""

    directory: Path
    rates: list[float] = field(default_factory=list)  # records/s
    ratios: list[float] = field(default_factory=list)  # of the decode ceiling read just before
    commit_p99s: list[float] = field(default_factory=list)  # --rate: (f) produce -> offset commit, p99 in ms
    created_p50s: list[float] = field(default_factory=list)  # --rate: (h2) produce -> SessionCreated, p50 in ms
    created_p99s: list[float] = field(default_factory=list)  # --rate: (h2) p99 in ms

    @property
    def name(self) -> str:
        """The checkout's directory name (its path when it has none), for the report's lines."""
        return self.directory.name or str(self.directory)


def turns(rounds: int) -> Iterator[tuple[int, int]]:
    """(round, side index) in the order they run: A B, B A, A B, ... so neither side always goes first."""
    for r in range(rounds):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            yield r, side


def summary(a: Side, b: Side) -> list[str]:
    """Lines for the end of a run: each side's rates and median ratio, and B against A round by round (how many
    rounds B was faster in, and the median of B's rate over A's)."""
    lines = [
        f"{side.name}: (d) {', '.join(f'{r:,.0f}' for r in side.rates)} records/s; "
        f"median {statistics.median(side.rates):,.0f}, ratio_vs_decode median {statistics.median(side.ratios):.3f}"
        for side in (a, b)
    ]
    faster, rounds, change = round_by_round(a.rates, b.rates, b_better=lambda x, y: y > x)
    lines.append(f"{b.name} against {a.name}: faster in {faster} of {rounds} rounds, median {change:+.1%}")
    return lines


def latency_summary(a: Side, b: Side) -> list[str]:
    """``summary`` for ``--rate``: each side's (h2) p99s and the medians of (f)'s p99 and (h2)'s p50 and p99, then B
    against A round by round (in how many rounds B's (h2) p99 was lower, and the median of B's over A's)."""
    lines = [
        f"{side.name}: (h2) p99 {', '.join(f'{p:.0f}' for p in side.created_p99s)} ms; medians: (f) p99 "
        f"{statistics.median(side.commit_p99s):.0f}, (h2) p50 {statistics.median(side.created_p50s):.0f}, "
        f"p99 {statistics.median(side.created_p99s):.0f} ms"
        for side in (a, b)
    ]
    lower, rounds, change = round_by_round(a.created_p99s, b.created_p99s, b_better=lambda x, y: y < x)
    lines.append(f"{b.name} against {a.name}: (h2) p99 lower in {lower} of {rounds} rounds, median {change:+.1%}")
    return lines


def round_by_round(
    a: Sequence[float], b: Sequence[float], *, b_better: Callable[[float, float], bool]
) -> tuple[int, int, float]:
    """B's values against A's of the same round (the rounds both ran): in how many B did better (``b_better(a, b)``),
    how many rounds that is, and the median of B's value over A's, minus one (+0.05: B 5% higher)."""
    pairs = list(zip(a, b, strict=False))
    return sum(1 for x, y in pairs if b_better(x, y)), len(pairs), statistics.median(y / x - 1 for x, y in pairs)


@contextmanager
def importing_from(directory: Path) -> Iterator[None]:
    """Processes spawned inside import this checkout first: multiprocessing's spawn hands the child the parent's
    ``sys.path`` as it is at ``start()``."""
    saved = list(sys.path)
    sys.path[:] = [str(directory), *(p for p in saved if p not in ("", os.getcwd()))]
    try:
        yield
    finally:
        sys.path[:] = saved


async def run_ab(
    directories: Sequence[Path],
    rounds: int,
    events: int,
    console: Console,
    say: Callable[[str], None],
    rate: float | None = None,
) -> tuple[list[Side], int]:
    """``rounds`` runs of (d) per side, in ``turns`` (``service_rounds``); with ``rate`` (records/s), runs of the
    (f, h2) stage at that rate instead (``latency_rounds``). ``say`` gets a line per run and the summary. Returns
    both sides and how many checks failed."""
    a, b = (Side(d.resolve()) for d in directories)
    options = Options(events=events) if rate is None else Options(latency_rate=rate)
    async with servers_for(Settings(), console.print) as servers:
        settings = with_throwaway_secret(servers.settings)
        bench = Bench(settings, options, console, embedded=servers.embedded)
        bench.results = Results(
            events, bench.options.partitions, machine(), "configured" if not servers.embedded else "embedded"
        )
        try:
            if rate is None:
                await service_rounds(bench, (a, b), rounds, say)
                lines = summary(a, b)
            else:
                with bench.bar:
                    await latency_rounds(bench, (a, b), rounds, rate, say)
                lines = latency_summary(a, b)
            for line in lines:
                say(line)
            failed = [check for check in bench.results.checks if not check.ok]
            for check in failed:
                say(f"FAILED {check.name}: {check.detail}")
        finally:
            await bench.clean_up()
    return [a, b], len(failed)


async def side_fleet(bench: Bench, name: str, topic: str, side: Side) -> Fleet:
    """One service process running ``side``'s code on ``topic`` (which exists), with a consumer group, a migrated
    database and output and DLQ topics of its own named ``name``: started, and ready (owning every partition)."""
    settings = bench.stage_settings(name, topic, await bench.database(name))
    await ensure_topics(bench.bootstrap, [settings.output_topic, settings.dlq_topic], bench.options.partitions)
    fleet = bench.fleet(name, settings)
    with importing_from(side.directory):
        fleet.start()
    await fleet.ready(bench.options.partitions)
    return fleet


async def service_rounds(bench: Bench, sides: tuple[Side, Side], rounds: int, say: Callable[[str], None]) -> None:
    """(d) of each side in ``turns`` over one produced workload, the decode ceiling read just before each run."""
    events = bench.options.events
    workload = generate(events, seed=bench.options.seed)
    topic = bench.topic("in", "booking.events")
    partitions = bench.options.partitions
    await ensure_topics(bench.bootstrap, bench.topics, partitions)
    ends = await produce_bulk(bench.bootstrap, topic, workload.records, partitions, lambda _: None)
    for r, index in turns(rounds):
        side = sides[index]
        ceiling = await bench.ceiling(topic, ends, f"(b) before round {r + 1} of {side.name}")
        name = f"ab{r}{'ab'[index]}"
        fleet = await side_fleet(bench, name, topic, side)
        stage = await bench._service(name, f"(d) {side.name}", fleet, ends)
        await fleet.stop()
        await bench._check_service(f"(d) {side.name}, round {r + 1}", fleet, workload)
        rate = stage.records / stage.seconds
        side.rates.append(rate)
        per_s = ceiling.records / ceiling.seconds
        side.ratios.append(rate / per_s)
        cpu = stage.note[stage.note.find("CPU") :]
        say(f"round {r + 1} {side.name}: (d) {rate:,.0f}/s, ceiling {per_s:,.0f}/s, ratio {side.ratios[-1]:.3f}")
        say(f"  {cpu}")


async def latency_rounds(
    bench: Bench, sides: tuple[Side, Side], rounds: int, rate: float, say: Callable[[str], None]
) -> None:
    """The (f, h2) stage of each side at ``rate`` records/s in ``turns``, after one unmeasured run of the first side
    (the broker's warm-up); each run on a new input topic, group and database, with the stage's own warm-up
    (``Options.warm_up_s``) first, as in ``bench run``."""
    for r, index in [(-1, 0), *turns(rounds)]:
        side = sides[index]
        name = f"lt{r + 1}{'ab'[index]}"
        topic = bench.topic(name, "booking.events")
        await ensure_topics(bench.bootstrap, [topic], bench.options.partitions)
        fleet = await side_fleet(bench, name, topic, side)
        commit, created = await half_rate(bench, fleet, topic, rate)
        if r < 0:
            say(f"warm-up run of {side.name}: (h2) p50 {created.p50_ms:.0f}, p99 {created.p99_ms:.0f} ms")
            continue
        side.commit_p99s.append(commit.p99_ms)
        side.created_p50s.append(created.p50_ms)
        side.created_p99s.append(created.p99_ms)
        say(
            f"round {r + 1} {side.name}: {commit.offered_per_s:,.0f}/s offered; (f) p50 {commit.p50_ms:.0f}, p99 "
            f"{commit.p99_ms:.0f} ms; (h2) p50 {created.p50_ms:.0f}, p99 {created.p99_ms:.0f} ms; {commit.trend}"
        )
        say(f"  {commit.cpu}")
