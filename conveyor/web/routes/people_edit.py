"""Administering people in the browser: add a person or service account, set a password,
deactivate and reactivate, team membership. Each form posts, the service decides (UserEdit,
TeamEdit; refused and audited as through the API), and the browser is sent back to the page.

A generated password or a new API key is shown once, on the page the change redirects to: it
travels there in a short-lived encrypted cookie bound to the administrator who made it."""

from __future__ import annotations

import json
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain.documents import Team, key
from conveyor.domain.errors import Conflict, ConveyorError, ValidationFailed
from conveyor.domain.model import Model
from conveyor.services import users
from conveyor.services.core import Caller, Services
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    redirect,
    sentence,
)
from conveyor.web.session import secure_cookies

router = APIRouter(route_class=PageRoute, include_in_schema=False)
SHOWN_COOKIE = "conveyor_shown_once"
SHOWN_SECONDS = 120
SHOWN_PATH = "/people/users"


def person_url(username: str) -> str:
    return f"/people/users/{quote(username, safe='')}"


def _shown_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(
        SHOWN_COOKIE,
        value,
        max_age=max_age,
        path=SHOWN_PATH,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request.app.state.settings),
    )


def show_once(
    response: Response, request: Request, services: Services, caller: Caller, **shown: str
) -> Response:
    """Seal ``shown`` (a secret and what it is) for the next page this administrator opens."""
    shown = {**shown, "owner": caller.username}
    shown["until"] = str(services.clock().timestamp() + SHOWN_SECONDS)
    _shown_cookie(response, request, services.box.encrypt(json.dumps(shown)), SHOWN_SECONDS)
    return response


def take_shown(
    request: Request, services: Services, caller: Caller, subject: str
) -> dict[str, str]:
    """What ``show_once`` sealed about ``subject`` for this administrator, if still fresh."""
    sealed = request.cookies.get(SHOWN_COOKIE)
    if not sealed:
        return {}
    try:
        shown = json.loads(services.box.decrypt(sealed))
    except (ConveyorError, ValueError):
        return {}
    fresh = float(shown.get("until", 0)) >= services.clock().timestamp()
    mine = shown.get("owner") == caller.username and key(shown.get("subject", "")) == key(subject)
    return {k: str(v) for k, v in shown.items()} if fresh and mine else {}


def forget_shown(response: Response, request: Request) -> None:
    if request.cookies.get(SHOWN_COOKIE):
        _shown_cookie(response, request, "", 0)  # shown once: gone


async def _secret_for(
    services: Services, caller: Caller, username: str, service_account: bool, must_change: bool
) -> dict[str, str]:
    if service_account:
        api_key = await users.create_api_key(services, caller, username, "created in the browser")
        return {"secret": api_key, "what": "key"}
    password = await users.reset_password(services, caller, username, must_change=must_change)
    return {"secret": password, "what": "password", "must_change": "1" if must_change else ""}


@router.post("/people/users")
async def add_person(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    from conveyor.web.routes.people import people_page  # the page this form is on

    form = await request.form()
    username = form_text(form, "username").strip()
    service_account = form_text(form, "service_account") == "1"
    must_change = form_text(form, "must_change") == "1"
    display_name = form_text(form, "display_name").strip()
    email = form_text(form, "email").strip()
    given = {
        "username": username,
        "display_name": display_name,
        "email": email,
        "service_account": service_account,
        "must_change": must_change,
    }
    try:
        await users.add_user(
            services,
            caller,
            username,
            email=email,
            display_name=display_name,
            service_account=service_account,
        )
    except (ValidationFailed, Conflict) as exc:
        said = [sentence(p.message) for p in getattr(exc, "problems", [])] or [
            sentence(exc.message)
        ]
        status = 409 if isinstance(exc, Conflict) else 422
        return await people_page(
            request, services, caller, status=status, given=given, problems=said
        )
    shown = await _secret_for(services, caller, username, service_account, must_change)
    response = redirect(person_url(username), done="created")
    return show_once(response, request, services, caller, subject=username, **shown)


@router.post("/people/users/{username}/password")
async def set_password(
    username: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    must_change = form_text(form, "must_change") == "1"
    password = await users.reset_password(services, caller, username, must_change=must_change)
    response = redirect(person_url(username), done="password")
    shown = {"secret": password, "what": "password", "must_change": "1" if must_change else ""}
    return show_once(response, request, services, caller, subject=username, **shown)


@router.post("/people/users/{username}/api-keys")
async def add_key(
    username: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    name = form_text(form, "name").strip() or "API key"
    api_key = await users.create_api_key(services, caller, username, name)
    response = redirect(person_url(username), done="key")
    return show_once(
        response, request, services, caller, subject=username, secret=api_key, what="key"
    )


@router.post("/people/users/{username}/active")
async def set_active(
    username: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    active = form_text(form, "active") == "1"
    await users.set_active(services, caller, username, active)
    return redirect(person_url(username), done="reactivated" if active else "deactivated")


@router.post("/people/users/{username}/teams")
async def membership(
    username: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    """Add to a team or remove from one, from the person's page."""
    form = await request.form()
    team = form_text(form, "team")
    member = form_text(form, "member") == "1"

    def change(model: Model, found: Team) -> Team:
        return users.with_member(model, found, username, member)

    await users.change_team(services, caller, team, change)
    return redirect(person_url(username), done="joined" if member else "left")
