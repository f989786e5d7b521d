"""Request dependencies: the services of this app and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from conveyor.domain import forwarding
from conveyor.services.access import authenticate_api_key
from conveyor.services.core import Caller, Services

api_key_header = APIKeyHeader(name="X-Api-Key", auto_error=False, description="An API key")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def client_address(request: Request) -> str | None:
    """The client's address: the peer's, or what trusted proxies (``trusted_proxies``) say."""
    peer = request.client.host if request.client else None
    networks = getattr(request.app.state, "trusted_proxies", ())
    return forwarding.client_address(peer, request.headers.getlist("x-forwarded-for"), networks)


async def get_caller(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    api_key: Annotated[str | None, Depends(api_key_header)] = None,
) -> Caller:
    """An API key (header), or the signed-in browser session set by the web UI."""
    session_caller = getattr(request.state, "session_caller", None)
    if api_key is None and session_caller is not None:
        caller: Caller = session_caller
        return caller
    return await authenticate_api_key(
        services,
        api_key,
        ip_address=client_address(request),
        user_agent=request.headers.get("user-agent"),
    )


ServicesDep = Annotated[Services, Depends(get_services)]
CallerDep = Annotated[Caller, Depends(get_caller)]


CSV_MEDIA = "text/csv; charset=utf-8"


def wants_csv(request: Request, format: str | None) -> bool:
    """CSV when ``?format=csv``, or when the client asks for CSV and not JSON (JSON otherwise)."""
    if format is not None:
        return format == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept
