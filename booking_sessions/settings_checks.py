"""Pure: the checks behind ``booking_sessions.settings.Settings``, each naming the variable and the rule, never the
value (a refused secret must not reach a log). Anything an operator can fix is refused at start, one line and exit
code 2, before any connection (README, "Operations")."""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError as UrlError

from booking_sessions.ops.arguments import ArgumentError, parse_duration

if TYPE_CHECKING:
    from booking_sessions.settings import Settings

# Upper bounds of the numeric settings: far above any sane value, below what asyncio, threading, PostgreSQL's
# bigint and interval types hold (``1e300`` seconds or ``10**20`` rows would pass a lower bound and then crash).
MAX_SECONDS = 7 * 24 * 3600.0  # any one timeout or interval: a week
MAX_ROWS = 1_000_000  # rows or records per batch
MAX_BYTES = 100 * 1024 * 1024  # a record's size bounds: 100 MiB, far above a broker's default 1 MiB
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def blank_is_unset(value: object) -> object:
    """An empty (or blank) value counts as not set: ``BOOKING_DATABASE_URL=`` in an env file means no URL."""
    return None if isinstance(value, str | SecretStr) and not _plain(value).strip() else value


def _plain(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def bootstrap_servers(value: str | None) -> str | None:
    """``host:port[,host:port]`` with ports 1 to 65535 (IPv6 hosts in brackets); raises ValueError naming the
    entry that is not, so a typo fails at start instead of as a traceback deep in the Kafka client."""
    if value is None:
        return None
    entries = [entry.strip() for entry in value.split(",")]
    for entry in entries:
        match = _HOST_PORT.fullmatch(entry)
        if match is None:
            raise ValueError(f"{entry!r} is not host:port (e.g. 127.0.0.1:9092; several separated by commas)")
        if not 1 <= int(match.group(1)) <= 65535:
            raise ValueError(f"{entry!r}: the port must be 1 to 65535")
    return ",".join(entries)


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name(value: str) -> str:
    """A name Kafka accepts for a topic (1 to 249 of ``[A-Za-z0-9._-]``, not ``.`` or ``..``); raises ValueError."""
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise ValueError("must be a Kafka topic name: 1 to 249 characters of A-Z a-z 0-9 . _ -")
    return value


def topics_problems(s: Settings) -> list[str]:
    """The three topics must differ: the DLQ as the input would feed every dead letter back in, without end."""
    names = {"BOOKING_INPUT_TOPIC": s.input_topic, "BOOKING_OUTPUT_TOPIC": s.output_topic}
    names["BOOKING_DLQ_TOPIC"] = s.dlq_topic
    if len(set(names.values())) == len(names):
        return []
    return [f"{', '.join(names)} must be three different topics"]


def log_level(value: str | None) -> str | None:
    """One of LOG_LEVELS, any case, as upper case; raises ValueError for anything else."""
    if value is None:
        return None
    level = value.strip().upper()
    if level not in LOG_LEVELS or not isinstance(logging.getLevelNamesMapping().get(level), int):
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


DEFAULT_MEETING_BASE_URL = "https://meet.jit.si"


def blank_is_default_meeting_base_url(value: object) -> object:
    """An empty BOOKING_MEETING_BASE_URL counts as not set: the default."""
    return DEFAULT_MEETING_BASE_URL if isinstance(value, str) and not value.strip() else value


def meeting_base_url(value: str) -> str:
    """An http(s) URL with a host and, if given, a port 1 to 65535. Raises ValueError."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://meet.jit.si")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port must be 1 to 65535")
    return value.strip()


def retention(value: object) -> object:
    """``30d``, ``12h``, ``2w`` (the operators' duration syntax, at most a century) or ``off``; a timedelta as it
    is. ``0`` and ``none`` are refused: one reads as "keep nothing" as well as "keep everything"."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "off":
            return None
        if word in ("0", "none"):
            raise ValueError(f"{value!r} is ambiguous: write off to keep rows for ever, or a duration such as 30d")
        try:
            return parse_duration(value)
        except ArgumentError as error:
            raise ValueError(str(error)) from None
    return value


def at_least_an_hour(value: timedelta | None) -> timedelta | None:
    """Raises ValueError below one hour."""
    # The inbox is the duplicate check of recent redeliveries: a rebalance's redeliveries are seconds old.
    if value is not None and value < timedelta(hours=1):
        raise ValueError("must be at least 1h (or off)")
    return value


def database_url_problems(url: SecretStr | None) -> list[str]:
    """What is wrong with BOOKING_DATABASE_URL, never quoting it (it holds the password)."""
    if url is None:
        return []
    try:
        parsed = make_url(url.get_secret_value())
        port = parsed.port  # sqlalchemy reads it with int(): 'h:abc' raises ValueError
    except (UrlError, ValueError):
        # Not the parser's message: it quotes the whole URL, password included.
        return ["BOOKING_DATABASE_URL is not a URL (expected postgresql+asyncpg://user:pw@host:5432/db)"]
    if parsed.drivername != "postgresql+asyncpg":
        return [f"BOOKING_DATABASE_URL must start with postgresql+asyncpg:// (not {parsed.drivername}://)"]
    if port is not None and not 1 <= port <= 65535:
        return [f"BOOKING_DATABASE_URL: the port must be 1 to 65535, not {port}"]
    if any(c.isspace() or not c.isprintable() for c in url.get_secret_value()):
        # A trailing newline (a secret file, a heredoc) went into the database name unnoticed (a newcomer's find).
        return ["BOOKING_DATABASE_URL holds whitespace or a control character (a trailing newline?)"]
    if "@" in (parsed.host or "") or "@" in (parsed.database or ""):
        # The parser split at the first "@" of a password such as "S3c@r3t": the rest of it became the host, which
        # a masked URL then showed (a newcomer's find). Said without the URL.
        return ["BOOKING_DATABASE_URL: the user or password holds an '@': percent-encode it as %40"]
    return [problem for name, value in sorted(parsed.query.items()) if (problem := _query_problem(name, value))]


# The URL's query parameters that reach asyncpg.connect() as they are (SQLAlchemy's asyncpg dialect passes each as a
# keyword argument), each with the values asyncpg takes (None: any text); the service's own settings cover the rest.
# Any other parameter ended every command in a TypeError traceback (libpq's ``?sslmode=require`` pasted from another
# tool), and a value asyncpg refuses left `run` retrying the connection for ever (``?ssl=bogus``): newcomers' finds.
_URL_PARAMETERS: dict[str, frozenset[str] | None] = {
    "host": None,
    "ssl": frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}),
    "target_session_attrs": frozenset({"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}),
    "krbsrvname": None,
    "gsslib": frozenset({"gssapi", "sspi"}),
    "passfile": None,
}
_URL_PARAMETER_SETTINGS = {
    "sslmode": "BOOKING_DATABASE_SSL_MODE",
    "sslrootcert": "BOOKING_DATABASE_SSL_ROOTCERT",
    "connect_timeout": "BOOKING_DATABASE_CONNECT_TIMEOUT_S",
}


def _query_problem(name: str, value: str | tuple[str, ...]) -> str | None:
    """What is wrong with one query parameter of the URL (never its value: it may be a path), or None."""
    if name not in _URL_PARAMETERS:
        setting = _URL_PARAMETER_SETTINGS.get(name)
        instead = f"set {setting} instead" if setting else f"the URL may carry only {', '.join(_URL_PARAMETERS)}"
        return f"BOOKING_DATABASE_URL: ?{name}= is not read here (asyncpg would refuse it): {instead}"
    if not isinstance(value, str):
        return f"BOOKING_DATABASE_URL: ?{name}= is given {len(value)} times: give it once"
    allowed = _URL_PARAMETERS[name]
    if allowed is not None and value not in allowed:
        return f"BOOKING_DATABASE_URL: ?{name}= must be one of {', '.join(sorted(allowed))}"
    if not value:
        return f"BOOKING_DATABASE_URL: ?{name}= is empty"
    return None


def kafka_security_problems(s: Settings) -> list[str]:
    """TLS and SASL settings that contradict each other or name files that are not there."""
    protocol = s.kafka_security_protocol
    tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
    problems: list[str] = []
    here = f"BOOKING_KAFKA_SECURITY_PROTOCOL={protocol}"
    if protocol != "PLAINTEXT" and s.kafka_bootstrap is None:
        problems.append(f"{here} needs BOOKING_KAFKA_BOOTSTRAP (the embedded broker speaks PLAINTEXT only)")
    files = {
        "BOOKING_KAFKA_SSL_CAFILE": s.kafka_ssl_cafile,
        "BOOKING_KAFKA_SSL_CERTFILE": s.kafka_ssl_certfile,
        "BOOKING_KAFKA_SSL_KEYFILE": s.kafka_ssl_keyfile,
    }
    tls_given = [name for name, path in files.items() if path is not None]
    if s.kafka_ssl_key_password is not None:
        tls_given.append("BOOKING_KAFKA_SSL_KEY_PASSWORD")
    if tls_given and not tls:
        problems.append(f"{', '.join(tls_given)} set, but {here} does not use TLS (SSL or SASL_SSL)")
    if (s.kafka_ssl_certfile is None) != (s.kafka_ssl_keyfile is None):
        problems.append("BOOKING_KAFKA_SSL_CERTFILE and BOOKING_KAFKA_SSL_KEYFILE go together (mutual TLS)")
    if s.kafka_ssl_key_password is not None and s.kafka_ssl_keyfile is None:
        problems.append("BOOKING_KAFKA_SSL_KEY_PASSWORD set without BOOKING_KAFKA_SSL_KEYFILE")
    for name, path in files.items():
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            problems.append(f"{name}={path}: no such readable file")
    sasl_given = {
        "BOOKING_KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism,
        "BOOKING_KAFKA_SASL_USERNAME": s.kafka_sasl_username,
        "BOOKING_KAFKA_SASL_PASSWORD": s.kafka_sasl_password,
    }
    if sasl:
        missing = [name for name, value in sasl_given.items() if not value]
        if missing:
            problems.append(f"{here} needs {', '.join(missing)}")
    elif given := [name for name, value in sasl_given.items() if value is not None]:
        problems.append(f"{', '.join(given)} set, but {here} does not use SASL (SASL_PLAINTEXT or SASL_SSL)")
    return problems


def transport_problems(s: Settings) -> list[str]:
    """A password readable on the wire, and PostgreSQL TLS settings that would not do what they say."""
    problems: list[str] = []
    if (
        s.kafka_security_protocol == "SASL_PLAINTEXT"
        and s.kafka_sasl_mechanism == "PLAIN"
        and not s.kafka_allow_cleartext_password
    ):
        problems.append(
            "BOOKING_KAFKA_SASL_MECHANISM=PLAIN over BOOKING_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the "
            "password in cleartext: use SASL_SSL (or SCRAM), or set BOOKING_KAFKA_ALLOW_CLEARTEXT_PASSWORD=true"
        )
    rootcert = s.database_ssl_rootcert
    if rootcert is not None:
        if s.database_ssl_mode not in ("verify-ca", "verify-full"):
            problems.append("BOOKING_DATABASE_SSL_ROOTCERT set, but BOOKING_DATABASE_SSL_MODE is not verify-ca/full")
        if not (rootcert.is_file() and os.access(rootcert, os.R_OK)):
            problems.append(f"BOOKING_DATABASE_SSL_ROOTCERT={rootcert}: no such readable file")
    if s.database_ssl_mode not in (None, "disable") and s.database_url is None:
        problems.append("BOOKING_DATABASE_SSL_MODE needs BOOKING_DATABASE_URL (the embedded PostgreSQL has no TLS)")
    if s.database_ssl_mode is not None and (given := url_tls_parameters(s.database_url)):
        problems.append(f"BOOKING_DATABASE_SSL_MODE and ?{given[0]}= in BOOKING_DATABASE_URL: choose one")
    return problems


def url_tls_parameters(url: SecretStr | None) -> list[str]:
    """The query parameter of the URL that would also set TLS: ``ssl`` (``sslmode`` is refused on its own)."""
    if url is None or database_url_problems(url):
        return []
    return ["ssl"] if "ssl" in make_url(url.get_secret_value()).query else []
