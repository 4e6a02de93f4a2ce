"""The meeting key: BOOKING_MEETING_SECRET with its version, its fingerprint, and the check against the database.

The fingerprint is HMAC-SHA256 of a fixed label under the key, first 16 hex digits. Safe to store and print:
HMAC is a pseudo-random function, so the fingerprint tells nothing about the key; all it allows is testing a
guessed key offline, which the room names already allow (each is an HMAC of a known session id under the same
key), and which a key of at least 32 bytes makes hopeless. The label keeps it apart from every room name.

Versions (README, "The meeting secret"): ``meeting_keys`` holds one fingerprint per version, written on the
version's first use. A secret must match its version's fingerprint, a new version needs a new secret, and an
older version than the newest on record is refused, so a leaked key cannot come back by mistake.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from uuid import UUID

import structlog
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_sessions.settings import Settings
from consumer.ids import meeting_link
from models.backoff import backoff
from models.errors import ConfigurationError
from models.faults import error_fields, first_line, is_transient, sqlstate

log = structlog.get_logger(__name__)

_FINGERPRINT_LABEL = b"booking-sessions meeting-key fingerprint"
CHECK_TIMEOUT_S = 30.0  # the database must answer the fingerprint check within this, or the command stops
# `run` waits for an absent database between these bounds (seconds), as the consumer's batch retries do.
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0

_RECORD = text("INSERT INTO meeting_keys (version, fingerprint) VALUES (:version, :fingerprint) ON CONFLICT DO NOTHING")
_STORED = text("SELECT version, fingerprint FROM meeting_keys ORDER BY version")


class ThrowawaySecret(SecretStr):
    """A meeting secret made for one process (embedded servers, the demo): never recorded as a real key."""


@dataclass(frozen=True, slots=True)
class MeetingKey:
    """The HMAC key of the room names (bytes, never printed) and its version (>= 1)."""

    secret: bytes = field(repr=False)
    version: int
    throwaway: bool = False

    @property
    def fingerprint(self) -> str:
        """16 hex digits that identify the key without revealing it (see the module docstring)."""
        return fingerprint(self.secret)

    def link(self, base_url: str, session: UUID) -> str:
        """The session's meeting link under this key (CONTRACT, "Rows": meeting_link)."""
        return meeting_link(base_url, session, self.secret, version=self.version)


def fingerprint(secret: bytes) -> str:
    """HMAC-SHA256(secret, fixed label), first 16 hex digits: 64 bits tell keys apart, reveal none."""
    return hmac.new(secret, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]


def meeting_key(settings: Settings) -> MeetingKey:
    """The configured key; raises ConfigurationError (saying how to make one) when BOOKING_MEETING_SECRET is unset.

    The settings have already stripped the secret and refused one under 32 bytes.
    """
    secret = settings.meeting_secret
    if secret is None:
        raise ConfigurationError(
            "BOOKING_MEETING_SECRET is required: meeting room names are derived from it, and without it they "
            "could be guessed (generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return MeetingKey(
        secret.get_secret_value().encode(), settings.meeting_key_version, isinstance(secret, ThrowawaySecret)
    )


