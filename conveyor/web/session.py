"""The session cookie: who is signed in, for the pages and for the API used from a page.

A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``) so that streamed responses,
the task log's server-sent events among them, pass through untouched.

The API honours the session too (``conveyor.api.deps.get_caller``), but a browser sends cookies
with any request, also one another site makes it send: an API call that changes something on
the strength of the cookie alone must carry the session's form token in ``X-CSRF-Token``.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.api.deps import client_address as client_address
from conveyor.api.errors import problem
from conveyor.services import sessions
from conveyor.settings import Settings

COOKIE = "conveyor_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
API_PREFIX = "/api/"


def secure_cookies(settings: Settings) -> bool:
    return (settings.public_url or "").lower().startswith("https://")


def set_session_cookie(
    response: Response, settings: Settings, token: str, expires: datetime
) -> None:
    response.set_cookie(
        COOKIE,
        token,
        expires=expires,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(settings),
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(settings)
    )


class SessionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = request.cookies.get(COOKIE)
        # An API key decides on its own; the cookie is not even looked up.
        if token and "x-api-key" not in request.headers:
            session = await sessions.resume(
                request.app.state.services,
                token,
                ip_address=client_address(request),
                user_agent=request.headers.get("user-agent"),
            )
            if session is not None:
                state = scope.setdefault("state", {})
                state["web_session"] = session
                state["session_caller"] = session.caller
                if (
                    scope["path"].startswith(API_PREFIX)
                    and request.method not in SAFE_METHODS
                    and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), session.csrf)
                ):
                    refused = problem(
                        403,
                        "csrf_token_missing",
                        "a change made with the browser session needs the page's form token "
                        "in the X-CSRF-Token header (or use an API key)",
                    )
                    await refused(scope, receive, send)
                    return
                if session.must_change and scope["path"] not in NEW_PASSWORD_PATHS:
                    await _ask_new_password(request)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


# Until someone whose password an administrator set chooses their own, these alone answer.
NEW_PASSWORD_PAGE = "/account/new-password"
NEW_PASSWORD_PATHS = frozenset({NEW_PASSWORD_PAGE, "/sign-out", "/favicon.ico"})


def _ask_new_password(request: Request) -> Response:
    if request.url.path.startswith(API_PREFIX):
        return problem(
            403,
            "password_change_required",
            f"choose a new password first, at {NEW_PASSWORD_PAGE}",
        )
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        back = "/"
    return RedirectResponse(f"{NEW_PASSWORD_PAGE}?{urlencode({'next': back})}", status_code=303)
