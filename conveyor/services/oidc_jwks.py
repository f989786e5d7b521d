"""An OpenID issuer's discovery document and signing keys (JWKS), fetched and cached; and a
signed JWT verified against them.

Keys are kept for ``oidc_jwks_seconds``. A token signed with a key id the cached set does not
hold fetches the set again at once (the issuer rotated its keys), at most once every
``oidc_jwks_refetch_seconds`` per issuer, so that tokens with made-up key ids cannot make the
server hammer the issuer. Only HTTPS is spoken, or HTTP to this machine (tests).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from conveyor.domain.oidc import issuer_url_problem
from conveyor.services import tls
from conveyor.services.core import Services

# Asymmetric signatures only: never "none", never HMAC with a public key as the secret.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
MAX_DOCUMENT_BYTES = 512 * 1024
MAX_TOKEN_CHARS = 16 * 1024
FETCH_SECONDS = 10.0


class TokenRejected(Exception):
    """A token (or the keys to check it) that cannot be accepted: ``reason`` for the audit log,
    ``message`` for the caller."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


@dataclass
class _Entry:
    value: Any
    fetched: float  # time.monotonic()


@dataclass
class _Cache:
    documents: dict[str, _Entry] = field(default_factory=dict)
    keys: dict[str, _Entry] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_caches: weakref.WeakKeyDictionary[Services, _Cache] = weakref.WeakKeyDictionary()


def _cache(services: Services) -> _Cache:
    cache = _caches.get(services)
    if cache is None:
        cache = _caches[services] = _Cache()
    return cache


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWS, not yet verified (to choose the keys)."""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise TokenRejected("not a JWT", "the token is not a signed JWT (header.payload.signature)")
    try:
        parts = extract_compact(token.encode())
        claims = json.loads(parts.payload)
        header = dict(parts.headers())
    except (JoseError, ValueError, UnicodeDecodeError):
        raise TokenRejected("malformed JWT", "the token is not a well-formed signed JWT") from None
    if not isinstance(claims, dict):
        raise TokenRejected("claims not an object", "the token's payload is not a JSON object")
    return header, claims


async def _get_json(url: str) -> Any:
    problem = issuer_url_problem(url)
    if problem:
        raise TokenRejected(f"refused URL {url!r}: {problem}", "the issuer's address is refused")
    try:
        async with httpx.AsyncClient(
            verify=tls.client_context(), timeout=FETCH_SECONDS, follow_redirects=False
        ) as client:
            response = await client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise TokenRejected(
            f"cannot fetch {url}: {exc.__class__.__name__}",
            "the issuer's keys could not be fetched: try again later",
        ) from None
    if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
        raise TokenRejected(
            f"{url} answered {response.status_code} ({len(response.content)} bytes)",
            "the issuer's keys could not be fetched: try again later",
        )
    try:
        return response.json()
    except ValueError:
        raise TokenRejected(
            f"{url} did not answer JSON", "the issuer's keys could not be read"
        ) from None


async def discovery(services: Services, issuer: str) -> dict[str, Any]:
    """The issuer's OpenID configuration, whose ``issuer`` must be the one asked for."""
    cache = _cache(services)
    ttl = services.settings.oidc_jwks_seconds
    entry = cache.documents.get(issuer)
    if entry is not None and time.monotonic() - entry.fetched < ttl:
        document: dict[str, Any] = entry.value
        return document
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    fetched = await _get_json(url)
    if not isinstance(fetched, dict) or fetched.get("issuer") != issuer:
        raise TokenRejected(
            f"the discovery document at {url} names another issuer",
            "the issuer's configuration does not name it: refused",
        )
    cache.documents[issuer] = _Entry(fetched, time.monotonic())
    return fetched


async def key_set(services: Services, issuer: str, kid: str | None) -> KeySet:
    """The issuer's keys, holding ``kid`` if the issuer has it (fetched again if not)."""
    cache = _cache(services)
    settings = services.settings
    async with cache.lock:
        entry = cache.keys.get(issuer)
        now = time.monotonic()
        fresh = entry is not None and now - entry.fetched < settings.oidc_jwks_seconds
        if entry is not None and fresh and (kid is None or _holds(entry.value, kid)):
            keys: KeySet = entry.value
            return keys
        if entry is not None and fresh and now - entry.fetched < settings.oidc_jwks_refetch_seconds:
            keys = entry.value  # fetched a moment ago: the key id is unknown, not rotated
            return keys
        document = await discovery(services, issuer)
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise TokenRejected("no jwks_uri in discovery", "the issuer publishes no keys")
        data = await _get_json(jwks_uri)
        try:
            keys = KeySet.import_key_set(data)
        except (JoseError, ValueError, TypeError, KeyError):
            raise TokenRejected(
                f"the key set at {jwks_uri} cannot be read", "the issuer's keys could not be read"
            ) from None
        cache.keys[issuer] = _Entry(keys, time.monotonic())
        return keys


def _holds(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


async def verify(services: Services, issuer: str, token: str) -> dict[str, Any]:
    """The token's claims once its signature verifies with one of the issuer's keys."""
    header, _ = unverified(token)
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise TokenRejected(
            f"algorithm {alg!r} not accepted", "the token's signing algorithm is not accepted"
        )
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    keys = await key_set(services, issuer, kid)
    if kid is not None and not _holds(keys, kid):
        raise TokenRejected(
            f"unknown key id {kid[:100]!r}",
            "the token is signed with a key the issuer does not publish",
        )
    try:
        return dict(jwt.decode(token, keys, algorithms=ALGORITHMS).claims)
    except JoseError as exc:
        raise TokenRejected(
            f"signature does not verify ({exc.error})", "the token's signature does not verify"
        ) from None
