"""The bench's results: one table for people, one JSON object and one summary line for scripts."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Stage:
    key: str  # raw, decode, naive, peer, service, replay, scaleout
    label: str
    records: int
    seconds: float
    note: str = ""

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


_HALF = "half (d)'s rate"
_CHOSEN = "the chosen rate (--latency-rate)"


@dataclass
class Latency:
    """Produce -> offset commit, measured at a fixed offered rate."""

    offered_per_s: float
    records: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    batches: int
    cpu: str = ""  # where the machine's CPU went meanwhile (bench.cpu.busy_note)
    chosen: bool = False  # the rate was --latency-rate's, not half of (d)'s
    trend: str = ""  # the batches from the run's first quarter to its last (bench.latency.batch_trend)
    split: str = ""  # where a record's time went (bench.latency.latency_split)


@dataclass
class EndToEnd:
    """Produce -> ``SessionCreated`` readable on the output topic, per session created, at an offered rate."""

    offered_per_s: float
    sessions: int  # SessionCreated read and matched to the event that created them
    p50_ms: float
    p99_ms: float
    max_ms: float
    note: str = ""  # what the time is made of


@dataclass
class Results:
    events: int
    partitions: int
    machine: str
    servers: str
    stages: list[Stage] = field(default_factory=list)
    latency: Latency | None = None
    e2e_trickle: EndToEnd | None = None  # (h1): one event at a time, 20 a second: the idle path
    e2e_half: EndToEnd | None = None  # (h2): at half (d)'s rate, measured in the same run as (f)
    rss_mb_at_tenth: float = 0.0  # the service process after a tenth of the events
    rss_mb: float = 0.0  # ... and after all of them
    checks: list[Check] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and at the end: other work

    def rate(self, key: str) -> float:
        return next((s.per_s for s in self.stages if s.key == key), 0.0)

    def ratio(self, key: str) -> float:
        """The service's rate over stage ``key``'s; 0 when that stage did not run."""
        base = self.rate(key)
        return self.rate("service") / base if base else 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def summary_line(self) -> str:
        """key=value pairs for scripts (parsed back by ``parse_summary``); a stage that did not run reads 0.
        ``ratio_vs_decode`` has three decimals: with two, 36,274/s over a ceiling of 121,215/s (0.2993) read 0.30,
        issue 15's goal, which it is not."""
        p99 = self.latency.p99_ms if self.latency is not None else 0.0
        trickle = self.e2e_trickle.p99_ms if self.e2e_trickle is not None else 0.0
        half = self.e2e_half.p99_ms if self.e2e_half is not None else 0.0
        return (
            f"events={self.events} service_per_s={self.rate('service'):.0f} "
            f"decode_ceiling_per_s={self.rate('decode'):.0f} naive_per_s={self.rate('naive'):.0f} "
            f"replay_per_s={self.rate('replay'):.0f} ratio_vs_decode={self.ratio('decode'):.3f} "
            f"ratio_vs_naive={self.ratio('naive'):.1f} p99_commit_ms={p99:.0f} rss_mb={self.rss_mb:.0f} "
            f"peer_per_s={self.rate('peer'):.0f} ratio_vs_peer={self.ratio('peer'):.1f} "
            f"e2e_p99_trickle_ms={trickle:.0f} e2e_p99_half_ms={half:.0f}"
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for stage, raw in zip(self.stages, data["stages"], strict=True):
            raw["per_s"] = round(stage.per_s, 1)
        data["summary"] = self.summary_line()
        data["figures"] = parse_summary(data["summary"])  # the last line's fields, as numbers
        return data


def parse_summary(line: str) -> dict[str, float]:
    """The summary line back into numbers, for scripts comparing runs. Raises ValueError on a malformed pair."""
    pairs = (pair.split("=", 1) for pair in line.split())
    return {key: float(value) for key, value in pairs}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def table(results: Results) -> Table:
    decode = results.rate("decode")
    grid = Table(title=f"booking-sessions bench: {results.events} events, {results.partitions} partitions")
    for name, justify in (("stage", "left"), ("records", "right"), ("s", "right"), ("per s", "right")):
        grid.add_column(name, justify=justify)  # type: ignore[arg-type]
    grid.add_column("of decode", justify="right")
    grid.add_column("notes", overflow="fold")
    for s in results.stages:
        share = f"{s.per_s / decode:.2f}" if decode else "-"
        grid.add_row(s.label, f"{s.records:,}", f"{s.seconds:.2f}", f"{s.per_s:,.0f}", share, s.note)
    if results.latency is not None:
        lat = results.latency
        grid.add_row(
            "(f) produce -> offset commit",
            f"{lat.records:,}",
            "",
            f"{lat.offered_per_s:,.0f}",
            "",
            "; ".join(
                part
                for part in (
                    f"offered at {_CHOSEN if lat.chosen else _HALF}: p50 {lat.p50_ms:.0f} ms, "
                    f"p99 {lat.p99_ms:.0f} ms, max {lat.max_ms:.0f} ms",
                    f"{lat.batches} batches, {lat.records / max(1, lat.batches):.0f} avg",
                    lat.trend,
                    lat.split,
                    lat.cpu,
                )
                if part
            ),
        )
    for label, e2e in (
        ("(h1) produce -> SessionCreated, trickle", results.e2e_trickle),
        ("(h2) produce -> SessionCreated, half rate", results.e2e_half),
    ):
        if e2e is not None:
            grid.add_row(label, f"{e2e.sessions:,}", "", f"{e2e.offered_per_s:,.0f}", "", e2e_note(e2e))
    grid.add_row(
        "service RSS",
        "",
        "",
        "",
        "",
        f"{results.rss_mb_at_tenth:.0f} MB after {results.events // 10:,} events, {results.rss_mb:.0f} MB after "
        f"{results.events:,}",
    )
    return grid


def e2e_note(e2e: EndToEnd) -> str:
    """The figures of one end-to-end stage, then what its time is made of."""
    figures = f"p50 {e2e.p50_ms:.0f} ms, p99 {e2e.p99_ms:.0f} ms, max {e2e.max_ms:.0f} ms"
    return f"{figures}; {e2e.note}" if e2e.note else figures


def print_report(results: Results, console: Console, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results.as_json()), flush=True)  # one line, not wrapped, not coloured
    else:
        console.print(table(results))
        console.print(
            f"machine: {results.machine}; servers: {results.servers}; load average {results.load[0]:.2f} at the "
            f"start, {results.load[1]:.2f} at the end",
            highlight=False,
        )
        for c in results.checks:
            mark = "[green]ok[/]" if c.ok else "[red]FAILED[/]"
            console.print(f"  {mark} {c.name}: {c.detail}", highlight=False)
    print(results.summary_line(), flush=True)  # last line, exactly, whatever the terminal width
