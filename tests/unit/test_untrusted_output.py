"""Operators' output with hostile records: whatever a topic or a row holds, it never crashes a command, never
becomes Rich markup, and never reaches the terminal as a control sequence."""

from __future__ import annotations

import io
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console, RenderableType

from booking_sessions.ops.dlq import DeadLetter, Scan
from booking_sessions.ops.dlq_replay import InboxRow, plan
from booking_sessions.ops.rekey import RekeyResult, read_booking_file, rekey_report
from booking_sessions.ops.replay import ReplaySummary
from booking_sessions.ops.reports import (
    dlq_list_report,
    dlq_replay_report,
    replay_report,
    republish_report,
    status_report,
)
from booking_sessions.ops.republish import OutboxRow
from booking_sessions.ops.status import PartitionLag, Status
from booking_sessions.ops.untrusted import parse_json, visible
from tests.hostile import HOSTILE, SGR, assert_safe

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

text = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    [h.decode(errors="replace") for h in HOSTILE]
)
blob = st.binary(max_size=60) | st.sampled_from(HOSTILE)
headers = st.lists(
    st.tuples(text, blob | st.none()) | st.tuples(st.sampled_from(["dlq-reason", "dlq-error", "dlq-failed-at"]), blob),
    max_size=6,
)


@st.composite
def dead_letters(draw: st.DrawFn) -> DeadLetter:
    value = draw(
        blob | st.none() | st.builds(lambda m: json.dumps({"message_id": m}).encode(), text | st.uuids().map(str))
    )
    raw_headers = draw(headers)
    return DeadLetter(
        draw(st.integers(0, 3)),
        draw(st.integers(0, 10**6)),
        AT,
        draw(blob | st.none()),
        value,
        # As ``dlq.from_record`` reads them: a null header value is empty.
        tuple((k, v or b"") for k, v in raw_headers),
    )


def rendered(parts: Sequence[RenderableType]) -> str:
    """What an operator's colour terminal would receive."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=120, highlight=False)
    for part in parts:
        console.print(part)
    return out.getvalue()


def by_reason(letters: list[DeadLetter]) -> dict[str, int]:
    return dict(Counter(letter.reason for letter in letters))


@settings(max_examples=300, deadline=None)
@given(st.lists(dead_letters(), max_size=6))
def test_dlq_list_and_dry_run_survive_any_record(letters: list[DeadLetter]) -> None:
    assert_safe(rendered(dlq_list_report(Scan(letters, len(letters), len(letters)), by_reason(letters))))
    # As `dlq list --json` prints it: ASCII only, control characters escaped by JSON itself.
    listed = json.dumps([d.as_dict() for d in letters], indent=2, default=str)
    assert listed.isascii() and json.loads(listed)[0:0] == []
    assert_safe(listed)
    inbox = {m: InboxRow("dead_lettered", letter.payload_sha256) for letter in letters if (m := letter.message_id)}
    assert_safe(rendered(dlq_replay_report(plan(letters, inbox), None, "booking.events")))


@settings(max_examples=200, deadline=None)
@given(text, text, st.dictionaries(text, st.integers(0, 10**9), max_size=4))
def test_status_and_replay_survive_any_name_and_outcome(topic: str, group: str, outcomes: dict[str, int]) -> None:
    # The same hostile names as session statuses: they are read from rows too.
    found = Status(topic, group, [PartitionLag(0, None, 0, 5)], 0, None, topic, 3, outcomes, outcomes)
    assert_safe(rendered(status_report(found)))
    assert json.dumps(found.as_dict()).isascii()
    assert_safe(rendered(replay_report(ReplaySummary(topic, group, True, {}))))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(text, text), max_size=4))
def test_outbox_republish_survives_any_booking_id_and_type(rows: list[tuple[str, str]]) -> None:
    found = [OutboxRow(i, uuid.uuid4(), booking, kind, AT, None, True) for i, (booking, kind) in enumerate(rows)]
    assert_safe(rendered(republish_report(found, None)))


@settings(max_examples=200, deadline=None)
@given(st.lists(text, max_size=4), st.booleans())
def test_meeting_rekey_shows_any_booking_id_as_written(bookings: list[str], dry_run: bool) -> None:
    # --booking values and --booking-file lines are the operator's (or a pasted file's) text: the missing ones are
    # printed back, so an escape sequence, a bidi override or markup in them must arrive written out.
    missing = tuple(read_booking_file(bookings)) + tuple(bookings)
    result = RekeyResult(2, "801c719fe6beb386", dry_run, chosen=len(bookings), missing=missing)
    output = rendered(rekey_report(result))
    assert_safe(output)
    assert "\u202e" not in output


def test_meeting_rekey_writes_out_an_escape_and_a_bidi_override() -> None:
    result = RekeyResult(2, "801c719fe6beb386", False, missing=("\x1b]0;pwned\x07", "bk_\u202e1", "[red]bk[/red]"))
    plain = SGR.sub("", rendered(rekey_report(result)))
    assert "no scheduled session for: \\x1b]0;pwned\\x07, bk_\\u202e1, [red]bk[/red]" in plain


def test_markup_in_a_key_is_shown_as_written_not_obeyed() -> None:
    reason = (("dlq-reason", b"invalid"),)
    letters = [DeadLetter(0, i, AT, key, None, reason) for i, key in enumerate(HOSTILE[:3])]
    output = rendered(dlq_list_report(Scan(letters, 3, 3), by_reason(letters)))
    plain = SGR.sub("", output)
    assert "bk_1[/x]" in plain
    assert "[link=https://evil.example]click[/link]" in plain
    assert "\\x1b[31mred\\x1b[0m" in plain


def test_a_deeply_nested_value_is_not_json_and_has_no_message_id() -> None:
    letter = DeadLetter(0, 0, AT, b"bk_1", b"[" * 5000, (("dlq-reason", b"invalid"),))
    assert parse_json(letter.value) is None and letter.message_id is None
    assert parse_json(b'{"a": [1]}') == {"a": [1]}
    assert parse_json(b"\xff") is None and parse_json(b"") is None
    message_id = uuid.uuid4()
    assert DeadLetter(0, 0, AT, None, json.dumps({"message_id": str(message_id)}).encode(), ()).message_id == message_id


def test_visible_writes_out_every_control_character_and_keeps_text() -> None:
    assert visible(b"\x1b]0;t\x07") == "\\x1b]0;t\\x07"
    assert visible("a\u202eb\x9bc\x7f") == "a\\u202eb\\x9bc\\x7f"
    assert visible("line\nnext\ttab") == "line\\nnext\\ttab"
    assert visible("line\nnext\ttab", keep_lines=True) == "line\nnext\ttab"
    assert visible("Zoë, 数学 [b]") == "Zoë, 数学 [b]"
    assert visible(None) == "" and visible(b"\xff") == "\ufffd"
