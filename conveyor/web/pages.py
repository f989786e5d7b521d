"""What every page shares: templates, the signed-in person, form tokens, and errors as pages.

Web routes use ``PageRoute``: it checks the form token of every POST before the page sees the
form, turns a domain error into a page that says what went wrong (with the error's status),
sends the browser to the sign-in page when nobody is signed in, and adds the security headers.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.api.errors import STATUS, TITLES
from conveyor.domain import permissions as perms
from conveyor.domain.documents import slugify
from conveyor.domain.errors import ConveyorError, PermissionDenied
from conveyor.services.core import Caller, Services
from conveyor.services.deployments import deploy_description
from conveyor.services.sessions import Session, SignInThrottled
from conveyor.services.waiting import waiting_count

log = logging.getLogger("conveyor.web")
HERE = Path(__file__).parent
STATIC = HERE / "static"
PRESESSION_COOKIE = "conveyor_form"
# Scripts, styles and images come from this server only; no inline script or style runs.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATE_LABELS = {
    "queued": "Queued",
    "executing": "Running",
    "waiting": "Waiting",
    "success": "Success",
    "failed": "Failed",
    "canceled": "Canceled",
    "timed_out": "Timed out",
    "pending": "Pending",
    "skipped": "Skipped",
    "running": "Running",
    "answered": "Answered",
}


def when(value: str | datetime | None) -> str:
    """``2026-11-27T23:44:38+00:00`` -> ``2026-11-27 23:44 UTC``."""
    moment = _moment(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def ago(value: str | datetime | None, now: datetime | None = None) -> str:
    """How long before ``now`` (the current time): "3 minutes ago"."""
    moment = _moment(value)
    if moment is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return "just now"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return when(moment)  # pragma: no cover


def when_seconds(value: str | datetime | None) -> str:
    """``2026-11-27T23:44:38+00:00`` -> ``2026-11-27 23:44:38 UTC``."""
    moment = _moment(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def duration(seconds: int | None) -> str:
    """``75`` -> ``1m 15s``; ``3725`` -> ``1h 2m``; nothing for None."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def _moment(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def state_label(state: str | None) -> str:
    return STATE_LABELS.get(state or "", (state or "").replace("_", " ").capitalize())


def deploy_title(project: str, version: str, environment: str) -> str:
    """ "Deploy Web 1.2 to Test", and "Deploy All 1.0.1 to Staging" for a project whose name
    already says "Deploy" (never "Deploy Deploy All")."""
    return deploy_description(f"{project} {version}", environment)


def step_look(step: dict[str, Any]) -> tuple[str, str]:
    """A task step's badge: (state for its colour, label). A failure a person chose to ignore
    (guided failure) ends the step as a success, but must not look like one."""
    reason = step.get("reason") or ""
    if step.get("state") == "success" and reason.startswith("failure") and " ignored by " in reason:
        return "ignored", "Failed, ignored"
    return str(step.get("state") or ""), state_label(step.get("state"))


def short_id(ident: str | None) -> str:
    """``ServerTasks-12`` -> ``12`` (the short form used in page addresses)."""
    return (ident or "").rsplit("-", 1)[-1]


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters.update(
    when=when,
    when_seconds=when_seconds,
    duration=duration,
    ago=ago,
    state=state_label,
    slug=slugify,
    num=short_id,
    q=lambda value: quote(str(value), safe=""),
)
TEMPLATES.globals["deploy_title"] = deploy_title
TEMPLATES.filters["step_look"] = step_look


def web_session(request: Request) -> Session | None:
    session: Session | None = getattr(request.state, "web_session", None)
    return session


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


class SignInRequired(Exception):
    def __init__(self, fragment: bool = False) -> None:
        super().__init__("sign in first")
        self.fragment = fragment


async def page_caller(request: Request) -> Caller:
    session = web_session(request)
    if session is None:
        raise SignInRequired()
    if request.method == "GET":
        await _count_waiting(request, session.caller)
    return session.caller


async def _count_waiting(request: Request, caller: Caller) -> None:
    """The navigation's count of what waits for the person (services/waiting.py), for the
    page about to be rendered; a page still renders, without the count, if it cannot be read."""
    try:
        request.state.waiting_count = await waiting_count(services_of(request), caller)
    except ConveyorError:
        log.warning("the waiting count for %s could not be read", caller.username, exc_info=True)


async def fragment_caller(request: Request) -> Caller:
    """For what scripts fetch: a plain 401, never the sign-in page in place of a fragment."""
    session = web_session(request)
    if session is None:
        raise SignInRequired(fragment=True)
    return session.caller


PageCaller = Annotated[Caller, Depends(page_caller)]
FragmentCaller = Annotated[Caller, Depends(fragment_caller)]
ServicesDep = Annotated[Services, Depends(services_of)]


