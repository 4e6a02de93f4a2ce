"""cancellation: BookingCancelled closes the booking's session and its reservations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 02:00:00

Expand-only, so that the previous release keeps running against this schema during a rolling deploy: three
new nullable columns, and status checks that allow more than before (the previous release writes only
'SCHEDULED' sessions without a cancellation and 'CONFIRMED' reservations, which every new check accepts).
Adding the checks scans live_sessions and session_reservations once, under a short exclusive lock.
``upgrade`` adds the columns and checks; ``downgrade`` removes them, raising RuntimeError as below.

Downgrade refuses while a session or reservation is CANCELLED: the previous release can represent neither, and
mapping them back to SCHEDULED/CONFIRMED would reopen a cancelled session and its meeting room. Operators who
accept losing them delete those sessions first (their participants and reservations go with them):
    DELETE FROM live_sessions WHERE status = 'CANCELLED';
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSION_STATUS_BEFORE = "status IN ('SCHEDULED')"


def upgrade() -> None:
    op.add_column("live_sessions", sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("live_sessions", sa.Column("cancellation_message_id", sa.Uuid(), nullable=True))
    op.add_column("live_sessions", sa.Column("cancellation_reason", sa.Text(), nullable=True))
    op.drop_constraint(op.f("ck_live_sessions_status"), "live_sessions", type_="check")
    op.create_check_constraint(op.f("ck_live_sessions_status"), "live_sessions", "status IN ('SCHEDULED', 'CANCELLED')")
    op.create_check_constraint(
        op.f("ck_live_sessions_cancellation"),
        "live_sessions",
        "(status = 'CANCELLED') = (cancelled_at IS NOT NULL AND cancellation_message_id IS NOT NULL)",
    )
    op.create_check_constraint(
        op.f("ck_session_reservations_status"), "session_reservations", "status IN ('CONFIRMED', 'CANCELLED')"
    )


def downgrade() -> None:
    connection = op.get_bind()
    sessions = connection.execute(sa.text("SELECT count(*) FROM live_sessions WHERE status = 'CANCELLED'")).scalar()
    reservations = connection.execute(
        sa.text("SELECT count(*) FROM session_reservations WHERE status = 'CANCELLED'")
    ).scalar()
    if sessions or reservations:
        raise RuntimeError(
            f"cannot downgrade below 0002: {sessions} live sessions and {reservations} reservations are CANCELLED, "
            "which the previous release cannot represent (turning them back to SCHEDULED would reopen them). "
            "To drop them, run DELETE FROM live_sessions WHERE status = 'CANCELLED'; then downgrade again."
        )
    op.drop_constraint(op.f("ck_session_reservations_status"), "session_reservations", type_="check")
    op.drop_constraint(op.f("ck_live_sessions_cancellation"), "live_sessions", type_="check")
    op.drop_constraint(op.f("ck_live_sessions_status"), "live_sessions", type_="check")
    op.create_check_constraint(op.f("ck_live_sessions_status"), "live_sessions", SESSION_STATUS_BEFORE)
    op.drop_column("live_sessions", "cancellation_reason")
    op.drop_column("live_sessions", "cancellation_message_id")
    op.drop_column("live_sessions", "cancelled_at")
