"""Pure: produce -> offset commit latencies from send times and the batches the service committed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from bench.service_path import Committed


def commit_latencies_s(
    topic: str, sent_at: Mapping[int, Mapping[int, float]], batches: Iterable[Committed]
) -> list[float]:
    """For every sent record: the time of the first offset commit past it, minus its send time."""
    pending = {p: sorted(offsets) for p, offsets in sent_at.items()}
    cursor = dict.fromkeys(pending, 0)
    latencies: list[float] = []
    for batch in sorted(batches, key=lambda b: b.at):
        for (t, p), next_offset in batch.offsets.items():
            if t != topic or p not in pending:
                continue
            offsets, i = pending[p], cursor[p]
            while i < len(offsets) and offsets[i] < next_offset:
                latencies.append(batch.at - sent_at[p][offsets[i]])
                i += 1
            cursor[p] = i
    return latencies


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
