"""outbox handed back: when `outbox republish` last handed a row back to the relay

An outbox row's wait is measured from when it was last queued: its creation, or its hand-back by `outbox republish`.
Measured from its creation alone, rows handed back after days made the oldest-unpublished age (the gauge, `status`)
read days at once, and BookingSessionsOutboxOld fired on every republish of old rows (a newcomer's find).

Expand-only: one nullable column, no default, so the ALTER takes no table rewrite and the previous release (which
neither writes nor reads it) keeps running during a rolling deploy. ``downgrade`` drops it: rows handed back and not
yet published are then aged from their creation again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 15:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("handed_back_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox_messages", "handed_back_at")
