"""The page a sign-in leads to when an administrator set the password: choose your own first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain.errors import ConveyorError
from conveyor.services import sessions
from conveyor.services.sessions import SignInThrottled
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    redirect,
    render,
    sentence,
    web_session,
)
from conveyor.web.routes.auth import _safe_next
from conveyor.web.session import NEW_PASSWORD_PAGE

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _page(request: Request, *, status: int = 200, error: str = "") -> Response:
    return render(
        request,
        "new_password.html",
        status=status,
        title="Choose a new password",
        error=error,
        next=_safe_next(request.query_params.get("next")),
    )


@router.get(NEW_PASSWORD_PAGE)
async def new_password(request: Request, caller: PageCaller) -> Response:
    session = web_session(request)
    if session is None or not session.must_change:
        return redirect("/account")  # nothing asked: the account page changes a password
    return _page(request)


@router.post(NEW_PASSWORD_PAGE)
async def choose(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    form = await request.form()
    new = form_text(form, "new_password")
    if new != form_text(form, "confirm_password"):
        return _page(request, status=422, error="The new password and its confirmation differ.")
    session = web_session(request)
    assert session is not None
    try:
        await sessions.choose_required_password(services, caller, session.token, new)
    except SignInThrottled:
        raise
    except ConveyorError as exc:
        return _page(request, status=422, error=sentence(exc.message))
    return redirect(_safe_next(form_text(form, "next")))
