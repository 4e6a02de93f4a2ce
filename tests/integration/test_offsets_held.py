"""``offsets_held``: which acknowledged records the log holds (the race tests and the demo's raced pair use it)."""

from __future__ import annotations

from booking_sessions.settings import Settings
from booking_sessions.topics import offsets_held
from tests.integration.bookings import event
from tests.integration.harness import Produced, publish


async def test_every_record_on_the_log_is_found_and_one_never_written_is_not(settings: Settings) -> None:
    produced = Produced()
    await publish(settings, [event("BookingConfirmed", "bk_held", minute) for minute in range(3)], produced)
    [(topic, partition)] = produced.ends
    assert settings.kafka_bootstrap is not None
    written = {(topic, partition, offset) for offset in range(produced.ends[(topic, partition)])}
    assert len(written) == 3

    assert await offsets_held(settings.kafka_bootstrap, produced.ends) == written
    # Two more offsets asked for than were written: as after a broker dropped the last records it acknowledged.
    # The position never reaches the end, so the answer comes at the deadline, with what is there.
    beyond = {(topic, partition): produced.ends[(topic, partition)] + 2}
    assert await offsets_held(settings.kafka_bootstrap, beyond, timeout_s=1.0) == written
