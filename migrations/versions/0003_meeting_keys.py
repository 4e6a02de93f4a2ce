"""meeting keys: one fingerprint per version of BOOKING_MEETING_SECRET (never the key)

``upgrade`` creates meeting_keys (see booking_sessions/meeting.py); ``downgrade`` drops it, and with it each
version's recorded fingerprint.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 02:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "meeting_keys",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_meeting_keys_version")),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_meeting_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_meeting_keys_fingerprint")),
    )


def downgrade() -> None:
    op.drop_table("meeting_keys")
