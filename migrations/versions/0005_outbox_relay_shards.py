"""outbox relay shards: ``outbox_shard(key)`` and an index of the unpublished rows by (shard, id)

Several relays publish at once, each its own shards (producer/relay.py, producer/shards.py). The shard is a pure
function of the row's key, computed by PostgreSQL itself, so there is no column to fill or backfill: every writer
(this release, the previous one during a rolling deploy, operator commands) is covered as it is. Expand-only: a
function and a partial index built CONCURRENTLY, so writers are not blocked while it builds; the previous release
never looks at either. The function's body is fixed here: producer.shards.shard_of computes the same number.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The first 32 bits of md5(key), sign bit cleared, modulo 60 shards. IMMUTABLE so an index may use it;
# PARALLEL SAFE and plain SQL so the planner inlines it.
_FUNCTION = """
CREATE OR REPLACE FUNCTION outbox_shard(key text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT (('x' || left(md5(key), 8))::bit(32)::integer & 2147483647) % 60 $$
"""
_INDEX_NAME = "ix_outbox_messages_shard_unpublished"
_INDEX = f"""
CREATE INDEX CONCURRENTLY IF NOT EXISTS {_INDEX_NAME}
ON outbox_messages (outbox_shard(key), id) WHERE published_at IS NULL
"""
# What a build that failed before left behind: an index of this name that PostgreSQL never finished (indisvalid false).
_LEFT_INVALID = "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"


def upgrade() -> None:
    op.execute(_FUNCTION)
    # CONCURRENTLY cannot run in a transaction: commit the function first, build the index outside. A build that
    # fails (cancelled, a deadlock, the server restarted) leaves an invalid index of this name and this revision
    # unrecorded: the next run drops that index and builds it again, so `migrate` is all an operator has to repeat.
    # A valid one (built, then the run died before recording the revision) is kept.
    with op.get_context().autocommit_block():
        if op.get_bind().scalar(sa.text(_LEFT_INVALID), {"name": _INDEX_NAME}):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_INDEX_NAME}")
        op.execute(_INDEX)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_INDEX_NAME}")
    op.execute("DROP FUNCTION IF EXISTS outbox_shard(text)")
