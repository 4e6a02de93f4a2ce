"""bench.ceilings.median_ceiling: the decode ceiling as the median of its reads around (d)."""

from __future__ import annotations

from bench.ceilings import median_ceiling
from bench.report import Stage


def read(per_s: float) -> Stage:
    return Stage("decode", "(b) consume + decode (service's decode)", 200_000, 200_000 / per_s, "200000 applied")


def test_the_median_read_stands_and_the_note_names_every_read() -> None:
    reads = [read(140_000), read(110_000), read(120_000)]

    ceiling = median_ceiling(reads, ("at the start", "before (d)", "after (d)"))

    assert round(ceiling.per_s) == 120_000
    assert (ceiling.key, ceiling.records) == ("decode", 200_000)
    assert ceiling.note == (
        "200000 applied; median of 3 reads/s: 140,000 (at the start), 110,000 (before (d)), 120,000 (after (d))"
    )
