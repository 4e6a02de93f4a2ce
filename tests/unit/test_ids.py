"""consumer.ids: deterministic ids (a rebuild reproduces them) and unguessable room names."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

import pytest

from consumer.ids import (
    SESSION_NAMESPACE,
    meeting_link,
    room_name,
    session_created_id,
    session_id,
    session_rekeyed_id,
    session_updated_id,
)

# Fixed forever (CONTRACT: a rebuild into an empty database reproduces the same session ids).
NAMESPACE = uuid.UUID("5b0c6f1e-3d2a-5c8e-9a41-7f3e2d1c0b9a")
SECRET = b"test-secret"
OTHER_SECRET = b"test-secret-2"
CAUSE = uuid.UUID("7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c11")


def test_the_namespace_never_changes() -> None:
    assert SESSION_NAMESPACE == NAMESPACE


@pytest.mark.parametrize("booking_id", ["bk_123", "b", "A-z0_.:" + "9" * 57])
def test_session_id_is_uuid5_of_the_booking_id_under_the_fixed_namespace(booking_id: str) -> None:
    sid = session_id(booking_id)

    assert sid == uuid.uuid5(NAMESPACE, booking_id)
    assert sid == session_id(booking_id)
    assert sid.version == 5


def test_session_ids_are_pinned() -> None:
    # Golden values: changing them orphans every existing session on the next rebuild.
    sid = session_id("bk_123")
    assert sid == uuid.UUID("ef8eae3a-c1cd-5af6-98e8-f7603578527c")
    assert session_created_id(sid) == uuid.UUID("85c1cd66-452d-5982-bef5-04d1360f51d9")
    assert session_updated_id(sid, CAUSE) == uuid.UUID("f978fce4-1d71-523d-976b-e10c9f0a0cfd")


def test_session_ids_differ_per_booking() -> None:
    assert len({session_id(b) for b in ["bk_1", "bk_2", "BK_1", "bk_1 ", "bk_10"]}) == 5


def test_session_created_id_is_deterministic_and_differs_per_session() -> None:
    a, b = session_id("bk_1"), session_id("bk_2")

    assert session_created_id(a) == session_created_id(a) == uuid.uuid5(a, "SessionCreated")
    assert session_created_id(a) != session_created_id(b)
    assert session_created_id(a) not in (a, b)
    assert session_created_id(a).version == 5


def test_session_updated_id_is_deterministic_per_session_and_cause() -> None:
    a, b = session_id("bk_1"), session_id("bk_2")
    other_cause = uuid.UUID("00000000-0000-4000-8000-000000000001")

    assert session_updated_id(a, CAUSE) == session_updated_id(a, CAUSE)
    ids = {session_updated_id(a, CAUSE), session_updated_id(a, other_cause), session_updated_id(b, CAUSE)}
    assert len(ids) == 3
    assert session_created_id(a) not in ids


def test_room_name_is_stable_for_the_same_secret() -> None:
    sid = session_id("bk_123")

    assert room_name(sid, SECRET) == room_name(sid, SECRET) == "bs-71215f67426c7617d3419d1d50fde83f"
    assert room_name(sid, SECRET) == "bs-" + hmac.new(SECRET, sid.bytes, hashlib.sha256).hexdigest()[:32]


def test_room_name_changes_with_the_secret_and_the_session() -> None:
    a, b = session_id("bk_1"), session_id("bk_2")

    assert room_name(a, SECRET) != room_name(a, OTHER_SECRET)
    assert room_name(a, SECRET) != room_name(b, SECRET)


def test_room_name_is_url_safe_and_long_enough_not_to_be_guessed() -> None:
    room = room_name(session_id("bk_123"), SECRET)

    assert re.fullmatch(r"bs-[0-9a-f]{32}", room)


@pytest.mark.parametrize("booking_id", ["bk_123", "booking:2026-0042", "a" * 64])
def test_room_name_reveals_neither_the_booking_id_nor_the_session_id(booking_id: str) -> None:
    sid = session_id(booking_id)
    room = room_name(sid, SECRET).removeprefix("bs-")

    for leak in (booking_id, str(sid), sid.hex, sid.hex[:8], sid.hex[-8:], str(sid).split("-")[0]):
        assert leak not in room
    # Not a plain (unkeyed) hash either, which anyone could compute from the session id.
    for unkeyed in (hashlib.sha256(sid.bytes), hashlib.sha256(str(sid).encode()), hashlib.sha256(booking_id.encode())):
        assert unkeyed.hexdigest()[:32] != room


@pytest.mark.parametrize(
    ("base", "prefix"),
    [
        ("https://meet.jit.si", "https://meet.jit.si/"),
        ("https://meet.jit.si/", "https://meet.jit.si/"),
        ("https://meet.jit.si//", "https://meet.jit.si/"),
        ("https://video.example.com/rooms", "https://video.example.com/rooms/"),
        ("https://video.example.com/rooms/", "https://video.example.com/rooms/"),
    ],
)
def test_meeting_link_joins_base_and_room_with_one_slash(base: str, prefix: str) -> None:
    sid = session_id("bk_123")

    assert meeting_link(base, sid, SECRET) == prefix + room_name(sid, SECRET)
    assert "//" not in meeting_link(base, sid, SECRET).removeprefix("https://")


def test_a_later_key_version_names_itself_in_the_room() -> None:
    sid = session_id("bk_123")
    digest = hmac.new(OTHER_SECRET, sid.bytes, hashlib.sha256).hexdigest()[:32]

    assert room_name(sid, OTHER_SECRET, version=2) == f"bs-v2-{digest}"
    assert room_name(sid, SECRET, version=1) == room_name(sid, SECRET)  # version 1: the links made before versions
    assert meeting_link("https://meet.jit.si", sid, OTHER_SECRET, version=12).endswith(f"/bs-v12-{digest}")
    with pytest.raises(ValueError, match="at least 1"):
        room_name(sid, SECRET, version=0)


def test_the_rekey_id_is_pinned_and_differs_per_version() -> None:
    sid = session_id("bk_123")

    assert session_rekeyed_id(sid, 2) == uuid.uuid5(sid, "SessionUpdated:meeting-key-v2")
    assert len({session_rekeyed_id(sid, 2), session_rekeyed_id(sid, 3), session_rekeyed_id(session_id("b"), 2)}) == 3
    assert session_rekeyed_id(sid, 2) not in (session_created_id(sid), session_updated_id(sid, CAUSE))
