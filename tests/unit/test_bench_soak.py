"""The soak's pure parts: interval rates, its lines and summary, and the row checks with retention's deletions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from typer.testing import CliRunner

from bench.checks import rows_check
from bench.cli import app
from bench.databases import Rows
from bench.service_path import Committed, Fleet, ShortRetention
from bench.soak import SoakOptions, soak_checks
from bench.soak_report import HEADER, Sample, line, rate_per_s, span_rate, summary
from booking_sessions.settings import Settings

MB = 2**20


def sample(elapsed_s: float, records: int, inbox: int = 0) -> Sample:
    return Sample(elapsed_s, records, inbox, 10, 2, 48 * MB, 3 * MB, 150 * MB, 1.5)


def test_rate_over_an_interval() -> None:
    assert rate_per_s(sample(10.0, 200_000), sample(20.0, 450_000)) == 25_000.0
    assert rate_per_s(sample(10.0, 200_000), sample(10.0, 200_000)) == 0.0  # no time: no division by zero


def test_line_lines_up_under_the_header() -> None:
    text = line(sample(10.0, 200_000), sample(20.0, 450_000, inbox=400_000))
    assert text.split() == ["20s", "450,000", "25,000", "400,000", "10", "2", "48", "3", "150", "1.50"]
    assert len(text) == len(HEADER)


SOAK = [sample(0.0, 0), sample(10.0, 300_000), sample(20.0, 500_000), sample(30.0, 700_000), sample(40.0, 800_000)]


def test_span_rate_covers_the_quarter_at_the_samples_resolution() -> None:
    assert span_rate(SOAK, 0.0, 0.25) == 30_000.0  # 0 .. 300,000 (the first sample past 200,000)
    assert span_rate(SOAK, 0.75, 1.0) == 15_000.0  # 500,000 (last at or below 600,000) .. 800,000
    assert span_rate([], 0.0, 0.25) == 0.0


def test_summary_ends_at_the_last_commit_not_the_relay_tail() -> None:
    tail = sample(45.0, 800_000)  # the relay's tail: no new records
    text = summary([*SOAK[1:], tail], events=800_000, retention="off", pruned={"inbox": 5}, ok=True)
    fields = dict(pair.split("=") for pair in text.split())
    assert fields["seconds"] == "40.0"
    assert fields["per_s"] == "20000"
    assert fields["first_quarter_per_s"] == "30000"
    assert fields["last_quarter_per_s"] == "15000"
    assert (fields["pruned_inbox"], fields["pruned_outbox"], fields["ok"]) == ("5", "0", "true")
    assert (fields["inbox_mb_max"], fields["rss_mb_max"], fields["load_1m_max"]) == ("48", "150", "1.5")


def test_retention_label() -> None:
    short = ShortRetention(timedelta(seconds=20), None, 5.0)
    assert SoakOptions(short).retention_label == "inbox:20s,every:5s"
    assert SoakOptions(ShortRetention(None, None, 1.0)).retention_label == "off"


ROWS = Rows(
    inbox=900,
    sessions=100,
    participants=100,
    reservations=100,
    session_created=60,
    session_updated=300,
    unpublished=0,
    cancelled=50,
    unannounced=40,
    reservations_cancelled=50,
    session_cancelled=10,
)


def test_rows_check_adds_back_pruned_inbox_rows() -> None:
    assert rows_check("soak", ROWS, inbox=950, bookings=100, cancelled=50, pruned_inbox=50).ok
    assert not rows_check("soak", ROWS, inbox=950, bookings=100, cancelled=50).ok


def test_rows_check_leaves_out_outbox_counts_only_once_outbox_rows_were_pruned() -> None:
    fewer_created = Rows(**{**ROWS.__dict__, "session_created": 20})
    assert not rows_check("soak", fewer_created, inbox=900, bookings=100, cancelled=50).ok
    assert rows_check("soak", fewer_created, inbox=900, bookings=100, cancelled=50, pruned_outbox=40).ok
    # Retention never touches the sessions: a missing one fails also after pruning.
    one_short = Rows(**{**ROWS.__dict__, "sessions": 99})
    assert not rows_check("soak", one_short, inbox=900, bookings=100, cancelled=50, pruned_outbox=40).ok


def fleet(*, duplicates: int, pruned_inbox: int) -> Fleet:
    f = Fleet("soak", Settings(), 1)
    f.batches.append(Committed(0, 0.0, {}, 1000, duplicates, 0, 0, 0, 0.0, 0.0))
    if pruned_inbox:
        f.pruned["inbox"] = pruned_inbox
    return f


@pytest.mark.parametrize(
    ("duplicates", "pruned", "ok"),
    [
        (40, 0, True),  # no pruning: every redelivery a duplicate, the inbox one row per id
        (38, 0, False),  # no pruning and two redeliveries not caught: wrong
        (38, 100, True),  # two came after their inbox row was pruned: decided again, two more inbox rows
    ],
)
def test_soak_checks_count_redeliveries_after_pruning_as_inbox_rows(duplicates: int, pruned: int, ok: bool) -> None:
    inbox = 900 - pruned + (40 - duplicates if pruned else 0)
    counted = Rows(**{**ROWS.__dict__, "inbox": inbox})
    found = soak_checks(
        counted,
        fleet(duplicates=duplicates, pruned_inbox=pruned),
        unique=900,
        bookings=100,
        cancelled=50,
        redelivered=40,
    )
    assert all(c.ok for c in found) is ok


def test_the_command_is_registered_with_its_options() -> None:
    shown = CliRunner().invoke(app, ["soak", "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    for option in ("--events", "--every-s", "--retain-s", "--retention-interval-s", "--no-retention"):
        assert option in shown.output
