"""The five contract tables (CONTRACT.md, "Rows") and the meeting keys, SQLAlchemy Core on one MetaData."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

inbox_messages = Table(
    "inbox_messages",
    metadata,
    Column("message_id", Uuid, primary_key=True),
    Column("event_type", Text, nullable=False),
    # Null only for a dead-lettered record whose booking_id could not be read.
    Column("booking_id", Text, nullable=True),
    Column("payload_sha256", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("dlq_reason", Text, nullable=True),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("outcome IN ('applied', 'ignored', 'dead_lettered')", name="outcome"),
    CheckConstraint("length(payload_sha256) = 64", name="payload_sha256_hex"),
)
# Pruning walks the inbox by age.
Index("ix_inbox_messages_processed_at", inbox_messages.c.processed_at)

# Digits, the last not a zero, or none at all (live_sessions' *_beyond_us columns).
BEYOND_US_PATTERN = "^([0-9]*[1-9])?$"

live_sessions = Table(
    "live_sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("booking_request_id", Text, nullable=False, unique=True),
    Column("instructor_id", Text, nullable=False),
    Column("student_id", Text, nullable=False),
    Column("title", Text, nullable=True),
    Column("scheduled_start", DateTime(timezone=True), nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'SCHEDULED'")),
    Column("meeting_link", Text, nullable=False),
    # The version of the snapshot the row shows: (occurred_at, message_id) of the newest applied event.
    # Kept on the row so that an older event never overwrites a newer one, also after the inbox is pruned.
    Column("snapshot_occurred_at", DateTime(timezone=True), nullable=False),
    Column("snapshot_message_id", Uuid, nullable=False),
    # The earliest BookingCancelled (consumer/decide.py, Cancellation): its occurred_at, message id and reason.
    # Its message id breaks ties on occurred_at, so the row is the same whatever order the cancellations came in.
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    Column("cancellation_message_id", Uuid, nullable=True),
    Column("cancellation_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # What timestamptz cannot hold of snapshot_occurred_at and cancelled_at: the digits of their second's fraction
    # past the sixth, no trailing zero ('' for none), so that instants less than a microsecond apart still order as
    # they are (models/fields.py, PreciseDatetime). Compared byte by byte (COLLATE "C"), as text of digits orders.
    Column("snapshot_occurred_at_beyond_us", Text, nullable=False, server_default=text("''")),
    Column("cancelled_at_beyond_us", Text, nullable=False, server_default=text("''")),
    CheckConstraint("duration_minutes BETWEEN 1 AND 720", name="duration_minutes"),
    CheckConstraint("status IN ('SCHEDULED', 'CANCELLED')", name="status"),
    CheckConstraint(
        "(status = 'CANCELLED') = (cancelled_at IS NOT NULL AND cancellation_message_id IS NOT NULL)",
        name="cancellation",
    ),
    CheckConstraint(f"snapshot_occurred_at_beyond_us ~ '{BEYOND_US_PATTERN}'", name="snapshot_occurred_at_beyond_us"),
    CheckConstraint(f"cancelled_at_beyond_us ~ '{BEYOND_US_PATTERN}'", name="cancelled_at_beyond_us"),
)

session_participants = Table(
    "session_participants",
    metadata,
    Column("session_id", Uuid, ForeignKey("live_sessions.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("session_id", "user_id"),
)

session_reservations = Table(
    "session_reservations",
    metadata,
    Column("session_id", Uuid, ForeignKey("live_sessions.id", ondelete="CASCADE"), nullable=False),
    Column("learner_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("session_id", "learner_id"),
    CheckConstraint("status IN ('CONFIRMED', 'CANCELLED')", name="status"),
)

outbox_messages = Table(
    "outbox_messages",
    metadata,
    # Publication order: the relay sends rows in id order, which keeps each booking's events in order.
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("message_id", Uuid, nullable=False, unique=True),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    # The exact bytes published (UTF-8 JSON); cast to jsonb to query.
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
    # When `outbox republish` last handed the row back to the relay (migration 0007); null: never. A row's wait is
    # counted from the later of this and created_at.
    Column("handed_back_at", DateTime(timezone=True), nullable=True),
    # The W3C trace context of the input event that caused the row (models/trace_context.py), which the relay's
    # span and the published record's headers continue; null when it carried none, or tracing is off.
    Column("traceparent", Text, nullable=True),
    Column("tracestate", Text, nullable=True),
)
# The relay's only query: the unpublished rows in order. Published rows drop out of this index.
Index("ix_outbox_messages_unpublished", outbox_messages.c.id, postgresql_where=text("published_at IS NULL"))

# One row per version of BOOKING_MEETING_SECRET: its fingerprint (booking_sessions/meeting.py), never the key.
# Written on the key's first use; `run` and `replay` refuse a secret whose fingerprint differs. UNIQUE: a new
# version needs a new key.
meeting_keys = Table(
    "meeting_keys",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("fingerprint", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("version >= 1", name="version"),
)
