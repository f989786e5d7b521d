"""One middleware in front of everything: security headers on every response, and no NUL.

Every response, API JSON, problem+json, a 404 for an unknown route, a 405, a 413, a static
file, carries the headers the pages set (``conveyor.web.pages.SECURITY_HEADERS``).

A NUL character cannot be stored (PostgreSQL refuses it in text) and never belongs in a name,
a version or a query, so a request that carries one, in its path, query string, headers or
the strings of a JSON or form body, is refused with 400 before it reaches a route, instead of
failing deep in the database with a 500. Lone UTF-16 surrogates in JSON (``"\\ud800"``), which
no database can encode either, are refused the same way. A plain ASGI middleware (not
``BaseHTTPMiddleware``) so that streamed responses and uploads pass through untouched.
"""

from __future__ import annotations

import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.errors import problem
from conveyor.web.pages import SECURITY_HEADERS

# Static files may be cached; everything else is no-store (SECURITY_HEADERS says so).
STATIC_PREFIX = "/static/"
# \u0000 and \uD800-\uDFFF escapes not themselves escaped (an even run of backslashes before).
_JSON_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_LOW_SURROGATE = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_FORM_NUL = re.compile(rb"%00")


class HardeningMiddleware:
    def __init__(self, app: ASGIApp, *, max_scanned_body: int) -> None:
        self.app = app
        # Bodies longer than this are not scanned: the body limit refuses them anyway.
        self.max_scanned_body = max_scanned_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(scope, send)
        where = _nul_in_head(scope)
        if where is None and _scanned_kind(scope) and not self._declared_too_large(scope):
            body, receive = await self._buffer(receive)
            if body is not None:
                where = _bad_body(_scanned_kind(scope), body)
        if where is not None:
            response = problem(
                400,
                "invalid_character",
                f"{where} contains a NUL character (or an unpaired surrogate), which no value "
                "may hold: remove it and send the request again",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _declared_too_large(self, scope: Scope) -> bool:
        """A body its Content-Length says is over the limit is left unread for the body limit
        to refuse."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                digits = value.isdigit() and len(value) <= 18
                return not digits or int(value) > self.max_scanned_body
        return False

    async def _buffer(self, receive: Receive) -> tuple[bytes | None, Receive]:
        """The whole body (``None`` if longer than the scan limit) and a ``receive`` that
        replays it to the application."""
        chunks: list[Message] = []
        size = 0
        more = True
        while more and size <= self.max_scanned_body:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
        complete = not more and size <= self.max_scanned_body

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        body = b"".join(m.get("body", b"") for m in chunks) if complete else None
        return body, replay


def _with_security_headers(scope: Scope, send: Send) -> Send:
    static = scope.get("path", "").startswith(STATIC_PREFIX)

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                if static and name == "Cache-Control":
                    continue
                headers.setdefault(name, value)
        await send(message)

    return sender


def _nul_in_head(scope: Scope) -> str | None:
    """Which part of the request line or headers holds a NUL, if one does."""
    if "\x00" in scope.get("path", ""):
        return "the address"
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or _FORM_NUL.search(query):
        return "the query string"
    for name, value in scope.get("headers", ()):
        if b"\x00" in value:
            return f"the header {name.decode('latin-1')}"
    return None


def _scanned_kind(scope: Scope) -> str | None:
    if scope.get("method") in {"GET", "HEAD", "OPTIONS"}:
        return None
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media == b"application/json" or media.endswith(b"+json"):
                return "json"
            if media == b"application/x-www-form-urlencoded":
                return "form"
    return None


def _bad_body(kind: str | None, body: bytes) -> str | None:
    if kind == "form":
        return "the form" if b"\x00" in body or _FORM_NUL.search(body) else None
    return "the JSON body" if _json_has_bad_escape(body) else None


def _json_has_bad_escape(body: bytes) -> bool:
    """Whether a JSON text has a ``\\u0000`` escape or a surrogate escape without its pair
    (a raw NUL is already invalid JSON, refused by the parser with 422)."""
    paired_low_at = -1
    for match in _JSON_ESCAPE.finditer(body):
        code = int(match[1], 16)
        escape_at = match.end() - 6
        if code == 0:
            return True
        if code >= 0xDC00:  # a low surrogate: fine only right after its high one
            if escape_at != paired_low_at:
                return True
        elif _LOW_SURROGATE.match(body, match.end()):
            paired_low_at = match.end()
        else:
            return True
    return False
