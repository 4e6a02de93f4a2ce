"""``offsets_missing``: which acknowledged records the log does not hold (used by the race tests and the demo)."""

from __future__ import annotations

from booking_sessions.settings import Settings
from booking_sessions.topics import offsets_missing
from tests.integration.bookings import event
from tests.integration.harness import Produced, publish


async def test_every_record_on_the_log_is_found_and_one_never_written_is_missing(settings: Settings) -> None:
    produced = Produced()
    await publish(settings, [event("BookingConfirmed", "bk_held", minute) for minute in range(3)], produced)
    [(topic, partition)] = produced.ends
    assert settings.kafka_bootstrap is not None
    written = {(topic, partition, offset) for offset in range(produced.ends[(topic, partition)])}
    assert len(written) == 3

    assert await offsets_missing(settings.kafka_bootstrap, written) == set()
    # Two more offsets asked for than were written: as after a broker dropped the last records it acknowledged.
    # The position never gets past them, so the answer comes at the deadline, with both found missing.
    beyond = {(topic, partition, offset) for offset in range(3, 5)}
    assert await offsets_missing(settings.kafka_bootstrap, written | beyond, timeout_s=1.0) == beyond
