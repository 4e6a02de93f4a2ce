"""``python -m bench ab A B``: stage (d) of two checkouts, alternating on one set of servers, for a change's A/B.

Full runs of ``bench run`` told changes of 5% apart poorly on this workplace's 2-core machines: from one run to the
next, minutes apart, the decode ceiling moved 111,000-143,000 records/s and (d) 31,000-39,000. Here both sides
share the servers and the produced records, and run in turns (A B, then B A, ...), each on a fresh consumer group
and migrated database with the decode ceiling (b) read just before it, so that a slow minute falls on both.

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
    pairs = list(zip(a.rates, b.rates, strict=False))
    faster = sum(1 for x, y in pairs if y > x)
    change = statistics.median(y / x - 1 for x, y in pairs)
    lines.append(f"{b.name} against {a.name}: faster in {faster} of {len(pairs)} rounds, median {change:+.1%}")
    return lines


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
    directories: Sequence[Path], rounds: int, events: int, console: Console, say: Callable[[str], None]
) -> tuple[list[Side], int]:
    """``rounds`` runs of (d) per side, in ``turns``; ``say`` gets a line per run and the summary. Returns both
    sides and how many row checks failed."""
    a, b = (Side(d.resolve()) for d in directories)
    async with servers_for(Settings(), console.print) as servers:
        settings = with_throwaway_secret(servers.settings)
        bench = Bench(settings, Options(events=events), console, embedded=servers.embedded)
        bench.results = Results(
            events, bench.options.partitions, machine(), "configured" if not servers.embedded else "embedded"
        )
        try:
            workload = generate(events, seed=bench.options.seed)
            topic = bench.topic("in", "booking.events")
            partitions = bench.options.partitions
            await ensure_topics(bench.bootstrap, bench.topics, partitions)
            ends = await produce_bulk(bench.bootstrap, topic, workload.records, partitions, lambda _: None)
            for r, index in turns(rounds):
                side = (a, b)[index]
                ceiling = await bench.ceiling(topic, ends, f"(b) before round {r + 1} of {side.name}")
                name = f"ab{r}{'ab'[index]}"
                stage_settings = bench.stage_settings(name, topic, await bench.database(name))
                await ensure_topics(
                    bench.bootstrap, [stage_settings.output_topic, stage_settings.dlq_topic], partitions
                )
                fleet = bench.fleet(name, stage_settings)
                with importing_from(side.directory):
                    fleet.start()
                await fleet.ready(partitions)
                stage = await bench._service(name, f"(d) {side.name}", fleet, ends)
                await fleet.stop()
                await bench._check_service(f"(d) {side.name}, round {r + 1}", fleet, workload)
                rate = stage.records / stage.seconds
                side.rates.append(rate)
                per_s = ceiling.records / ceiling.seconds
                side.ratios.append(rate / per_s)
                cpu = stage.note[stage.note.find("CPU") :]
                say(
                    f"round {r + 1} {side.name}: (d) {rate:,.0f}/s, ceiling {per_s:,.0f}/s, ratio {side.ratios[-1]:.3f}"
                )
                say(f"  {cpu}")
            for line in summary(a, b):
                say(line)
            failed = [check for check in bench.results.checks if not check.ok]
            for check in failed:
                say(f"FAILED {check.name}: {check.detail}")
        finally:
            await bench.clean_up()
    return [a, b], len(failed)
