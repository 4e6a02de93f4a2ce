"""instants beyond the microsecond: the digits of snapshot_occurred_at and cancelled_at that timestamptz cannot hold

Two events of one booking less than a microsecond apart were ordered by message id, not by occurred_at (timestamptz
keeps microseconds): the newer snapshot could lose, and the earlier of two cancellations too (CONTRACT "What each
event does": the newest occurred_at wins; a newcomer's find). Each instant's digits past the sixth now sit beside it
(models/fields.py, PreciseDatetime); '' for every row so far, which is what they were.

Expand-only, so that the previous release keeps running during a rolling deploy: two columns with a constant
default (no table rewrite on PostgreSQL 11 and later), which its inserts leave at ''. Their checks are added NOT
VALID and validated after, so that the scan of the existing rows takes no lock that stops writers. ``downgrade``
drops them: sessions whose instants differed below the microsecond then tie again, and the larger message id wins.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("snapshot_occurred_at_beyond_us", "cancelled_at_beyond_us")
PATTERN = "^([0-9]*[1-9])?$"  # models.tables.BEYOND_US_PATTERN when this was written


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("live_sessions", sa.Column(column, sa.Text(), nullable=False, server_default=sa.text("''")))
    for column in COLUMNS:
        check = f"ck_live_sessions_{column} CHECK ({column} ~ '{PATTERN}')"
        op.execute(f"ALTER TABLE live_sessions ADD CONSTRAINT {check} NOT VALID")
    for column in COLUMNS:
        op.execute(f"ALTER TABLE live_sessions VALIDATE CONSTRAINT ck_live_sessions_{column}")


def downgrade() -> None:
    for column in reversed(COLUMNS):
        op.drop_column("live_sessions", column)  # its check goes with it