def key_problem(key_version: int, key_fingerprint: str, stored: Mapping[int, str]) -> str | None:
    """Pure: why the key of ``key_version`` with ``key_fingerprint`` must not be used against ``stored``
    (version -> fingerprint, from ``meeting_keys``); None when it may (recorded, or new and not older)."""
    newest = max(stored, default=None)
    here = f"BOOKING_MEETING_SECRET (fingerprint {key_fingerprint}, BOOKING_MEETING_KEY_VERSION={key_version})"
    same = [v for v, f in stored.items() if f == key_fingerprint and v != key_version]
    if same:
        use = f"set BOOKING_MEETING_KEY_VERSION={same[0]} to use it, or " if same[0] == newest else ""
        return (
            f"{here} is the key of version {same[0]} already: {use}a new version needs a new secret "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    known = stored.get(key_version)
    if known is not None and known != key_fingerprint:
        return (
            f"{here} is not the key this database recorded for version {key_version} (fingerprint {known}): "
            f"links would silently differ. Set the secret of version {key_version}; or, to change the key, set "
            f"BOOKING_MEETING_KEY_VERSION={(newest or key_version) + 1} with the new secret and run "
            "`booking-sessions meeting rekey --all` (README, The meeting secret)"
        )
    if newest is not None and key_version < newest:
        return (
            f"{here} is older than version {newest} (fingerprint {stored[newest]}), the newest this database "
            f"recorded: an older key may be a leaked one. Set the secret of version {newest} and "
            f"BOOKING_MEETING_KEY_VERSION={newest}"
        )
    return None


async def check_meeting_key(
    engine: AsyncEngine,
    key: MeetingKey,
    *,
    record: bool = True,
    wait_for_database: bool = False,
    retried: Callable[[BaseException], None] | None = None,
) -> bool:
    """Record the key's fingerprint on its version's first use (unless not ``record``: a dry run), and refuse a
    key that does not fit. Returns whether the version's fingerprint is on record now.

    Raises ConfigurationError naming both fingerprints and what to do (see ``key_problem``), or when the database
    cannot be asked (no answer within CHECK_TIMEOUT_S, no ``meeting_keys`` table: not migrated). With
    ``wait_for_database`` (``run``: a service must not crash-loop while its database is away) a database that is
    away, silent or not migrated yet is waited for instead, with capped backoff, until SIGTERM; a key that does not
    fit is still refused at once; ``retried`` is called with each error waited out (``Metrics.startup_retried``). A
    throwaway key is neither checked nor recorded: it dies with its process, and so does the embedded database it
    is used with.
    """
    if key.throwaway:
        log.warning("meeting_key_throwaway", fingerprint=key.fingerprint, recorded=False)
        return False

    def database_away(error: BaseException) -> bool:
        return wait_for_database and isinstance(error, (OSError, SQLAlchemyError)) and is_transient(error)

    def retrying(error: BaseException, wait_s: float) -> None:
        # Waited for (a deploy may run `migrate` as a job beside `run`), but the operator must hear what it is: the
        # migrate hint comes with the error, as on every retry line.
        log.warning("meeting_key_check_retry", **error_fields(error), retry_in_s=round(wait_s, 2))
        if retried is not None:
            retried(error)

    try:
        # A back-off, not synchronisation: asyncio.sleep between attempts.
        async for attempt in backoff(
            initial_s=RETRY_INITIAL_S, max_s=RETRY_MAX_S, sleep=asyncio.sleep, on_retry=retrying, retry_on=database_away
        ):
            with attempt:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    stored, problem = await _check_once(engine, key, record)
    except (OSError, SQLAlchemyError) as error:  # TimeoutError is an OSError
        raise _unreadable(error) from None
    if problem is not None:
        raise ConfigurationError(problem)
    log.info("meeting_key_checked", key_version=key.version, fingerprint=key.fingerprint)
    return key.version in stored


async def _check_once(engine: AsyncEngine, key: MeetingKey, record: bool) -> tuple[dict[int, str], str | None]:
    """The stored fingerprints (after recording this key's, when it fits and is new) and the problem, if any."""
    async with engine.connect() as conn:
        stored = {row.version: row.fingerprint for row in await conn.execute(_STORED)}
    problem = key_problem(key.version, key.fingerprint, stored)
    if problem is None and record and key.version not in stored:
        async with engine.begin() as conn:
            await conn.execute(_RECORD, {"version": key.version, "fingerprint": key.fingerprint})
            stored = {row.version: row.fingerprint for row in await conn.execute(_STORED)}
        problem = key_problem(key.version, key.fingerprint, stored)  # another instance may have won
    return stored, problem


def _unreadable(error: BaseException) -> ConfigurationError:
    if isinstance(error, TimeoutError):
        return ConfigurationError(
            f"cannot check the meeting key: the database did not answer within {CHECK_TIMEOUT_S:g} s"
        )
    if isinstance(error, DBAPIError) and sqlstate(error) == "42P01":
        return ConfigurationError("the database has no meeting_keys table: run `booking-sessions migrate`")
    return ConfigurationError(f"cannot check the meeting key in the database: {first_line(error)}")
