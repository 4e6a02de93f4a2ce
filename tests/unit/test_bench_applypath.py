"""The fit that splits the apply path's cost per record into a per-batch and a per-record part."""

from __future__ import annotations

import pytest

from bench.applypath import fit


def test_fit_recovers_a_per_batch_and_a_per_record_cost() -> None:
    # 2 ms a batch and 40 µs a record: 50 µs a record in batches of 200, 44 in 500, 41 in 2,000.
    line = fit([(200, 50.0), (500, 44.0), (2000, 41.0)])
    assert line is not None
    assert line.per_batch_us == pytest.approx(2000.0)
    assert line.per_record_us == pytest.approx(40.0)


def test_fit_needs_two_sizes() -> None:
    assert fit([]) is None
    assert fit([(500, 44.0)]) is None
    assert fit([(500, 44.0), (500, 45.0)]) is None
