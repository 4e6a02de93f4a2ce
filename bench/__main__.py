"""``python -m bench run|soak`` from a clone: the bench is not part of the installed service."""

from bench.cli import app

app()
