"""``python -m bench``: the service beside its ceilings and the naive baseline, on one set of records; and ``soak``."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench.ab import run_ab
from bench.report import print_report
from bench.runner import Options, run_bench
from bench.service_path import ShortRetention
from bench.soak import SoakOptions, run_soak
from booking_sessions.logs import configure_logging
from booking_sessions.ops.terminal import help_text
from booking_sessions.settings import Settings


def bench(
    events: Annotated[int, typer.Option(min=20, help="records in the workload, over events/10 bookings")] = 200_000,
    consumers: Annotated[
        int, typer.Option(min=1, help="also run the service as K processes in one group (scale-out stage)")
    ] = 1,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of every bench topic")] = 12,
    naive_events: Annotated[
        int, typer.Option(min=20, help="about this many records (whole bookings) for the baseline and the peer")
    ] = 5_000,
    latency_s: Annotated[
        float, typer.Option(min=1.0, help="seconds of offered load for each latency stage (f, h1, h2)")
    ] = 10.0,
    latency_rate: Annotated[
        float | None,
        typer.Option(min=1.0, help="records/s offered in (f) and (h2) instead of half of (d)'s rate"),
    ] = None,
    warm_up_s: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="seconds of (h1)'s and (f, h2)'s load run first, unmeasured, through the same service and topics",
        ),
    ] = 4.0,
    seed: Annotated[int, typer.Option(help="workload seed; the same seed gives the same records")] = 7,
    json: Annotated[
        bool, typer.Option("--json", help="print the results as one JSON line instead of the table")
    ] = False,
    profile: Annotated[
        Path | None, typer.Option(help="record the service processes with py-spy into this directory")
    ] = None,
) -> None:
    """Measure, in one run on the same records: (a) raw consume, (b) consume + decode, (c) the old
    check-then-create code, (c2) the peer (FastStream with faststream-outbox), (d) the service's run path end to
    end, (e) a replay (all duplicates), (h1) produce -> SessionCreated readable at a trickle (20 events/s, one at a
    time), (f) produce -> offset commit and (h2) produce -> SessionCreated readable at half the service's rate, and
    with --consumers K (g) K service processes.

    Each stage gets its own topics, consumer group and migrated database. Uses embedded servers (Tansu and
    PostgreSQL 18) unless BOOKING_KAFKA_BOOTSTRAP and BOOKING_DATABASE_URL are set; then the database user needs
    CREATEDB, and the bench's databases and topics are dropped at the end. Exit code 1 if a check failed.
    """
    configure_logging("WARNING")
    options = Options(
        events,
        partitions,
        consumers,
        naive_events,
        latency_s,
        seed,
        profile,
        latency_rate=latency_rate,
        warm_up_s=warm_up_s,
    )
    progress = Console(stderr=True)
    results = asyncio.run(run_bench(Settings(), options, progress))
    # Piped (e.g. into a README), a table 80 columns wide would fold every note.
    print_report(results, Console() if sys.stdout.isatty() else Console(width=150), as_json=json)
    if not results.ok:
        raise typer.Exit(1)


def soak(
    events: Annotated[int, typer.Option(min=20, help="records, over events/10 bookings")] = 2_000_000,
    every_s: Annotated[float, typer.Option(min=0.5, help="seconds between two lines")] = 10.0,
    retain_s: Annotated[
        float, typer.Option(min=1.0, help="bench only: inbox and published outbox rows older than this are pruned")
    ] = 20.0,
    retention_interval_s: Annotated[float, typer.Option(min=0.5, help="seconds between two retention rounds")] = 5.0,
    no_retention: Annotated[bool, typer.Option("--no-retention", help="retention off, for comparison")] = False,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of the soak's topics")] = 12,
    seed: Annotated[int, typer.Option(help="workload seed")] = 7,
) -> None:
    """Soak one service process (the `run` path) with every record already on the broker and retention on: a
    line every --every-s seconds (elapsed, records committed, rate over that interval, inbox rows, outbox rows
    published and unpublished, both tables' size on disk with indexes, the process's RSS), then the row checks
    and a key=value summary line. Stops by itself; exit code 1 if a check failed.

    Retention here uses windows of seconds (--retain-s), set only for this bench process: `run` keeps its
    one-hour floor (BOOKING_INBOX_RETENTION). Servers as for `bench run` (embedded unless the BOOKING_ URLs are set;
    on configured servers the soak's database and topics are left behind, named soak_<tag>).
    """
    configure_logging("WARNING")
    window = timedelta(seconds=retain_s)
    retention = (
        ShortRetention(None, None, 1.0) if no_retention else ShortRetention(window, window, retention_interval_s)
    )
    options = SoakOptions(retention, events, partitions, every_s, seed)
    ok = asyncio.run(run_soak(Settings(), options, lambda text: print(text, flush=True)))
    if not ok:
        raise typer.Exit(1)


def ab(
    a: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="checkout A (the reference)")],
    b: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="checkout B (the change)")],
    rounds: Annotated[int, typer.Option(min=1, help="runs of (d) per checkout, in turns: A B, B A, ...")] = 5,
    events: Annotated[int, typer.Option(min=20, help="records in the workload, over events/10 bookings")] = 200_000,
    rate: Annotated[
        float | None,
        typer.Option(min=1.0, help="run the (f, h2) stage at this many records/s instead of (d); --events unused"),
    ] = None,
) -> None:
    """Stage (d) of two checkouts of this repository in turns, on one set of servers and one produced workload,
    each run on a fresh consumer group and database with the decode ceiling (b) read just before it: a line per
    run, then each side's rates and median ratio_vs_decode and in how many rounds B was faster. For a change's A/B
    on a machine whose speed wanders (README, Performance); make A with `git worktree add DIR REV`. Servers as for
    `bench run`. Exit code 1 if a run's rows were wrong.

    With --rate R: the (f, h2) stage instead, at R records/s (10 s after 4 s unmeasured, as in `bench run`), after
    one unmeasured run of A that warms the broker: each run's (f) and (h2) percentiles and CPU, then each side's
    medians and in how many rounds B's (h2) p99 was lower; with identical code that p99 moved by about 45% here, so
    compare two worktrees over many rounds (docs/performance-log.md, "(h2) in turns"). Exit code 1 if a record was
    not committed or a SessionCreated not read.
    """
    configure_logging("WARNING")
    console = Console(stderr=True)
    _, failed = asyncio.run(run_ab((a, b), rounds, events, console, lambda line: print(line, flush=True), rate))
    if failed:
        raise typer.Exit(1)


# Outside the wheel (issue 11): run from a clone, `python -m bench run` (the bench) or `python -m bench soak`.
app = typer.Typer(help="Measure the service on the embedded servers (README, Performance).", no_args_is_help=True)
# Help from the docstrings reflowed (help_text): rich would keep their hard line breaks and wrap them badly.
app.command("run", help=help_text(bench))(bench)
app.command("soak", help=help_text(soak))(soak)
app.command("ab", help=help_text(ab))(ab)
