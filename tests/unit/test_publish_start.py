"""Publisher.start: a producer whose start fails or is cancelled midway is closed, not left for asyncio to report
(a newcomer's find: `dlq replay` stopped by SIGTERM ended with an "Unclosed AIOKafkaProducer" error line after its
own last line)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaConnectionError, UnsupportedVersionError

from producer import publish
from producer.publish import Publisher


class FakeProducer:
    """Starts by raising the next of ``FakeProducer.failures`` (nothing once they run out); records its stop."""

    failures: ClassVar[list[BaseException]] = []
    made: ClassVar[list[FakeProducer]] = []

    def __init__(self, **options: Any) -> None:
        self.idempotent = options["enable_idempotence"]
        self.stopped = False
        FakeProducer.made.append(self)

    async def start(self) -> None:
        if FakeProducer.failures:
            raise FakeProducer.failures.pop(0)

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture(autouse=True)
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeProducer.failures, FakeProducer.made = [], []
    monkeypatch.setattr(publish, "AIOKafkaProducer", FakeProducer)


@pytest.mark.parametrize("failure", [asyncio.CancelledError(), KafkaConnectionError("down"), RuntimeError("bug")])
async def test_a_start_that_fails_or_is_cancelled_closes_its_producer(failure: BaseException) -> None:
    FakeProducer.failures = [failure]

    with pytest.raises(type(failure)):
        await Publisher.start("127.0.0.1:9", client_id="test")

    assert [(p.idempotent, p.stopped) for p in FakeProducer.made] == [(True, True)]


async def test_the_fallback_without_idempotence_is_closed_too_when_its_start_is_cancelled() -> None:
    FakeProducer.failures = [UnsupportedVersionError("no InitProducerId"), asyncio.CancelledError()]

    with pytest.raises(asyncio.CancelledError):
        await Publisher.start("127.0.0.1:9", client_id="test")

    assert [(p.idempotent, p.stopped) for p in FakeProducer.made] == [(True, True), (False, True)]


async def test_a_start_that_succeeds_hands_over_an_open_producer() -> None:
    await Publisher.start("127.0.0.1:9", client_id="test")

    assert [(p.idempotent, p.stopped) for p in FakeProducer.made] == [(True, False)]
