"""``GET /metrics``: Prometheus text format, for the addresses in ``metrics_networks`` (loopback
by default) or a scraper sending ``Authorization: Bearer <metrics_token>`` (docs/operations.md
says why it is not an API key)."""

from __future__ import annotations

import ipaddress
import secrets

from fastapi import APIRouter, Request, Response

from conveyor.api.deps import ServicesDep, client_address
from conveyor.api.errors import problem
from conveyor.services.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["System"])


def _from_trusted_network(request: Request) -> bool:
    address = client_address(request)
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    networks = request.app.state.settings.metrics_networks
    return any(ip in ipaddress.ip_network(n.strip(), strict=False) for n in networks)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@router.get(
    "/metrics",
    summary="Prometheus metrics of this node",
    description="From an address in CONVEYOR_METRICS_NETWORKS (loopback by default), or with "
    "`Authorization: Bearer` and CONVEYOR_METRICS_TOKEN.",
    response_class=Response,
    responses={401: {"description": "Wrong token"}, 403: {"description": "Not allowed"}},
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    expected: str | None = request.app.state.settings.metrics_token
    token = _bearer(request)
    if token is not None and expected:
        if not secrets.compare_digest(token.encode(), expected.encode()):
            return problem(401, "unauthenticated", "the metrics token is wrong")
    elif not _from_trusted_network(request):
        how = (
            "send Authorization: Bearer with CONVEYOR_METRICS_TOKEN, or scrape from"
            if expected
            else "scrape from"
        )
        return problem(
            403,
            "permission_denied",
            f"/metrics is not open to {client_address(request) or 'this client'}: {how} an "
            "address in CONVEYOR_METRICS_NETWORKS",
        )
    registry: Metrics = request.app.state.metrics
    body = await registry.scrape(services)
    return Response(body, media_type=CONTENT_TYPE)
