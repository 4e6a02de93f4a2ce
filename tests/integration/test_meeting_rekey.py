"""`booking-sessions meeting rekey` on the real broker and database: sessions made under key version 1 move to
version 2 with one SessionUpdated each (derived message id), a rerun changes and sends nothing, and a secret that
does not fit its recorded fingerprint is refused by `run`, `replay` and the re-key itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from booking_sessions.meeting import fingerprint
from booking_sessions.settings import Settings
from consumer.ids import meeting_link, session_id, session_rekeyed_id
from models.errors import ConfigurationError
from producer.bookings import booking_event
from tests.integration.harness import (
    Produced,
    consume_all,
    publish,
    query,
    read_json,
    relay_of_the_running_service,
    service,
)
from tests.integration.operator_cli import assert_one_line_error, invoke

BASE = "https://meet.jit.si"
KEY_2 = "the-second-meeting-key-after-a-leak-0123456789"
KEY_3 = "the-third-meeting-key-after-another-leak-98765"
BOOKINGS = ("bk_1", "bk_2", "bk_3")


def under(settings: Settings, secret: str, version: int) -> Settings:
    return settings.model_copy(update={"meeting_secret": SecretStr(secret), "meeting_key_version": version})


async def three_sessions_under_version_1(settings: Settings) -> None:
    produced = Produced()
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    events = [
        booking_event("BookingApproved", b, student_id=f"s-{b}", instructor_id="u_7", scheduled_start=start,
                      duration_minutes=60, title="Algebra II")
        for b in BOOKINGS
    ]  # fmt: skip
    async with service(settings) as svc:
        await publish(settings, events, produced)
        await consume_all(svc, produced)
        await svc.relay.drain()


async def links(database_url: str) -> dict[str, str]:
    rows = await query(database_url, "SELECT booking_request_id, meeting_link FROM live_sessions")
    return {r["booking_request_id"]: r["meeting_link"] for r in rows}


async def rekey_json(settings: Settings, *args: str) -> dict[str, Any]:
    result = await invoke(settings, "meeting", "rekey", *args, "--json")
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def test_rekey_all_moves_every_link_to_version_2_once(settings: Settings, database_url: str) -> None:
    await three_sessions_under_version_1(settings)
    assert settings.meeting_secret is not None
    old = {b: meeting_link(BASE, session_id(b), settings.meeting_secret.get_secret_value().encode()) for b in BOOKINGS}
    assert await links(database_url) == old
    v2 = under(settings, KEY_2, 2)

    dry = await rekey_json(v2, "--all", "--dry-run")
    assert (dry["dry_run"], dry["chosen"], dry["rekeyed"], dry["already_current"]) == (True, 3, 3, 0)
    assert await links(database_url) == old
    assert await query(database_url, "SELECT version FROM meeting_keys ORDER BY version") == [{"version": 1}]

    done = await invoke(v2, "meeting", "rekey", "--all")
    assert done.exit_code == 0, done.output
    assert f"re-key to key version 2 (fingerprint {fingerprint(KEY_2.encode())})" in done.stdout
    assert "scheduled sessions chosen 3: 3 got a new link and a SessionUpdated, 0 already on version 2" in done.stdout
    new = {b: meeting_link(BASE, session_id(b), KEY_2.encode(), version=2) for b in BOOKINGS}
    assert await links(database_url) == new
    assert all("/bs-v2-" in link for link in new.values())
    assert not set(old.values()) & set((await links(database_url)).values())  # the old rooms are gone
    recorded = await query(database_url, "SELECT version, fingerprint FROM meeting_keys ORDER BY version")
    assert [(r["version"], r["fingerprint"]) for r in recorded][1] == (2, fingerprint(KEY_2.encode()))

    assert await relay_of_the_running_service(v2, database_url) == 3
    messages = await read_json(v2, v2.output_topic, expected=6)
    updated = [m["body"] for m in messages if m["body"]["type"] == "SessionUpdated"]
    assert sorted((u["booking_id"], u["message_id"], u["session"]["meeting_link"]) for u in updated) == [
        (b, str(session_rekeyed_id(session_id(b), 2)), new[b]) for b in BOOKINGS
    ]
    assert all(u["session"]["status"] == "SCHEDULED" and u["session"]["title"] == "Algebra II" for u in updated)

    again = await rekey_json(v2, "--all")
    assert (again["rekeyed"], again["already_current"]) == (0, 3)
    [outbox] = await query(database_url, "SELECT count(*) AS n FROM outbox_messages")
    assert outbox["n"] == 6  # three SessionCreated, three SessionUpdated: the rerun wrote nothing
    assert await relay_of_the_running_service(v2, database_url) == 0


async def test_rekey_of_chosen_bookings_names_the_ones_without_a_session(
    settings: Settings, database_url: str, tmp_path: Any
) -> None:
    await three_sessions_under_version_1(settings)
    before = await links(database_url)
    chosen = tmp_path / "bookings.txt"
    chosen.write_text("# leaked rooms\nbk_2\n\nbk_404  # never booked\n")
    v3 = under(settings, KEY_3, 3)

    result = await rekey_json(v3, "--booking", "bk_1", "--booking-file", str(chosen), "--batch-rows", "1")
    assert (result["chosen"], result["rekeyed"], result["batches"], result["missing"]) == (2, 2, 2, ["bk_404"])
    after = await links(database_url)
    assert after["bk_3"] == before["bk_3"]
    assert after["bk_1"] == meeting_link(BASE, session_id("bk_1"), KEY_3.encode(), version=3)
    assert after["bk_2"] == meeting_link(BASE, session_id("bk_2"), KEY_3.encode(), version=3)


async def test_a_secret_that_does_not_fit_its_recorded_fingerprint_is_refused(
    settings: Settings, database_url: str
) -> None:
    await three_sessions_under_version_1(settings)  # records version 1's fingerprint
    assert settings.meeting_secret is not None
    f1, f2 = fingerprint(settings.meeting_secret.get_secret_value().encode()), fingerprint(KEY_2.encode())
    wrong = under(settings, KEY_2, 1)

    with pytest.raises(ConfigurationError, match=f"fingerprint {f2}.*fingerprint {f1}"):
        async with service(wrong):
            pass
    for command in (["replay", "--dry-run"], ["meeting", "rekey", "--all"]):
        result = await invoke(wrong, *command)
        assert_one_line_error(result, f"fingerprint {f2}", f"fingerprint {f1}", "BOOKING_MEETING_KEY_VERSION=2")
        assert KEY_2 not in result.output
    before = await links(database_url)

    assert (await rekey_json(under(settings, KEY_2, 2), "--all"))["rekeyed"] == 3
    assert_one_line_error(await invoke(settings, "replay", "--dry-run"), "older than version 2")
    assert_one_line_error(await invoke(under(settings, KEY_3, 2), "meeting", "rekey", "--all"), "not the key")
    assert_one_line_error(
        await invoke(under(settings, KEY_2, 3), "meeting", "rekey", "--all"), "is the key of version 2 already"
    )
    assert set((await links(database_url)).values()).isdisjoint(before.values())


async def test_rekey_refuses_without_a_choice_or_a_secret(settings: Settings) -> None:
    assert_one_line_error(await invoke(settings, "meeting", "rekey"), "choose sessions")
    assert_one_line_error(await invoke(settings, "meeting", "rekey", "--all", "--booking", "bk_1"), "choose one of")
    assert_one_line_error(
        await invoke(settings, "meeting", "rekey", "--all", BOOKING_MEETING_SECRET=None),
        "BOOKING_MEETING_SECRET is required",
    )
    assert_one_line_error(
        await invoke(settings, "meeting", "rekey", "--booking-file", "/nonexistent/bookings.txt"), "cannot read it"
    )


async def test_rekey_refuses_a_move_of_the_base_url_alone_and_a_mistyped_output_topic(
    settings: Settings, database_url: str
) -> None:
    # The second re-key to version 2, under another base URL, would give each session the SessionUpdated id of the
    # first (UUIDv5 of the session id and the version): before the fix the outbox dropped it and the rows changed
    # unannounced.
    await three_sessions_under_version_1(settings)
    v2 = under(settings, KEY_2, 2)
    assert (await rekey_json(v2, "--all"))["rekeyed"] == 3
    moved = await links(database_url)

    elsewhere = await invoke(v2, "meeting", "rekey", "--all", BOOKING_MEETING_BASE_URL="https://meet.example.org")
    assert_one_line_error(elsewhere, "already have their room under key version 2", "BOOKING_MEETING_KEY_VERSION")
    assert await links(database_url) == moved
    [outbox] = await query(database_url, "SELECT count(*) AS n FROM outbox_messages")
    assert outbox["n"] == 6

    # Its rows name the output topic the relay will send them to: a mistyped one is refused before anything.
    v3 = under(settings, KEY_3, 3)
    assert_one_line_error(
        await invoke(v3, "meeting", "rekey", "--all", BOOKING_OUTPUT_TOPIC="session.evnets"), "BOOKING_OUTPUT_TOPIC"
    )
    assert await links(database_url) == moved
    assert await query(database_url, "SELECT version FROM meeting_keys ORDER BY version") == [
        {"version": 1},
        {"version": 2},
    ]
