"""bench.ab: the order of the turns and the summary of a paired run (the runs themselves need servers)."""

from __future__ import annotations

from pathlib import Path

from bench.ab import Side, summary, turns


def test_turns_alternate_which_side_goes_first() -> None:
    assert list(turns(3)) == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1)]


def test_the_summary_compares_round_by_round() -> None:
    a = Side(Path("/tmp/old"), rates=[30_000.0, 40_000.0, 35_000.0], ratios=[0.25, 0.30, 0.28])
    b = Side(Path("/tmp/new"), rates=[33_000.0, 39_000.0, 38_500.0], ratios=[0.27, 0.29, 0.31])

    lines = summary(a, b)

    assert lines[0] == "old: (d) 30,000, 40,000, 35,000 records/s; median 35,000, ratio_vs_decode median 0.280"
    assert lines[1] == "new: (d) 33,000, 39,000, 38,500 records/s; median 38,500, ratio_vs_decode median 0.290"
    assert lines[2] == "new against old: faster in 2 of 3 rounds, median +10.0%"
