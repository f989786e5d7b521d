"""Signing in and out, and one's own account: password and API keys."""

from __future__ import annotations

import json
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from conveyor.domain.errors import ConveyorError, Unauthenticated
from conveyor.services import sessions, users
from conveyor.services.sessions import SignInThrottled
from conveyor.web.pages import (
    PRESESSION_COOKIE,
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    redirect,
    render,
    sentence,
    web_session,
)
from conveyor.web.session import (
    clear_session_cookie,
    client_address,
    secure_cookies,
    set_session_cookie,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
DONE = {
    "password": "Your password was changed. Your other sessions were signed out.",
    "revoked": "The API key was revoked: it no longer works.",
}


def _safe_next(value: str | None) -> str:
    """Only a path on this server: never another site (``//evil``, ``/\\evil``)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    return value


def _sign_in_page(
    request: Request, *, status: int = 200, error: str = "", username: str = ""
) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "sign_in.html",
        status=status,
        title="Sign in",
        form_token=token,
        error=error,
        username=username,
        next=_safe_next(request.query_params.get("next")),
    )
    # Before anyone is signed in the form token is this cookie's (a double submit), so that
    # another site cannot sign a browser in to an account of its choosing.
    response.set_cookie(
        PRESESSION_COOKIE,
        token,
        max_age=3600,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request.app.state.settings),
    )
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    if web_session(request) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    return _sign_in_page(request)


@router.post("/sign-in")
async def sign_in(request: Request, services: ServicesDep) -> Response:
    form = await request.form()
    username = form_text(form, "username").strip()
    try:
        session = await sessions.sign_in(
            services,
            username,
            form_text(form, "password"),
            client_address(request),
            request.headers.get("user-agent"),
        )
    except SignInThrottled as exc:
        response = _sign_in_page(request, status=429, error=exc.message, username=username)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except Unauthenticated as exc:
        return _sign_in_page(request, status=401, error=sentence(exc.message), username=username)
    response = RedirectResponse(_safe_next(form_text(form, "next")), status_code=303)
    set_session_cookie(response, request.app.state.settings, session.token, session.expires_at)
    response.delete_cookie(PRESESSION_COOKIE, path="/")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    session = web_session(request)
    if session is not None:
        await sessions.sign_out(services, caller, session.token)
    response = RedirectResponse("/sign-in", status_code=303)
    clear_session_cookie(response, request.app.state.settings)
    return response


async def _account(
    request: Request,
    services: ServicesDep,
    caller: PageCaller,
    *,
    status: int = 200,
    **extra: Any,
) -> Response:
    keys = await users.list_api_keys(services, caller, caller.username)
    return render(
        request,
        "account.html",
        status=status,
        title="Your account",
        keys=[k for k in keys if k.revoked_at is None],
        revoked=sum(1 for k in keys if k.revoked_at is not None),
        open_sessions=await sessions.active_sessions(services, caller),
        teams=sorted({g.team for g in caller.principal.grants}),
        done_message=DONE.get(request.query_params.get("done", ""), ""),
        **extra,
    )


# A new API key is shown once, on the page the creation redirects to (redirect after post): it
# travels there in this cookie, encrypted, bound to its owner, for this path only, briefly.
NEW_KEY_COOKIE = "conveyor_new_key"
NEW_KEY_SECONDS = 120


def _new_key_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(
        NEW_KEY_COOKIE,
        value,
        max_age=max_age,
        path="/account",
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request.app.state.settings),
    )


def _new_key(request: Request, services: ServicesDep, caller: PageCaller) -> dict[str, str]:
    sealed = request.cookies.get(NEW_KEY_COOKIE)
    if not sealed:
        return {}
    try:
        shown = json.loads(services.box.decrypt(sealed))
    except (ConveyorError, ValueError):
        return {}
    fresh = float(shown.get("until", 0)) >= services.clock().timestamp()
    if shown.get("owner") != caller.username or not fresh:
        return {}
    return {"new_key": str(shown.get("key", "")), "new_name": str(shown.get("name", ""))}


@router.get("/account")
async def account(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    shown = _new_key(request, services, caller)
    response = await _account(
        request, services, caller, new_key=shown.get("new_key"), new_name=shown.get("new_name")
    )
    if request.cookies.get(NEW_KEY_COOKIE):
        _new_key_cookie(response, request, "", 0)  # shown once: gone
    return response


@router.post("/account")  # the form's address is the page's: a refusal shows at /account
@router.post("/account/password")
async def change_password(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    form = await request.form()
    new = form_text(form, "new_password")
    if new != form_text(form, "confirm_password"):
        return await _account(
            request,
            services,
            caller,
            status=422,
            password_error="The new password and its confirmation differ.",
        )
    session = web_session(request)
    assert session is not None
    try:
        await sessions.change_own_password(
            services, caller, session.token, form_text(form, "current_password"), new
        )
    except SignInThrottled:
        raise
    except ConveyorError as exc:
        return await _account(
            request, services, caller, status=422, password_error=sentence(exc.message)
        )
    return redirect("/account", done="password")


@router.post("/account/api-keys")
async def create_api_key(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    form = await request.form()
    name = form_text(form, "name").strip() or "API key"
    api_key = await users.create_api_key(services, caller, caller.username, name)
    shown = {"key": api_key, "name": name, "owner": caller.username}
    shown["until"] = str(services.clock().timestamp() + NEW_KEY_SECONDS)
    response = redirect("/account", done="key")
    _new_key_cookie(response, request, services.box.encrypt(json.dumps(shown)), NEW_KEY_SECONDS)
    return response


@router.post("/account/api-keys/{key_id}/revoke")
async def revoke_api_key(
    key_id: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    await users.revoke_api_key(services, caller, caller.username, key_id)
    return redirect("/account", done="revoked")
