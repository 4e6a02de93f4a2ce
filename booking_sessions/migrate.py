"""Schema migrations (Alembic), callable from the command and from test fixtures."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

import migrations

_SCRIPT_LOCATION = Path(migrations.__file__).parent


def alembic_config(database_url: str, connect_args: Mapping[str, Any] | None = None) -> Config:
    """Alembic's configuration for this service's migrations; ``connect_args`` (TLS) reach env.py's engine."""
    config = Config(attributes={"connect_args": dict(connect_args or {})})
    config.set_main_option("script_location", str(_SCRIPT_LOCATION))
    # '%' is ConfigParser's interpolation character; a password may contain it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_head(database_url: str, connect_args: Mapping[str, Any] | None = None) -> None:
    """Bring the schema to the newest revision; running it again changes nothing. ``connect_args``: as for
    ``create_async_engine`` (``database_tls.database_connect_args``). Raises what the database raises (OSError
    when it cannot be reached); concurrent runs queue on an advisory lock (``migrations/env.py``)."""
    command.upgrade(alembic_config(database_url, connect_args), "head")
