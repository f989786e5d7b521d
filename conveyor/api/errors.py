"""The one place domain errors become HTTP responses (problem+json)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.domain import errors

# Where the API lives (conveyor.api.app mounts it there).
API_PREFIX = "/api/v1"

STATUS: dict[str, int] = {
    errors.NotFound.code: 404,
    errors.Conflict.code: 409,
    errors.PermissionDenied.code: 403,
    errors.Unauthenticated.code: 401,
    errors.InvalidTransition.code: 409,
    errors.PolicyViolation.code: 409,
    errors.ValidationFailed.code: 422,
    errors.ConveyorError.code: 500,
}

TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Invalid input",
    500: "Server error",
}


# The members every problem has; an error's details never replace them.
RESERVED = frozenset({"type", "title", "status", "code", "message", "detail"})


def problem(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://conveyor.dev/problems/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "message": message,
        "detail": message,
    }
    body.update((k, v) for k, v in jsonable_encoder(extra).items() if k not in RESERVED)
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ConveyorError)
    async def _domain(_: Request, exc: errors.ConveyorError) -> JSONResponse:
        status = STATUS.get(exc.code, 500)
        details = {k: v for k, v in exc.details.items() if k not in RESERVED}
        return problem(status, exc.code, exc.message, **details)

    @app.exception_handler(RequestValidationError)
    async def _request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_request_problem(err) for err in exc.errors()]
        message = "; ".join(
            f"{p['path']}: {p['message']}" if p["path"] else p["message"] for p in problems
        )
        return problem(
            422, errors.ValidationFailed.code, message or "invalid request", problems=problems
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: say so in the usual shape; the server log has the traceback
        # (Starlette re-raises the exception after this response is sent). This response
        # leaves through Starlette's outermost middleware, past the one that adds the
        # security headers, so it adds them itself; it never carries the traceback.
        from conveyor.web.pages import SECURITY_HEADERS

        response = problem(
            500, "internal_error", "an unexpected error occurred; the server log has the details"
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_a_page(request):
            # A person's browser at an unknown address: a page, with the way back.
            from conveyor.web.pages import SECURITY_HEADERS, error_page

            page = error_page(request, exc.status_code, _PAGE_MESSAGES.get(exc.status_code, ""))
            page.headers.update(SECURITY_HEADERS)
            return page
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        code = codes.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail))


# What a page says for an HTTP error of the router (a domain error has its own sentence).
_PAGE_MESSAGES = {
    404: "There is no page at this address. It may have moved, or the link may be mistyped.",
    405: "This address does not answer that kind of request.",
}


def _wants_a_page(request: Request) -> bool:
    """A browser asking for a page (Accept: text/html) outside the API; the API and every
    other client keep problem+json."""
    path = request.url.path
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        return False
    return "text/html" in request.headers.get("accept", "")


def _request_problem(err: Any) -> dict[str, str]:
    """One of FastAPI's request validation errors as a problem with a readable path."""
    loc = [str(p) for p in err.get("loc", ())]
    # "body" is the whole document; "query.user" says where a parameter was expected.
    path = ".".join(loc[1:] if loc[:1] == ["body"] else loc)
    kind = err.get("type", "")
    if kind == "json_invalid":
        reason = (err.get("ctx") or {}).get("error", "")
        position = f" at character {loc[1]}" if len(loc) > 1 else ""
        return {"path": "", "message": f"the body is not valid JSON: {reason}{position}"}
    if kind == "missing" and loc == ["body"]:
        return {"path": "", "message": "a JSON body is required"}
    return {"path": path, "message": str(err.get("msg", "is not valid"))}
