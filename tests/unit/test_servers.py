"""The test servers' own pure helpers."""

from __future__ import annotations

import base64

from tests.servers.apache_kafka import new_cluster_id


def test_cluster_ids_are_base64url_uuids_that_never_look_like_an_option() -> None:
    ids = [new_cluster_id() for _ in range(2000)]  # a leading '-' would come up ~30 times by chance
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
