"""The soak's lines: one per interval (rate and table sizes over time) and the summary. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_MB = 2**20


@dataclass(frozen=True, slots=True)
class Sample:
    """What the soak saw at one moment of the consumption (records since the service was released)."""

    elapsed_s: float
    records: int  # consumed and committed, duplicates included
    inbox_rows: int
    published_rows: int  # outbox rows the relay has published (and retention has not yet deleted)
    unpublished_rows: int
    inbox_bytes: int  # pg_total_relation_size: table, indexes and TOAST
    outbox_bytes: int
    rss_bytes: int  # the service process, as of its last committed batch
    load_1m: float = 0.0  # the machine's 1-minute load average: how much else competed for the cores


def rate_per_s(before: Sample, after: Sample) -> float:
    """Records per second between two samples; 0 when no time passed."""
    seconds = after.elapsed_s - before.elapsed_s
    return (after.records - before.records) / seconds if seconds > 0 else 0.0


HEADER = (
    f"{'elapsed':>8} {'records':>10} {'per s':>7} {'inbox rows':>10} {'published':>9} {'unpubl.':>7} "
    f"{'inbox MB':>8} {'outbox MB':>9} {'RSS MB':>6} {'load':>5}"
)


def line(before: Sample, after: Sample) -> str:
    """One interval as a row under ``HEADER``: the rate is over this interval alone."""
    return (
        f"{after.elapsed_s:>7.0f}s {after.records:>10,} {rate_per_s(before, after):>7,.0f} {after.inbox_rows:>10,} "
        f"{after.published_rows:>9,} {after.unpublished_rows:>7,} {after.inbox_bytes / _MB:>8.0f} "
        f"{after.outbox_bytes / _MB:>9.0f} {after.rss_bytes / _MB:>6.0f} {after.load_1m:>5.2f}"
    )


def span_rate(samples: Sequence[Sample], low: float, high: float) -> float:
    """Records per second over the shortest run of samples that spans ``low`` to ``high`` of the last sample's
    records (fractions, 0 ≤ low < high ≤ 1): the rate of, say, the first or the last quarter of the soak, to
    the samples' resolution. Samples in time order, the first at 0 records."""
    if not samples:
        return 0.0
    total = samples[-1].records
    start = [s for s in samples if s.records <= low * total][-1]
    end = next(s for s in samples if s.records >= high * total)
    return rate_per_s(start, end)


def summary(samples: Sequence[Sample], *, events: int, retention: str, pruned: dict[str, int], ok: bool) -> str:
    """The last line, key=value as the bench's: the overall rate (until the last record was committed), the first
    and last quarter's, the largest sizes seen. ``samples`` in time order."""
    first = Sample(0.0, 0, 0, 0, 0, 0, 0, 0)
    total = samples[-1].records if samples else 0
    # Up to the sample that saw the last record committed: the relay's tail after it is sampled once a second.
    drained = next((s for s in samples if s.records == total), first)
    fields = {
        "events": events,
        "seconds": f"{drained.elapsed_s:.1f}",
        "per_s": f"{rate_per_s(first, drained):.0f}",
        "first_quarter_per_s": f"{span_rate([first, *samples], 0.0, 0.25):.0f}",
        "last_quarter_per_s": f"{span_rate([first, *samples], 0.75, 1.0):.0f}",
        "retention": retention,
        "pruned_inbox": pruned.get("inbox", 0),
        "pruned_outbox": pruned.get("outbox", 0),
        "inbox_rows_max": max((s.inbox_rows for s in samples), default=0),
        "inbox_mb_max": f"{max((s.inbox_bytes for s in samples), default=0) / _MB:.0f}",
        "outbox_mb_max": f"{max((s.outbox_bytes for s in samples), default=0) / _MB:.0f}",
        "rss_mb_max": f"{max((s.rss_bytes for s in samples), default=0) / _MB:.0f}",
        "load_1m_max": f"{max((s.load_1m for s in samples), default=0.0):.1f}",
        "ok": str(ok).lower(),
    }
    return " ".join(f"{k}={v}" for k, v in fields.items())