def may(caller: Caller, permission: perms.Permission, **where: Any) -> bool:
    return perms.authorize(caller.principal, permission, **where).allowed


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    session = web_session(request)
    caller = session.caller if session else None
    page = TEMPLATES.get_template(template).render(
        request=request,
        me=caller,
        csrf=session.csrf if session else "",
        path=request.url.path,
        nav=_nav(caller),
        waiting_count=getattr(request.state, "waiting_count", None),
        **context,
    )
    return HTMLResponse(page, status_code=status, headers=headers)


def _nav(caller: Caller | None) -> dict[str, bool]:
    if caller is None:
        return {}
    P = perms.Permission
    return {
        "audit": may(caller, P.EventView),
        "people": may(caller, P.UserView) or may(caller, P.TeamView),
        "nodes": may(caller, P.AdministerSystem),
        "targets": may(caller, P.MachineView),
        "environments": may(caller, P.EnvironmentView),
        "lifecycles": may(caller, P.LifecycleView),
        "packages": may(caller, P.FeedView),
    }


def error_page(request: Request, status: int, message: str, title: str | None = None) -> Response:
    return render(
        request,
        "error.html",
        status=status,
        title=title or TITLES.get(status, "Something went wrong"),
        message=message,
    )


# Words the services' messages start with. A message may also start with a username ("dev may
# not …"), which must keep its case, so only these are capitalised.
_LEADING_WORDS = (
    "the a an this that these there only you your it its no not nothing cannot must too "
    "project projects user users release releases environment environments package packages "
    "archive task tasks interruption lifecycle team teams role format limit step steps "
    "process variable variables api key sensitive creating changing deleting choose"
)
_LEADING = frozenset(_LEADING_WORDS.split())


# A configuration change as the services name it in a refusal ('~ project "Web" process'),
# at the start of the message or of one of its parts.
_CHANGE = re.compile(
    r'(?P<lead>^|: |; )(?P<sign>[+~-]) (?P<label>[a-z][a-z ]*?) "(?P<name>[^"]*)"'
    r"(?: (?P<aspect>process|variables))?"
)
_VERBS = {"+": "creating", "~": "changing", "-": "deleting"}


def _change_words(found: re.Match[str]) -> str:
    verb = _VERBS[found["sign"]]
    what = f'{found["label"]} "{found["name"]}"'
    if found["aspect"]:
        what = f"the {found['aspect']} of {what}"
    return f"{found['lead']}{verb} {what}"


def sentence(text: str) -> str:
    """Messages from the services are clauses; a page shows them as sentences."""
    text = _CHANGE.sub(_change_words, text.strip())
    if not text:
        return text
    if text.split(maxsplit=1)[0].strip(",.:;").lower() in _LEADING:
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


TEMPLATES.filters["sentence"] = sentence


def redirect(url: str, **params: Any) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "", [])}, doseq=True)
    return RedirectResponse(f"{url}?{query}" if query else url, status_code=303)


def _sign_in_url(request: Request) -> str:
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        back = request.headers.get("referer", "/") or "/"
    return "/sign-in?" + urlencode({"next": back})


async def _check_form_token(request: Request) -> None:
    """Every POST carries the form token of the session (or, before signing in, of the
    sign-in page's cookie); a form from another site has neither."""
    # Parsed here first (and cached for the route), with the field size of the settings.
    limit = request.app.state.settings.max_form_field_bytes
    form = await request.form(max_part_size=limit)
    given = form.get("csrf")
    session = web_session(request)
    expected = session.csrf if session else request.cookies.get(PRESESSION_COOKIE)
    if not isinstance(given, str) or not expected or not hmac.compare_digest(given, expected):
        raise PermissionDenied(
            "this form has expired or did not come from this Conveyor server: go back, "
            "reload the page and try again"
        )


class PageRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                if request.method == "POST":
                    await _check_form_token(request)
                response = await handler(request)
            except SignInRequired as exc:
                if exc.fragment:
                    response = PlainTextResponse("sign in again", status_code=401)
                else:
                    response = RedirectResponse(_sign_in_url(request), status_code=303)
            except SignInThrottled as exc:
                response = error_page(request, 429, sentence(exc.message), "Please wait")
                response.headers["Retry-After"] = str(exc.retry_after)
            except ConveyorError as exc:
                response = error_page(request, STATUS.get(exc.code, 500), sentence(exc.message))
            except StarletteHTTPException as exc:
                # The form could not be read: too large a field or body, or no boundary.
                response = error_page(request, exc.status_code, sentence(str(exc.detail)))
            except RequestValidationError as exc:
                fields = ", ".join(str(e.get("loc", ("?",))[-1]) for e in exc.errors())
                message = f"The form is missing or has a wrong value in: {fields}."
                response = error_page(request, 422, message)
            except Exception:
                # A bug, not the person's doing: the log has the traceback, the page a sentence.
                log.exception("the page %s %s failed", request.method, request.url.path)
                message = "Something unexpected went wrong; the server log has the details."
                response = error_page(request, 500, message)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return handle


def form_text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value if isinstance(value, str) else default


def form_list(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


def page_number(value: str | None) -> int:
    """A ``?page=`` value: 1 for anything that is not a positive number."""
    return int(value) if value and value.isdigit() and 0 < int(value) < 100_000 else 1
