"""The bench's report: the last line's fields (peer and end-to-end included), its parsing, the JSON and the table."""

from __future__ import annotations

import pytest
from rich.console import Console

from bench.report import Check, EndToEnd, Latency, Results, Stage, e2e_note, parse_summary, table


def results() -> Results:
    r = Results(200_000, 12, "2 cores", "embedded")
    r.stages += [
        Stage("decode", "(b)", 200_000, 2.0),
        Stage("naive", "(c)", 5_000, 10.0),
        Stage("peer", "(c2)", 5_000, 25.0),
        Stage("service", "(d)", 200_000, 8.0),
    ]
    r.latency = Latency(12_500.0, 125_000, 150.0, 290.0, 320.0, 80)
    r.e2e_trickle = EndToEnd(20.0, 200, 30.0, 48.6, 55.0, "produce ack 1 ms")
    r.e2e_half = EndToEnd(12_500.0, 12_000, 170.0, 310.4, 400.0)
    r.rss_mb = 160.4
    r.checks.append(Check("rows", True, "fine"))
    return r


def test_the_last_line_has_the_peer_and_end_to_end_fields() -> None:
    fields = parse_summary(results().summary_line())
    assert fields["service_per_s"] == 25_000
    assert fields["naive_per_s"] == 500
    assert fields["peer_per_s"] == 200
    assert fields["ratio_vs_peer"] == 125.0
    assert fields["ratio_vs_naive"] == 50.0
    assert fields["e2e_p99_trickle_ms"] == 49  # rounded to whole milliseconds
    assert fields["e2e_p99_half_ms"] == 310
    assert fields["p99_commit_ms"] == 290


def test_the_ratio_to_the_ceiling_is_not_rounded_up_to_the_goal() -> None:
    r = Results(200_000, 12, "2 cores", "embedded")
    r.stages += [Stage("decode", "(b)", 121_215, 1.0), Stage("service", "(d)", 36_274, 1.0)]
    assert parse_summary(r.summary_line())["ratio_vs_decode"] == 0.299  # 0.2993: below 0.30


def test_stages_that_did_not_run_read_zero() -> None:
    r = Results(20_000, 12, "2 cores", "embedded")
    r.stages.append(Stage("service", "(d)", 20_000, 1.0))
    fields = parse_summary(r.summary_line())
    assert (fields["peer_per_s"], fields["ratio_vs_peer"]) == (0, 0)
    assert (fields["e2e_p99_trickle_ms"], fields["e2e_p99_half_ms"]) == (0, 0)


def test_summary_fields_are_unique_and_in_a_fixed_order() -> None:
    keys = [pair.split("=")[0] for pair in results().summary_line().split()]
    assert len(keys) == len(set(keys))
    assert keys[-4:] == ["peer_per_s", "ratio_vs_peer", "e2e_p99_trickle_ms", "e2e_p99_half_ms"]


def test_parse_summary_refuses_a_malformed_pair() -> None:
    with pytest.raises(ValueError, match=r"not enough values|could not convert"):
        parse_summary("events=10 service_per_s")
    with pytest.raises(ValueError, match="could not convert"):
        parse_summary("events=ten")


def test_json_carries_the_end_to_end_stages_and_the_last_lines_figures() -> None:
    data = results().as_json()
    assert data["e2e_trickle"]["p99_ms"] == 48.6
    assert data["e2e_half"]["sessions"] == 12_000
    assert data["figures"]["ratio_vs_peer"] == 125.0
    assert data["figures"] == parse_summary(data["summary"])
    assert [s["per_s"] for s in data["stages"]] == [100_000.0, 500.0, 200.0, 25_000.0]


def test_e2e_note_leads_with_the_figures() -> None:
    assert e2e_note(EndToEnd(20.0, 200, 30.2, 48.6, 55.0, "produce ack 1 ms")) == (
        "p50 30 ms, p99 49 ms, max 55 ms; produce ack 1 ms"
    )
    assert e2e_note(EndToEnd(20.0, 200, 30.2, 48.6, 55.0)) == "p50 30 ms, p99 49 ms, max 55 ms"


def test_the_table_shows_both_end_to_end_rows() -> None:
    console = Console(width=200, record=True)
    console.print(table(results()))
    text = console.export_text()
    assert "(h1) produce -> SessionCreated, trickle" in text
    assert "(h2) produce -> SessionCreated, half rate" in text
    assert "(c2)" in text
