"""Wait for a condition with a deadline, never for a fixed time (STYLE.md, Tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, what: str, timeout_s: float = 15.0, interval_s: float = 0.05
) -> T:
    """Call ``check`` until it returns a truthy value, and return that value.

    ``check`` may also raise AssertionError to say "not yet, and here is what is missing"; the last such message
    (or the last falsy value) ends the error raised when ``timeout_s`` passes, after ``what`` was awaited.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            value = await check()
        except AssertionError as err:
            last = f"last check: {err}"
        else:
            if value:
                return value
            last = f"last value: {value!r}"
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; {last}")
        await asyncio.sleep(interval_s)
