"""Deterministic identifiers: a rebuild from the topic into an empty database reproduces them all."""

from __future__ import annotations

import hashlib
import hmac
import uuid

# Fixed forever: live_sessions.id = uuid5(SESSION_NAMESPACE, booking_id). Changing it changes every session id.
SESSION_NAMESPACE = uuid.UUID("5b0c6f1e-3d2a-5c8e-9a41-7f3e2d1c0b9a")
_SESSION_NAMESPACE_BYTES = SESSION_NAMESPACE.bytes
# RFC 4122 version 5: the version nibble and the variant bits over the first 128 bits of the SHA-1.
_VERSION_5 = 5 << 76 | 0x8000 << 48
_NOT_VERSION_BITS = ~(0xF000 << 64 | 0xC000 << 48)


def _uuid5(namespace: bytes, name: str) -> uuid.UUID:
    """``uuid.uuid5`` of ``namespace`` (its 16 bytes) and ``name``, the same UUID in half the time: the stdlib's
    passes through ``UUID(bytes=..., version=5)``, and a decision makes one or two per booking (issue 15)."""
    digest = hashlib.sha1(namespace + name.encode()).digest()
    return uuid.UUID(int=int.from_bytes(digest[:16]) & _NOT_VERSION_BITS | _VERSION_5)


def session_id(booking_id: str) -> uuid.UUID:
    """``live_sessions.id``: UUIDv5 of the booking id under ``SESSION_NAMESPACE`` (CONTRACT "Rows")."""
    return _uuid5(_SESSION_NAMESPACE_BYTES, booking_id)


def session_created_id(session: uuid.UUID) -> uuid.UUID:
    """One SessionCreated id per session, ever: UUIDv5 of the session id and ``SessionCreated`` (CONTRACT "Output"),
    so a re-sent copy carries the same id."""
    return _uuid5(session.bytes, "SessionCreated")


def session_cancelled_id(session: uuid.UUID) -> uuid.UUID:
    """One SessionCancelled id per session, ever: a cancellation is announced once, and a re-sent copy (a
    rebuild, a republish) carries the same id."""
    return _uuid5(session.bytes, "SessionCancelled")


def session_updated_id(session: uuid.UUID, cause: uuid.UUID) -> uuid.UUID:
    """One SessionUpdated id per (session, causing event's message id): UUIDv5 under the session id (CONTRACT
    "Output"), so a replay of that event yields the same id."""
    return _uuid5(session.bytes, f"SessionUpdated:{cause}")


def room_name(session: uuid.UUID, secret: bytes, *, version: int = 1) -> str:
    """The Jitsi room of a session under the key ``secret`` of key version ``version`` (>= 1).

    Jitsi rooms are open to whoever knows the name: derived under a secret, it cannot be guessed from the
    booking or session id, yet stays the same across rebuilds (CONTRACT, "Rows": meeting_link). Version 1
    keeps the form links had before key versions existed (``bs-<32 hex>``), so those stay valid; a later
    version names itself (``bs-v2-<32 hex>``), so a link shows the key it was made under.
    Raises ValueError for a version below 1.
    """
    if version < 1:
        raise ValueError(f"key version must be at least 1, got {version}")
    digest = hmac.new(secret, session.bytes, hashlib.sha256).hexdigest()
    # 128 bits are plenty against guessing and keep the link short.
    return f"bs-{digest[:32]}" if version == 1 else f"bs-v{version}-{digest[:32]}"


def meeting_link(base_url: str, session: uuid.UUID, secret: bytes, *, version: int = 1) -> str:
    """``{base_url}/{room}``, one slash between them; see ``room_name``."""
    return f"{base_url.rstrip('/')}/{room_name(session, secret, version=version)}"


def session_rekeyed_id(session: uuid.UUID, key_version: int) -> uuid.UUID:
    """The SessionUpdated id of a session's re-key to ``key_version`` (CONTRACT, "Output"): one per version,
    so running the re-key again sends nothing new, and a re-sent copy carries the same id."""
    return uuid.uuid5(session, f"SessionUpdated:meeting-key-v{key_version}")
