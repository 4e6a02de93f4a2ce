"""outbox trace context: the causing event's W3C traceparent and tracestate on each outbox row

Expand-only: two nullable columns, no default, so the ALTER takes no table rewrite and code that does not know them
(the previous release, during a rolling deploy) keeps inserting and relaying rows without them. ``downgrade``
drops them: rows not yet published then go out without their traceparent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 02:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("traceparent", sa.Text(), nullable=True))
    op.add_column("outbox_messages", sa.Column("tracestate", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox_messages", "tracestate")
    op.drop_column("outbox_messages", "traceparent")
