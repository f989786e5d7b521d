"""What every route of the Octopus API shares: who is calling, which space, and errors in the
shape the Octopus clients read (``{"ErrorMessage", "Errors": []}``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.api.deps import client_address, get_services
from conveyor.api.errors import STATUS
from conveyor.domain import octopus
from conveyor.domain.errors import ConveyorError, NotFound, Unauthenticated, ValidationFailed
from conveyor.services.access import authenticate_api_key
from conveyor.services.core import Caller, Services

# Conveyor's own API lives below /api/v1: a path there that no route of it answers is its 404
# (problem+json), never a space called "v1".
OWN_API = "v1"
# What Octopus says before the list of problems of a request.
PROBLEMS = "There was a problem with your request."


def octopus_error(status: int, message: str, errors: list[str] | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": 'ApiKey header="X-Octopus-ApiKey"'} if status == 401 else None
    return JSONResponse(octopus.error_body(message, errors or []), status, headers=headers)


def _from_domain(exc: ConveyorError) -> JSONResponse:
    if isinstance(exc, ValidationFailed):
        if len(exc.problems) == 1:
            return octopus_error(400, exc.message)
        return octopus_error(400, PROBLEMS, [str(p) for p in exc.problems])
    return octopus_error(STATUS.get(exc.code, 500), exc.message)


def _from_request(exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc)
        message = str(err.get("msg", "is not valid"))
        if err.get("type") == "json_invalid":
            where, message = "", "the body is not valid JSON"
        problems.append(f"{where}: {message}" if where else message)
    if len(problems) == 1:
        return octopus_error(400, problems[0])
    return octopus_error(400, PROBLEMS, problems)


class OctopusRoute(APIRoute):
    """A route whose domain and request errors answer as Octopus does, with the status
    Conveyor's own API gives them (bad input 400, as Octopus answers it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ConveyorError as exc:
                return _from_domain(exc)
            except RequestValidationError as exc:
                return _from_request(exc)

        return handle


def api_key_of(request: Request) -> str | None:
    """``X-Octopus-ApiKey`` (what the clients send, empty when they have none), an
    ``Authorization: Bearer`` token, or Conveyor's own ``X-Api-Key``."""
    for header in ("x-octopus-apikey", "x-api-key"):
        value = request.headers.get(header, "").strip()
        if value:
            return value
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def get_octopus_caller(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Caller:
    """A Conveyor API key in any of the headers above, or the signed-in browser session."""
    api_key = api_key_of(request)
    session_caller = getattr(request.state, "session_caller", None)
    if api_key is None and session_caller is not None:
        caller: Caller = session_caller
        return caller
    if api_key is None:
        raise Unauthenticated(
            "this request needs a Conveyor API key: send it in the X-Octopus-ApiKey header "
            "(the Octopus clients' api_key / OCTOPUS_API_KEY)"
        )
    return await authenticate_api_key(
        services,
        api_key,
        ip_address=client_address(request),
        user_agent=request.headers.get("user-agent"),
    )


def check_space(space: str) -> str:
    """The one space: its id ``Spaces-1`` or its name ``Default`` (any case)."""
    if space == OWN_API:
        raise StarletteHTTPException(404, "Not Found")
    if space.lower() in (octopus.SPACE_ID.lower(), octopus.SPACE_NAME.lower()):
        return octopus.SPACE_ID
    raise NotFound(
        f'space "{space}" does not exist: Conveyor has one space, {octopus.SPACE_ID} '
        f'("{octopus.SPACE_NAME}")'
    )


OctopusCaller = Annotated[Caller, Depends(get_octopus_caller)]
Space = Annotated[str, Depends(check_space)]
