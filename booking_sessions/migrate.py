"""Schema migrations (Alembic), callable from the command and from test fixtures."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

import migrations
from models.errors import ConfigurationError

_SCRIPT_LOCATION = Path(migrations.__file__).parent


def alembic_config(database_url: str, connect_args: Mapping[str, Any] | None = None) -> Config:
    """Alembic's configuration for this service's migrations; ``connect_args`` (TLS) reach env.py's engine."""
    config = Config(attributes={"connect_args": dict(connect_args or {})})
    config.set_main_option("script_location", str(_SCRIPT_LOCATION))
    # '%' is ConfigParser's interpolation character; a password may contain it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


class NewerSchema(Exception):
    """The database is at a revision this release does not know: a newer release migrated it (a rollback of the
    image, say). ``revision``: the database's; ``newest``: this release's newest."""

    def __init__(self, revision: str, newest: str) -> None:
        super().__init__(f"the schema is at revision {revision}, newer than this release's newest ({newest})")
        self.revision, self.newest = revision, newest


_UNKNOWN_REVISION = re.compile(r"Can't locate revision identified by '([^']*)'")
_OURS = re.compile(r"[0-9]{4}")  # this project's revision ids: 0001, 0002, ... (migrations/versions)


def upgrade_head(database_url: str, connect_args: Mapping[str, Any] | None = None) -> None:
    """Bring the schema to the newest revision; running it again changes nothing. ``connect_args``: as for
    ``create_async_engine`` (``database_tls.database_connect_args``). Raises NewerSchema when a newer release
    migrated the database already (nothing is changed), what the database raises (OSError when it cannot be
    reached); concurrent runs queue on an advisory lock (``migrations/env.py``)."""
    config = alembic_config(database_url, connect_args)
    try:
        command.upgrade(config, "head")
    except CommandError as error:
        found = _UNKNOWN_REVISION.search(str(error))
        if found is None:
            raise
        revision, newest = found.group(1), ScriptDirectory.from_config(config).get_current_head() or "0000"
        if not (_OURS.fullmatch(revision) and revision > newest):
            # Not a later one of ours: another application's schema (a shared database), or damage. Nothing to run
            # on (a newcomer's find: taken for "newer", the migrate job passed and `run` waited for ever).
            raise ConfigurationError(
                f"the database's alembic_version holds revision {revision!r}, which is no migration of "
                f"booking-sessions (its newest is {newest}): another application's schema? Use a database of its own"
            ) from None
        raise NewerSchema(revision, newest) from None
