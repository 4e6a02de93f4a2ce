"""TLS and SASL for every Kafka client the service creates: one mapping from Settings to aiokafka's options."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from booking_sessions.settings import Settings
from models.errors import ConfigurationError


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer, AIOKafkaProducer and AIOKafkaAdminClient alike: the security
    protocol, an SSL context (SSL, SASL_SSL), the SASL credentials (SASL_*), and the request deadlines.

    Settings already refused inconsistent combinations; what is left to fail here is the content of the files:
    raises ConfigurationError (``ssl_context``) when they cannot be loaded.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol, **kafka_deadlines(settings)}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.kafka_sasl_password is not None  # the settings validator requires it with SASL
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


# Below the idle timeout of common NATs and load balancers (350 s on some clouds), so the client closes an idle
# connection itself before a middlebox forgets it silently (aiokafka's default is 540 s).
CONNECTIONS_MAX_IDLE_MS = 300_000


def kafka_deadlines(settings: Settings) -> dict[str, Any]:
    """The bound on every broker request (a silent connection fails it and is replaced) for every client kind:
    ``request_timeout_ms`` from BOOKING_KAFKA_REQUEST_TIMEOUT_S, and ``connections_max_idle_ms`` (CONTRACT, "Process
    and configuration": every wait on the broker has a deadline)."""
    return {
        "request_timeout_ms": int(settings.kafka_request_timeout_s * 1000),
        "connections_max_idle_ms": CONNECTIONS_MAX_IDLE_MS,
    }


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the broker (hostname included) against the CA file, or the system's CAs when none is given; presents
    the client certificate when one is configured. Raises ConfigurationError naming the files (never the password)
    when one cannot be loaded."""
    password = settings.kafka_ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            # Always a callable: without one, OpenSSL would prompt on the terminal for an encrypted key.
            password=lambda: password.get_secret_value() if password is not None else "",
        )
        return context
    except (ssl.SSLError, OSError, ValueError) as error:
        files = ", ".join(
            f"{name}={path}"
            for name, path in (
                ("BOOKING_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
                ("BOOKING_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
                ("BOOKING_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
            )
            if path is not None
        )
        hint = " (an encrypted key needs BOOKING_KAFKA_SSL_KEY_PASSWORD)" if settings.kafka_ssl_keyfile else ""
        reason = getattr(error, "reason", None) or type(error).__name__
        raise ConfigurationError(f"cannot load the Kafka TLS files {files or '(system CAs)'}: {reason}{hint}") from None
