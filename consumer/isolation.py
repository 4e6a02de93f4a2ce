"""Isolating poison: a part whose transaction failed for a reason that is not transient is bisected until the single
records that still fail are found; those are ``Poison`` and are dead-lettered, the rest is applied and committed.

STYLE "errors": an unexpected exception in a batch means retry one message at a time; the one that still fails
becomes ``Poison("processing_error")``. CONTRACT "Dead letters": a poison message never stops the partition, and
never costs the messages around it. Validation (consumer.decode) refuses what PostgreSQL would, so this path is for
real surprises only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from models.errors import Poison, Transient
from models.faults import is_transient, refusal_text
from models.records import Decoded

Result = TypeVar("Result")
Transact = Callable[[Sequence[Decoded]], Awaitable[Result]]
DeadLetter = Callable[[Decoded, Poison], Awaitable[Result]]


def poison(error: BaseException) -> Poison:
    """What a single record's failure that is not transient means: ``processing_error``, with which layer refused it
    (``models.faults.refusal_text``, never the input)."""
    return Poison("processing_error", refusal_text(error))


async def alone(record: Decoded, transact: Transact[Result]) -> Result:
    """``record`` in a transaction of its own (``transact``). Raises ``Poison`` when it fails for a reason that is
    not transient: nothing else is left to blame. A transient error is raised as it is (the batch is retried)."""
    try:
        return await transact([record])
    except Exception as error:
        if is_transient(error):
            raise
        raise poison(error) from error


class DeadLetterNotRecorded(Transient):
    """A poison record's dead letter could not be recorded (its inbox row, or the DLQ send) for a reason that is not
    transient either: nothing more can be blamed on the record, and the batch is retried with backoff, alerted on
    (``batch_retry``), rather than the error ending the process (a restart would meet it again: a crash loop)."""


async def _dead_letter(record: Decoded, found: Poison, dead_letter: DeadLetter[Result]) -> Result:
    try:
        return await dead_letter(record, found)
    except Exception as error:
        if is_transient(error):
            raise
        raise DeadLetterNotRecorded(f"recording a dead letter failed: {refusal_text(error)}") from error


async def isolate(
    part: Sequence[Decoded], error: Exception, transact: Transact[Result], dead_letter: DeadLetter[Result]
) -> list[Result]:
    """``part`` failed as a whole with ``error`` (not transient): its halves are applied in order, each in its own
    transaction (``transact``; a booking's events stay in order), a half that fails is bisected again, and a single
    record that fails is ``Poison``, caught here and handed to ``dead_letter``. Returns what each committed piece
    did, in order. Raises a transient error as it is: the halves already committed are duplicates on the retry; a
    dead letter that cannot be recorded raises ``DeadLetterNotRecorded`` (transient)."""
    if len(part) == 1:
        return [await _dead_letter(part[0], poison(error), dead_letter)]
    middle = len(part) // 2
    results: list[Result] = []
    for half in (part[:middle], part[middle:]):
        try:
            results.append(await (alone(half[0], transact) if len(half) == 1 else transact(half)))
        except Poison as found:
            results.append(await _dead_letter(half[0], found, dead_letter))
        except Exception as half_error:
            if is_transient(half_error):
                raise
            results += await isolate(half, half_error, transact, dead_letter)
    return results
