"""How many records the next batch may take: the batch size while the consumer keeps up, a larger one while it is
far behind (a backlog after an outage, a deployment, a new group).

A batch's records all wait for its last one, so a live stream wants small batches: each record is applied soon
after it arrives. A backlog wants large ones: every batch pays the same fixed costs (two commits with their WAL
flush, the statements' round trips, an offset commit, a relay step), and the backlog's last record waits for all
the batches before it, so fewer of them drain it sooner. The consumer lag tells the two apart; pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import TopicPartition


def records_waiting(
    positions: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    stops: Mapping[TopicPartition, int] | None = None,
) -> int:
    """The consumer lag, in records: for each partition in both, its high watermark in ``ends`` (the offset after
    its last record, as the broker last reported it) minus its position in ``positions`` (the next offset the
    consumer hands over). For a bounded run (``replay``), ``stops`` holds the partitions' stop offsets: what lies
    at or past one is not to be applied, so it does not count. Partitions missing from ``positions`` or ``ends``
    count 0, and so does a high watermark behind the position (a stale one): an underestimate, never an
    overestimate, so a doubt means the smaller batch."""
    stops = stops or {}
    return sum(max(0, min(end, stops.get(tp, end)) - positions[tp]) for tp, end in ends.items() if tp in positions)


def batch_limit(waiting: int, max_records: int, catch_up_records: int) -> int:
    """Records the next batch may take: ``catch_up_records`` once at least that many wait (``records_waiting``),
    else ``max_records``; never fewer than ``max_records`` (a catch-up size at or below it turns catching up off).
    BOOKING_CATCH_UP_BATCH_RECORDS and BOOKING_MAX_BATCH_RECORDS (README, Configuration)."""
    if catch_up_records > max_records and waiting >= catch_up_records:
        return catch_up_records
    return max_records
