"""TLS to PostgreSQL for every engine the service builds (service, replay, operators' commands, migrate).

libpq's modes, mapped onto one ``ssl.SSLContext`` handed to asyncpg: ``verify-full`` checks the chain against
BOOKING_DATABASE_SSL_ROOTCERT (or the system's CAs) and the certificate's name against the URL's host;
``verify-ca`` the chain only; ``require`` encrypts without checking who answers; ``disable`` never uses TLS.
Unset, nothing is passed and asyncpg keeps its default (``prefer``: TLS if offered, unverified), or what the URL's
``?ssl=`` says.
"""

from __future__ import annotations

import ssl
from typing import Any

from booking_sessions.settings import Settings
from models.errors import ConfigurationError


def database_connect_args(settings: Settings) -> dict[str, Any]:
    """``connect_args`` for ``create_async_engine``: ``{}`` or ``{"ssl": False | SSLContext}``.

    Raises ConfigurationError when the root certificate file cannot be loaded (not PEM, unreadable).
    """
    mode = settings.database_ssl_mode
    if mode is None:
        return {}
    if mode == "disable":
        return {"ssl": False}
    if mode == "require":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        rootcert = settings.database_ssl_rootcert
        try:
            # With a cafile, only that CA may vouch for the server (the system's CAs are not loaded).
            context = ssl.create_default_context(cafile=None if rootcert is None else str(rootcert))
        except (ssl.SSLError, OSError) as error:
            reason = getattr(error, "reason", None) or type(error).__name__
            raise ConfigurationError(f"cannot load BOOKING_DATABASE_SSL_ROOTCERT={rootcert}: {reason}") from None
        context.check_hostname = mode == "verify-full"
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return {"ssl": context}
