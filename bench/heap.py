"""The bench process's own garbage collector, kept out of the timed latency stages."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """While inside, the cyclic collector does not run in this process: what the bench holds now (the workload's
    hundreds of thousands of records, the stage's plans) is out of its reach (``gc.freeze``), and nothing made
    inside is collected either (``gc.disable``) until the end (reference counting still frees almost all of it).

    Why: a full collection over the workload paused this process for 75 to 155 ms at a time (measured with
    ``gc.callbacks`` in a paced run of 6,000 records/s on the 2-core AMD EPYC), and with it the paced producer, so
    the records due meanwhile were sent late, all at once, and counted as the service's latency: the service's
    fetch waited out the pause with nothing to read. The service itself runs frozen the same way
    (booking_sessions/runtime.py). Freezing alone was not enough: what a paced stage makes (a future, metadata
    and a batch per partition every 5 ms, kept for the acks) set off full collections of 43 to 93 ms within the
    stage, one or two in each 10 s run at 12,000 records/s, each delaying about a percent of the records: the p99."""
    gc.collect()
    gc.freeze()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.unfreeze()
