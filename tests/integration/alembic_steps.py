"""Alembic run step by step on a test database (upgrade or downgrade to a revision), and the revision it is at."""

from __future__ import annotations

import asyncio

from alembic import command

from booking_sessions.migrate import alembic_config
from tests.integration.harness import query


async def alembic(url: str, action: str, revision: str) -> None:
    """``action`` ("upgrade" or "downgrade") the database at ``url`` to ``revision``, in a thread (Alembic runs
    its own event loop)."""
    await asyncio.to_thread(getattr(command, action), alembic_config(url), revision)


async def version(url: str) -> str:
    """The alembic_version of the database at ``url``."""
    [row] = await query(url, "SELECT version_num FROM alembic_version")
    return str(row["version_num"])


# The outbox insert of the release before 0004 (consumer/store.py then), for one row.
PREVIOUS_RELEASE_OUTBOX = (
    "INSERT INTO outbox_messages (message_id, topic, key, payload) VALUES (:mid, :topic, :key, :p)"
)
