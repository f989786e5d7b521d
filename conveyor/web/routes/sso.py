"""Single sign-on pages: off to the OpenID provider, and back (docs/sso.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from conveyor.services import sso
from conveyor.web.pages import PageRoute, ServicesDep, error_page
from conveyor.web.routes.auth import _safe_next
from conveyor.web.session import client_address, secure_cookies, set_session_cookie

router = APIRouter(route_class=PageRoute, include_in_schema=False)
# Binds a sign-in under way to the browser that started it (against login CSRF).
STATE_COOKIE = "conveyor_sso_state"
COOKIE_PATH = "/sso"


def _refused(request: Request, exc: sso.SsoRefused) -> Response:
    response = error_page(request, exc.status, exc.message, "Sign-in refused")
    response.delete_cookie(STATE_COOKIE, path=COOKIE_PATH)
    return response


@router.get("/sso/start")
async def start(request: Request, services: ServicesDep) -> Response:
    try:
        started = await sso.begin(services, _safe_next(request.query_params.get("next")))
    except sso.SsoRefused as exc:
        return _refused(request, exc)
    response = RedirectResponse(started.url, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        started.state,
        max_age=sso.STATE_MINUTES * 60,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to us
        secure=secure_cookies(request.app.state.settings),
    )
    return response


@router.get(sso.CALLBACK_PATH)
async def callback(request: Request, services: ServicesDep) -> Response:
    query = request.query_params
    try:
        session, next_path = await sso.complete(
            services,
            state=query.get("state", ""),
            browser_state=request.cookies.get(STATE_COOKIE),
            code=query.get("code", ""),
            error=query.get("error", ""),
            ip_address=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    except sso.SsoRefused as exc:
        return _refused(request, exc)
    response = RedirectResponse(_safe_next(next_path), status_code=303)
    set_session_cookie(response, request.app.state.settings, session.token, session.expires_at)
    response.delete_cookie(STATE_COOKIE, path=COOKIE_PATH)
    return response
