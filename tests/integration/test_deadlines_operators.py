"""It never hangs, for the operators' commands too (CONTRACT, Process): a broker gone silent in the middle of
`replay` or `dlq replay` ends the command with one line within its deadlines. Found by trying: a replay behind a
silenced broker ran on past 180 s (each offset commit waited its 30 s, was logged and the next batch went on), and a
`dlq replay` waited for its copies' acknowledgements as long as the producer kept retrying them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from rich.progress import Progress, TaskID

from booking_sessions.ops import failures
from booking_sessions.ops.failures import OperatorError
from booking_sessions.ops.replay import ReplayRequest, replay_topic
from booking_sessions.settings import Settings
from models.records import OutgoingRecord
from producer.publish import Publisher, SendTimedOut
from tests.integration.harness import Produced, publish
from tests.integration.watched_runs import through
from tests.integration.workloads import workload
from tests.toxiproxy import Proxy

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("apache_kafka_only")]

COMMIT_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 2.0


class SilenceOnFirstBatch(Progress):
    """The replay's progress bar, which silences the broker's proxy once the first batch is reported: mid-replay,
    whatever the machine's speed."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(disable=True)
        self._proxy = proxy
        self.silenced: list[str] | None = None

    def update(self, task_id: TaskID, **fields: Any) -> None:
        if self.silenced is None and fields.get("completed"):
            self.silenced = self._proxy.silence()
        super().update(task_id, **fields)


async def test_a_replay_behind_a_broker_gone_silent_ends_with_one_line(
    settings: Settings, kafka_proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failures, "CONNECT_TIMEOUT_S", CLOSE_TIMEOUT_S)  # the clients' close, at the end
    await publish(settings, workload(300), Produced())
    proxied = through(settings, kafka_proxy, kafka=True).model_copy(
        update={"kafka_commit_timeout_s": COMMIT_TIMEOUT_S, "max_batch_records": 100}
    )
    progress = SilenceOnFirstBatch(kafka_proxy)
    started = time.monotonic()
    with pytest.raises(OperatorError) as refused:
        await replay_topic(proxied, ReplayRequest(group_id=f"replay-{uuid.uuid4().hex[:8]}"), progress)
    took_s = time.monotonic() - started
    assert progress.silenced is not None, "the replay ended before its first batch was reported"
    assert "the offset commit was not taken: no answer within 3 s" in str(refused.value)
    assert str(refused.value).endswith("what was applied is in the database")  # the command line adds --group
    # One commit's deadline, then each client's close; not the minutes of one commit per batch.
    assert took_s < COMMIT_TIMEOUT_S + 3 * CLOSE_TIMEOUT_S + 20, took_s


class ResetDatabaseOnFirstBatch(SilenceOnFirstBatch):
    """As above, but the database's connections are reset (a database that went away mid-replay)."""

    def update(self, task_id: TaskID, **fields: Any) -> None:
        if self.silenced is None and fields.get("completed"):
            self.silenced = [self._proxy.add("reset_peer", stream=s, timeout=0) for s in ("upstream", "downstream")]
        Progress.update(self, task_id, **fields)


async def test_a_replay_whose_database_goes_away_says_how_to_resume(
    settings: Settings, database_proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by trying: the database stopped mid-replay ended the replay, rightly, with a line that did not say
    that what it applied stays applied and how to go on."""
    monkeypatch.setattr(failures, "CONNECT_TIMEOUT_S", CLOSE_TIMEOUT_S)
    await publish(settings, workload(300), Produced())
    proxied = through(settings, database_proxy, database=True).model_copy(update={"max_batch_records": 100})
    progress = ResetDatabaseOnFirstBatch(database_proxy)
    with pytest.raises(OperatorError) as refused:
        await replay_topic(proxied, ReplayRequest(group_id=f"replay-{uuid.uuid4().hex[:8]}"), progress)
    assert progress.silenced is not None, "the replay ended before its first batch was reported"
    assert str(refused.value).endswith("what was applied is in the database")  # the command line adds --group


async def test_a_send_the_broker_never_acknowledges_ends_at_the_publishers_deadline(
    settings: Settings, kafka_proxy: Proxy
) -> None:
    """What `dlq replay` (and the relay, and a batch's dead letters) meet: every send is awaited within
    ``send_timeout_s``; the relay and the batches retry SendTimedOut, a command says it in one line."""
    proxied = through(settings, kafka_proxy, kafka=True)
    assert proxied.kafka_bootstrap is not None
    publisher = await Publisher.start(proxied.kafka_bootstrap, client_id="test-silent", request_timeout_ms=2000)
    try:
        assert publisher.send_timeout_s == 4.0
        await publisher.send_all(_records(settings.input_topic, 3))  # connected, metadata known, before the silence
        kafka_proxy.silence()
        started = time.monotonic()
        with pytest.raises(SendTimedOut, match="did not acknowledge 3 record"):
            await publisher.send_all(_records(settings.input_topic, 3))
        assert time.monotonic() - started < publisher.send_timeout_s + 2
        assert failures.one_line(SendTimedOut("x")) == "x"  # a command's one line is the error's own
    finally:
        await failures.close_within(publisher.stop(), "producer", 2.0)


def _records(topic: str, count: int) -> list[OutgoingRecord]:
    return [OutgoingRecord(topic, f"bk_{i}".encode(), b"{}") for i in range(count)]
