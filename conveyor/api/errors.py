"""The one place domain errors become HTTP responses (problem+json)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.domain import errors

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


def problem(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://conveyor.dev/problems/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "message": message,
        "detail": message,
        **extra,
    }
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ConveyorError)
    async def _domain(_: Request, exc: errors.ConveyorError) -> JSONResponse:
        status = STATUS.get(exc.code, 500)
        return problem(status, exc.code, exc.message, **exc.details)

    @app.exception_handler(RequestValidationError)
    async def _request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append({"path": loc, "message": err.get("msg", "is not valid")})
        message = "; ".join(f"{p['path']}: {p['message']}" for p in problems) or "invalid request"
        return problem(422, errors.ValidationFailed.code, message, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail))
