"""Relay shards: which shard an outbox row belongs to, and which shards an instance relays (pure, no I/O).

Every row of one booking is in one shard (the shard is a function of the row's key, the booking id), and one relay
at a time publishes a shard, in id order: so each booking's messages leave in order (CONTRACT "Output"), while
instances publish different shards at once. The hash is md5 because PostgreSQL has it built in and documents it:
migration 0005 defines ``outbox_shard(key)`` in SQL, computing exactly ``shard_of``, for every writer at once
(the consumer, ``replay``, ``meeting rekey``, and the previous release during a rolling deploy).

Which instance relays a shard follows the consumer group: shard ``s`` goes with input partition
``s % partition_count``, so the instances split the shards as the group splits the partitions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# Fixed by migration 0005 (its SQL function and index): changing it takes a new migration. 60 divides evenly by
# 1-6, 10, 12, 15, 20 and 30, so the usual partition counts get equal shares; more shards than instances ever run.
SHARD_COUNT = 60
ALL_SHARDS: frozenset[int] = frozenset(range(SHARD_COUNT))


def shard_of(key: str) -> int:
    """The shard of an outbox row whose key (booking id) is ``key``: 0 <= shard < SHARD_COUNT.

    The first 32 bits of the key's UTF-8 md5, sign bit cleared, modulo SHARD_COUNT: the same number as SQL
    ``outbox_shard(key)`` (migration 0005).
    """
    digest = hashlib.md5(key.encode(), usedforsecurity=False).digest()
    return (int.from_bytes(digest[:4], "big") & 0x7FFFFFFF) % SHARD_COUNT


def shards_for(partitions: Iterable[int], partition_count: int) -> frozenset[int]:
    """The shards that go with the input ``partitions`` an instance owns, of a topic of ``partition_count``.

    Shard ``s`` goes with partition ``s % partition_count``; so the owners of all partitions together own every
    shard, each shard once. Unknown topic metadata (``partition_count`` < 1) gives no shard: the instance then
    relays only shards nobody publishes (``producer.relay``).
    """
    if partition_count < 1:
        return frozenset()
    owned = {p for p in partitions if 0 <= p < partition_count}
    return frozenset(s for s in range(SHARD_COUNT) if s % partition_count in owned)
