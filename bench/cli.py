"""``booking-sessions bench``: the service beside its ceilings and the naive baseline, on one set of records."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""
