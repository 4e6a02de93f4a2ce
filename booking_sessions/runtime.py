"""Process-wide tuning of the long-running commands (``run``, ``replay``): CPython's cyclic garbage collector."""

from __future__ import annotations

import gc

# Measured with `python -m bench run` (200,000 events, 2 cores): with CPython's defaults the collector took
# 1.9 s of the service stage's 8 s. A young collection ran every 700 container allocations (a batch makes
# hundreds of thousands), and every hundredth or so a full pass over everything the process holds: aiokafka's
# buffers, SQLAlchemy, pydantic's schemas. Records, events and rows are freed by reference counting anyway; the
# collector finds next to nothing. With start-up frozen and young collections every 10,000 allocations it took
# under 0.1 s, and the stage ran 25% faster. Later, 50,000: the count is of container objects made and not yet
# freed, and a batch in hand holds tens of thousands of them (records, events, rows), so at 10,000 young collections
# still ran every few milliseconds, each scanning the batch in hand and moving it on to the older generations,
# scanned again in turn: 0.63-0.86 s of collections in a service process's life over (d) or a 10 s paced
# stage at 12,000 records/s, start-up included, against 0.11-0.16 s at 50,000, and 34.1-34.3 µs of service CPU a
# record in (d) against 35.3-36.6. (A full collection still takes 43-57 ms when one comes, two or three a run.)
# Memory stays bounded: cyclic garbage counts too, and goes once 50,000 of it piled up (tests/unit/test_runtime.py).
YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Call once, after start-up: what exists now lives as long as the process, so full collections stop
    scanning it (``gc.freeze``); young collections run every ``YOUNG_THRESHOLD`` allocations instead of 700."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
