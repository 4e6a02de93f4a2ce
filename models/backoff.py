"""The one retry-with-backoff policy of every loop that waits out the world (tenacity underneath).

The consume loop (of `run` and of `replay`: consumer.loop), the relay and the meeting-key check at startup each retry
what ``models.faults.is_transient`` calls the world's fault, committing nothing meanwhile (CONTRACT "What each event
does": offsets only after the effects committed; "Process and configuration": every wait has a deadline, and SIGTERM
ends the process). They differ only in how they wait (a consumer keeps polling so that it stays in its group; the relay
wakes up early at SIGTERM) and in how often they try (`run` forever, an operator's command a few times), so those two
are the parameters; the doubling, the cap and the jitter are written once, here.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_never
from tenacity.wait import wait_exponential

from models.faults import is_transient

Sleep = Callable[[float], Awaitable[None]]
OnRetry = Callable[[BaseException, float], None]


def jittered(delay_s: float) -> float:
    """Between half and all of ``delay_s`` (seconds): instances that failed together do not retry in lockstep."""
    return delay_s * random.uniform(0.5, 1.0)


class _HalfJitteredExponential(wait_exponential):
    """``initial_s``, doubling per attempt up to ``max_s``, each wait then between half and all of that."""

    def __call__(self, retry_state: RetryCallState) -> float:
        return jittered(super().__call__(retry_state))


def backoff(
    *,
    initial_s: float,
    max_s: float,
    sleep: Sleep,
    on_retry: OnRetry | None = None,
    attempts: int | None = None,
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> AsyncRetrying:
    """A tenacity retrier for ``async for attempt in backoff(...): with attempt: ...``.

    Takes the first wait ``initial_s`` and the cap ``max_s`` (seconds; each wait is jittered to between half and
    all of its step), the coroutine that waits (``sleep(seconds)``: it may raise to end the retrying, e.g. at
    SIGTERM), ``on_retry(error, wait_s)`` called before each wait (for a log line and a metric), ``attempts`` (None:
    retry until ``sleep`` raises) and ``retry_on`` (default: the transient faults). An error ``retry_on`` refuses,
    or the last attempt's error, is raised as it is (never tenacity's ``RetryError``).
    """

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            error = state.outcome.exception()
            if error is not None:
                on_retry(error, state.next_action.sleep)

    return AsyncRetrying(
        sleep=sleep,
        wait=_HalfJitteredExponential(multiplier=initial_s, min=initial_s, max=max_s, exp_base=2),
        retry=retry_if_exception(retry_on),
        stop=stop_never if attempts is None else stop_after_attempt(attempts),
        before_sleep=before_sleep,
        reraise=True,
    )
