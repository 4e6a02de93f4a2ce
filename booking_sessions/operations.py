"""Operators' commands: replay, rebuild, dead letters, outbox republish, inbox prune, status."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the operators' commands to ``app``."""
