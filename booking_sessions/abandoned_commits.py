"""An offset commit given up at its deadline, failing later inside aiokafka, is a warning, not a traceback.

``consumer.client.commit`` bounds each offset commit (aiokafka retries one for ever while the coordinator is
silent). aiokafka sends the request in a task of its own under ``asyncio.shield``, so the deadline leaves that task
running; when it fails afterwards (a ``RequestTimedOutError`` once the broker answers again), nobody awaits it and
asyncio logs "Task exception was never retrieved" with a traceback, at error level, after every broker freeze. The
commit was already reported lost (``offset_commit_lost``) and the next batch's commit covers it, so that failure is
logged as one warning line instead. Any other unhandled error keeps asyncio's own report.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from models.faults import first_line

log = structlog.get_logger(__name__)

_ABANDONED = "_do_commit_offsets"  # aiokafka's coroutine behind the shield (aiokafka.consumer.group_coordinator)


def report_unretrieved(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler (``loop.set_exception_handler``): an abandoned offset commit's late failure
    becomes the warning ``abandoned_offset_commit_failed``; everything else goes to asyncio's default handler."""
    task = context.get("future")
    error = context.get("exception")
    coroutine = task.get_coro() if isinstance(task, asyncio.Task) else None
    if error is not None and coroutine is not None and getattr(coroutine, "__name__", "") == _ABANDONED:
        log.warning(
            "abandoned_offset_commit_failed",
            cause=type(error).__name__,
            error=first_line(error, 300),
            outcome="given up at its deadline already and reported then (offset_commit_lost, or the command's error)",
        )
        return
    loop.default_exception_handler(context)
