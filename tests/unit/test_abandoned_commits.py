"""An offset commit given up at its deadline and failing later inside aiokafka is one warning line, not asyncio's
"Task exception was never retrieved" traceback at error level (a newcomer's fault run: after every broker freeze)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest
from aiokafka.errors import RequestTimedOutError
from structlog.testing import capture_logs

from booking_sessions.abandoned_commits import report_unretrieved


async def _do_commit_offsets() -> None:  # named as aiokafka's coroutine behind the shield
    raise RequestTimedOutError()


async def something_else() -> None:
    raise RuntimeError("a bug")


def reported(coroutine: Any) -> tuple[list[dict[str, Any]], list[MutableMapping[str, Any]]]:
    """Run ``coroutine`` as a task nobody awaits, hand its failure to the handler as asyncio would; returns what
    went to asyncio's default handler and what was logged."""
    loop = asyncio.new_event_loop()
    defaults: list[dict[str, Any]] = []
    try:
        task = loop.create_task(coroutine)
        loop.run_until_complete(asyncio.wait([task]))
        context = {"message": "Task exception was never retrieved", "exception": task.exception(), "future": task}
        with pytest.MonkeyPatch.context() as patch, capture_logs() as logs:
            patch.setattr(loop, "default_exception_handler", defaults.append)
            report_unretrieved(loop, context)
    finally:
        loop.close()
    return defaults, logs


def test_a_late_failure_of_an_abandoned_commit_is_a_warning() -> None:
    defaults, logs = reported(_do_commit_offsets())

    assert defaults == []
    assert [(e["event"], e["log_level"], e["cause"]) for e in logs] == [
        ("abandoned_offset_commit_failed", "warning", "RequestTimedOutError")
    ]


def test_any_other_unretrieved_error_keeps_asyncios_report() -> None:
    defaults, logs = reported(something_else())

    assert [(d["message"], type(d["exception"])) for d in defaults] == [
        ("Task exception was never retrieved", RuntimeError)
    ]
    assert logs == []
