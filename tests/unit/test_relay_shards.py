"""Relay shard math (producer/shards.py): a booking's rows share one shard; owners of all partitions own every
shard exactly once; a rebalance moves shards with their partitions."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from producer.shards import ALL_SHARDS, SHARD_COUNT, shard_of, shards_for


def test_shard_of_is_the_documented_md5_prefix() -> None:
    # md5("bk_1") = 446a489c...: 0x446a489c = 1147816092, sign bit clear; % 60 = 12. Written out, so that a change
    # of hash (which would split a booking's rows across shards during a deploy) fails here.
    assert shard_of("bk_1") == 0x446A489C % SHARD_COUNT == 12


@given(st.text(min_size=1, max_size=64))
def test_every_key_has_one_shard_in_range(key: str) -> None:
    assert shard_of(key) == shard_of(key)
    assert 0 <= shard_of(key) < SHARD_COUNT


def test_keys_spread_over_every_shard() -> None:
    counts = Counter(shard_of(f"bk_{i}") for i in range(60_000))
    assert set(counts) == ALL_SHARDS
    assert max(counts.values()) < 1.15 * min(counts.values())


@given(st.integers(min_value=1, max_value=200).flatmap(lambda n: st.lists(st.integers(0, 7), min_size=n, max_size=n)))
def test_a_group_owns_every_shard_exactly_once(owner_of: list[int]) -> None:
    partition_count = len(owner_of)  # owner_of[p]: the instance the group gave partition p
    owners: list[list[int]] = [[] for _ in range(8)]
    for partition, instance in enumerate(owner_of):
        owners[instance].append(partition)
    owned = [shards_for(parts, partition_count) for parts in owners]
    assert frozenset().union(*owned) == ALL_SHARDS
    assert sum(len(o) for o in owned) == SHARD_COUNT  # disjoint: no shard has two owners in a stable group


def test_twelve_partitions_split_in_two_give_equal_halves() -> None:
    first, second = shards_for(range(6), 12), shards_for(range(6, 12), 12)
    assert len(first) == len(second) == 30
    assert first | second == ALL_SHARDS


def test_a_shard_goes_with_its_partition() -> None:
    assert shards_for([0], 12) == frozenset(range(0, SHARD_COUNT, 12))
    assert shards_for([3], 12) == frozenset({3, 15, 27, 39, 51})


def test_no_partitions_or_no_metadata_own_nothing() -> None:
    assert shards_for([], 12) == frozenset()
    assert shards_for([0, 1], 0) == frozenset()  # topic metadata not known yet
    assert shards_for([12, -1], 12) == frozenset()  # not partitions of this topic


def test_more_partitions_than_shards_leave_some_partitions_without_a_shard() -> None:
    assert shards_for([60, 61], 120) == frozenset()
    assert shards_for(range(120), 120) == ALL_SHARDS
