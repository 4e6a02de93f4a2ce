"""The bench process's own garbage collector, kept out of the timed latency stages."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """While inside, what the bench holds now (the workload's hundreds of thousands of records, the stage's plans)
    is out of the cyclic collector's reach (``gc.freeze``); what is made inside is still collected.

    Why: a full collection over the workload paused this process for 75 to 155 ms at a time (measured with
    ``gc.callbacks`` in a paced run of 6,000 records/s on the 2-core AMD EPYC), and with it the paced producer, so
    the records due meanwhile were sent late, all at once, and counted as the service's latency: the service's
    fetch waited out the pause with nothing to read. The service itself runs frozen the same way
    (booking_sessions/runtime.py)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
