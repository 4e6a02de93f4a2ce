"""bench.ab: the order of the turns and the summary of a paired run (the runs themselves need servers)."""

from __future__ import annotations

from pathlib import Path

from bench.ab import Side, latency_summary, summary, turns


def test_turns_alternate_which_side_goes_first() -> None:
    assert list(turns(3)) == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1)]


def test_the_summary_compares_round_by_round() -> None:
    a = Side(Path("/tmp/old"), rates=[30_000.0, 40_000.0, 35_000.0], ratios=[0.25, 0.30, 0.28])
    b = Side(Path("/tmp/new"), rates=[33_000.0, 39_000.0, 38_500.0], ratios=[0.27, 0.29, 0.31])

    lines = summary(a, b)

    assert lines[0] == "old: (d) 30,000, 40,000, 35,000 records/s; median 35,000, ratio_vs_decode median 0.280"
    assert lines[1] == "new: (d) 33,000, 39,000, 38,500 records/s; median 38,500, ratio_vs_decode median 0.290"
    assert lines[2] == "new against old: faster in 2 of 3 rounds, median +10.0%"


def test_the_latency_summary_compares_the_p99_of_h2_round_by_round() -> None:
    a = Side(Path("/tmp/old"), commit_p99s=[200.0, 260.0, 180.0], created_p50s=[90.0, 120.0, 80.0])
    a.created_p99s = [240.0, 300.0, 200.0]
    b = Side(Path("/tmp/new"), commit_p99s=[150.0, 270.0, 160.0], created_p50s=[70.0, 130.0, 60.0])
    b.created_p99s = [180.0, 330.0, 190.0]

    lines = latency_summary(a, b)

    assert lines[0] == "old: (h2) p99 240, 300, 200 ms; medians: (f) p99 200, (h2) p50 90, p99 240 ms"
    assert lines[1] == "new: (h2) p99 180, 330, 190 ms; medians: (f) p99 160, (h2) p50 70, p99 190 ms"
    # Per round: -25%, +10%, -5%: lower in two, and the median change is the middle one.
    assert lines[2] == "new against old: (h2) p99 lower in 2 of 3 rounds, median -5.0%"
