"""`dlq list` and `dlq replay --dry-run` on a real DLQ full of hostile records: no crash, no markup obeyed, no
control sequence on the operator's terminal."""

from __future__ import annotations

import json

import pytest
from aiokafka import AIOKafkaProducer

from booking_sessions.settings import Settings
from models.records import OutgoingRecord
from tests.hostile import HOSTILE, assert_safe
from tests.integration.dead_letters import TANSU_DLQ_END
from tests.integration.harness import Produced, consume_all, service
from tests.integration.operator_cli import invoke, publish_one_by_one
from tests.servers.ladder import KafkaHandle


async def write_hostile_dead_letters(settings: Settings) -> None:
    """Straight onto the DLQ, as anyone who can write to it could: every hostile key, with hostile header names
    and values, and a header whose value is null."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key in HOSTILE:
            headers = [
                ("dlq-reason", key),
                ("dlq-error", b"\x1b]0;title\x07 [red]boom[/]"),
                ("dlq-failed-at", key),
                (key.decode(errors="replace"), None),
            ]
            await producer.send_and_wait(settings.dlq_topic, key[::-1], key=key, headers=headers, partition=0)
    finally:
        await producer.stop()


@pytest.mark.partitions(1)
async def test_dlq_tools_read_hostile_dead_letters_safely(kafka: KafkaHandle, settings: Settings) -> None:
    if kafka.kind == "tansu":
        pytest.skip(TANSU_DLQ_END)
    # The consumer's own dead letter of a value nested 5000 deep, under a key that is Rich markup.
    produced = Produced()
    nested = OutgoingRecord(settings.input_topic, b"bk_1[/x]", b"[" * 5000)
    await publish_one_by_one(settings, [nested], produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
    await write_hostile_dead_letters(settings)

    table = await invoke(settings, "dlq", "list")
    assert table.exit_code == 0, table.output
    assert_safe(table.output)
    assert "bk_1[/x]" in table.stdout and "[link=https://evil.example]" in table.stdout
    assert f"{len(HOSTILE) + 1} of {len(HOSTILE) + 1} dead letters match" in table.stdout

    listed = await invoke(settings, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert_safe(listed.output)
    letters = json.loads(listed.stdout)["dead_letters"]
    assert letters[0]["reason"] == "invalid" and letters[0]["key"] == "bk_1[/x]"
    assert letters[0]["message_id"] is None
    assert [d["key"] for d in letters[1:]] == [k.decode(errors="replace") for k in HOSTILE]

    plan = await invoke(settings, "dlq", "replay", "--all", "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert_safe(plan.output)
    assert f"dry run: would replay {len(HOSTILE) + 1} to " in plan.stdout, plan.stdout
