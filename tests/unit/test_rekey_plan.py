"""The re-key's pure parts: which sessions get a message, the booking file, the summary."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from uuid import uuid4

from booking_sessions.ops.rekey import RekeyResult, read_booking_file, rekey_messages, rekey_report
from consumer.decide import SessionDetails, SessionRow
from consumer.ids import meeting_link, session_id, session_rekeyed_id

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
OLD, NEW = b"o" * 32, b"n" * 32
LINK_2 = partial(meeting_link, "https://meet.jit.si", secret=NEW, version=2)


def session(booking: str, link: str) -> SessionRow:
    details = SessionDetails("u_7", f"s-{booking}", "Algebra II", NOW, 60)
    return SessionRow(session_id(booking), booking, details, link, (NOW, uuid4()))


def test_only_sessions_not_yet_under_the_key_get_a_session_updated() -> None:
    moved = session("bk_2", LINK_2(session_id("bk_2")))
    stale = session("bk_1", meeting_link("https://meet.jit.si", session_id("bk_1"), OLD))
    [message] = rekey_messages([stale, moved], LINK_2, 2, NOW)
    assert message.message_id == session_rekeyed_id(stale.id, 2)
    assert message.kind == "SessionUpdated" and message.key == "bk_1" and message.now == NOW
    assert message.row == stale._replace(meeting_link=LINK_2(stale.id))
    body = message.event
    assert body.session.meeting_link == LINK_2(stale.id) and body.session.title == "Algebra II"
    assert rekey_messages([message.row], LINK_2, 2, NOW) == []  # a second run: nothing


def test_a_booking_file_has_one_id_a_line_with_comments() -> None:
    assert read_booking_file(["# header", "bk_1", "", "  bk_2  # note", "#bk_3"]) == ["bk_1", "bk_2"]


def test_the_summary_says_what_was_done_and_what_was_not_found() -> None:
    sid = session_id("bk_1")
    result = RekeyResult(2, "0123456789abcdef", False, chosen=3, scanned=3, rekeyed=1, batches=1,
                         missing=("bk_9",), sample=[sid])  # fmt: skip
    text = "\n".join(str(line) for line in rekey_report(result))
    assert "re-key to key version 2 (fingerprint 0123456789abcdef)" in text
    assert "chosen 3: 1 got a new link and a SessionUpdated, 2 already on version 2" in text
    assert str(sid) in text and "no scheduled session for: bk_9" in text and "relay sends them" in text
    dry = RekeyResult(2, "0123456789abcdef", True, chosen=1, scanned=1, rekeyed=1, key_recorded=False)
    dry_text = "\n".join(str(line) for line in rekey_report(dry))
    assert "dry run: nothing was written or sent" in dry_text and "not on record yet" in dry_text
    assert "1 would get a new link" in dry_text
