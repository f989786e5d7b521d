"""One TLS context per process for the HTTPS requests the server makes: webhooks and chat
messages, an identity provider's keys and tokens. httpx builds one from the CA bundle for every
client it makes, about 20 ms of CPU each time, and here that time is the event loop's."""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def client_context() -> ssl.SSLContext:
    """The CA bundle httpx would use (``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set), loaded
    once; a context is safe to share between connections."""
    return httpx.create_ssl_context()
