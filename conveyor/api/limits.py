"""Request bodies are limited while they stream in, before anything is buffered.

A plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would read the body first):

- a ``Content-Length`` over the limit is refused at once, unread (413);
- a body without one (chunked) is counted as it arrives and refused when it passes the limit;
- the package upload, the one body allowed to be large, is read only from a caller who is
  signed in or holds a valid API key: anyone else gets 401 before a byte is read, so an
  anonymous 2 GB upload never reaches the temporary folder;
- a multipart body without a boundary is refused with 400 rather than failing deep inside.

It sits inside the session middleware, so a browser session is known here.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.deps import client_address
from conveyor.api.errors import problem
from conveyor.api.octopus.routing import api_key_of, octopus_error
from conveyor.domain.errors import Unauthenticated
from conveyor.services.access import authenticate_api_key
from conveyor.settings import Settings

UPLOAD_PATHS = frozenset({"/api/v1/packages", "/api/v1/packages/"})
# The Octopus API's package upload (conveyor/api/octopus/packages.py).
OCTOPUS_UPLOAD = re.compile(r"/api/[^/]+/packages/raw/?")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit; FastAPI and the pages turn
    it into a 413 answer like any HTTP error."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, _too_large(limit, setting))


def _too_large(limit: int, setting: str) -> str:
    return (
        f"the request body is larger than the limit of {limit} bytes; send less "
        f"(an administrator can raise CONVEYOR_{setting.upper()})"
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        upload = scope["method"] == "POST" and (
            scope["path"] in UPLOAD_PATHS or OCTOPUS_UPLOAD.fullmatch(scope["path"]) is not None
        )
        setting = "max_upload_bytes" if upload else "max_request_bytes"
        limit: int = getattr(self.settings, setting)

        refusal = await self._refusal(scope, headers, upload, limit, setting)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            # Read outside FastAPI's body parsing (a page reading its form, a streaming route).
            if started:
                raise
            await problem(413, "request_too_large", str(exc.detail))(scope, receive, send)

    async def _refusal(
        self, scope: Scope, headers: Headers, upload: bool, limit: int, setting: str
    ) -> ASGIApp | None:
        """An answer given before the body is read, or None to go on."""
        if upload:
            # Nobody learns anything, not even the limit, before showing who they are.
            unauthenticated = await _unauthenticated(scope, headers)
            if unauthenticated is not None:
                return unauthenticated
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            if not length.isdigit():
                return problem(400, "bad_request", "the Content-Length header is not a number")
            return problem(413, "request_too_large", _too_large(limit, setting))
        content_type = headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() == "multipart/form-data" and (
            "boundary=" not in content_type.lower()
        ):
            return problem(
                400,
                "bad_request",
                "the multipart/form-data body has no boundary in its Content-Type header "
                "(multipart/form-data; boundary=...); let your HTTP client build the form",
            )
        return None


async def _unauthenticated(scope: Scope, headers: Headers) -> ASGIApp | None:
    """401 for an upload from nobody: checked as the route's own dependency will check it."""
    api_key = headers.get("x-api-key")
    octopus = OCTOPUS_UPLOAD.fullmatch(scope["path"]) is not None
    if octopus:
        api_key = api_key_of(Request(scope))
    if api_key is None and scope.get("state", {}).get("session_caller") is not None:
        return None
    request = Request(scope)
    try:
        await authenticate_api_key(
            request.app.state.services,
            api_key,
            ip_address=client_address(request),
            user_agent=headers.get("user-agent"),
        )
    except Unauthenticated as exc:
        if octopus:
            return octopus_error(401, exc.message)
        return problem(401, Unauthenticated.code, exc.message)
    return None
