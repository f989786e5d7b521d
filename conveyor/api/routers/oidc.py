"""CI without long-lived keys: an OIDC token (GitHub Actions, GitLab) exchanged for a
short-lived API key of the service account that trusts it (docs/sso.md). No API key needed:
the signed token is the credential."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from conveyor.api.deps import ServicesDep, client_address
from conveyor.services import oidc_tokens

router = APIRouter(tags=["Authentication"])


class TokenExchange(BaseModel):
    token: str = Field(description="The signed JWT the CI system issued (an OIDC ID token)")
    service_account: str = Field(
        default="",
        description="The service account meant, when several trust the same token",
        max_length=100,
    )


@router.post(
    "/oidc/token",
    summary="Exchange a CI system's OIDC token for a short-lived API key",
    responses={
        401: {"description": "The token is not acceptable (signature, issuer, audience, time)"},
        403: {"description": "The token's claims match no trusting service account's rules"},
    },
)
async def exchange(body: TokenExchange, request: Request, services: ServicesDep) -> dict[str, Any]:
    """`{"token", "expires", "service_account"}`: send `token` as `X-Api-Key` until `expires`."""
    return await oidc_tokens.exchange(
        services,
        body.token,
        service_account=body.service_account or None,
        ip_address=client_address(request),
        user_agent=request.headers.get("user-agent"),
    )
