"""CI without long-lived keys: a signed OIDC token (GitHub Actions, GitLab) exchanged for a
short-lived Conveyor API key of the service account that trusts its issuer and claims.

Checked in this order: a signed JWT whose issuer some active service account trusts; its
signature against the issuer's published keys; ``exp``/``nbf``/``iat`` with a small leeway;
``aud``; the trust's claim rules. The key is stored hashed, expires (an hour at most), and is
refused by every request once it has. Every refusal is audited (LoginFailed, as "anonymous",
the reason in the details) and tells the caller what was wrong without showing the rules.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert

from conveyor.domain import oidc, throttling
from conveyor.domain.audit import Category
from conveyor.domain.documents import key
from conveyor.domain.errors import PermissionDenied, Unauthenticated
from conveyor.services import model_cache, throttle
from conveyor.services.access import caller_for_user, find_user
from conveyor.services.auth import anonymous
from conveyor.services.config import public_id
from conveyor.services.core import Services, iso
from conveyor.services.credentials import hash_api_key, new_api_key
from conveyor.services.oidc_jwks import TokenRejected, unverified, verify
from conveyor.store import tables as t

METHOD = "oidc_token"
# Expired short-lived keys are deleted this long after they expired (they hold nothing).
KEEP_EXPIRED = timedelta(days=1)


async def exchange(
    services: Services,
    token: str,
    *,
    service_account: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> dict[str, Any]:
    """``{"token", "expires", "service_account"}``; ``Unauthenticated`` (the token is not
    acceptable) or ``PermissionDenied`` (it is, but grants nothing here) otherwise."""
    token = (token or "").strip()
    facts: dict[str, Any] = {"method": METHOD}
    if service_account:
        facts["service_account"] = service_account[:100]
    try:
        _, peeked = unverified(token)
        issuer = peeked.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise TokenRejected("no iss claim", "the token names no issuer (iss)")
        facts["issuer"] = issuer[:400]
        if isinstance(peeked.get("sub"), str):
            facts["subject"] = peeked["sub"][:255]
        candidates = await _candidates(services, issuer, service_account)
        if not candidates:
            raise _Refused(
                oidc.Refusal(
                    "no active service account trusts this issuer",
                    "the token's issuer is not trusted",
                )
            )
        claims = await verify(services, issuer, token)
        refusal = oidc.times_refusal(claims, services.clock().timestamp())
        chosen, choice_refusal = oidc.choose(candidates, claims)
        refusal = refusal or choice_refusal
        if refusal is not None:
            raise _Refused(refusal)
        assert chosen is not None
    except _Refused as exc:
        await _refused(services, facts, exc.refusal, ip_address, user_agent)
        raise exc.error() from None
    except TokenRejected as exc:
        refusal = oidc.Refusal(exc.reason, exc.message)
        await _refused(services, facts, refusal, ip_address, user_agent)
        raise Unauthenticated(exc.message) from None
    return await _issue(services, chosen, claims, facts, ip_address, user_agent)


class _Refused(Exception):
    def __init__(self, refusal: oidc.Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal

    def error(self) -> Unauthenticated | PermissionDenied:
        if self.refusal.forbidden:
            return PermissionDenied(self.refusal.message)
        return Unauthenticated(self.refusal.message)


async def _candidates(
    services: Services, issuer: str, service_account: str | None
) -> list[oidc.Candidate]:
    snapshot = await model_cache.snapshot(services)
    out: list[oidc.Candidate] = []
    for user in snapshot.loaded.model.users:
        if not (user.service_account and user.active):
            continue
        if service_account and key(user.username) != key(service_account):
            continue
        out += [oidc.Candidate(user.username, tr) for tr in user.oidc_trust if tr.issuer == issuer]
    return out


async def _issue(
    services: Services,
    chosen: oidc.Candidate,
    claims: dict[str, Any],
    facts: dict[str, Any],
    ip_address: str | None,
    user_agent: str | None,
) -> dict[str, Any]:
    minutes = max(1, min(chosen.trust.minutes, oidc.MAX_MINUTES))
    api_key = new_api_key()
    async with services.read() as session:
        user = await find_user(session, chosen.username)
        assert user is not None, "the model and the users table agree"
        caller = await caller_for_user(session, user, ip_address=ip_address, user_agent=user_agent)
    async with services.tx(caller) as tx:
        expires = tx.now + timedelta(minutes=minutes)
        await tx.session.execute(
            delete(t.api_keys).where(
                t.api_keys.c.user_id == user.id,
                t.api_keys.c.expires_at < tx.now - KEEP_EXPIRED,
            )
        )
        subject = str(claims.get("sub", ""))[:80]
        result = await tx.session.execute(
            insert(t.api_keys)
            .values(
                user_id=user.id,
                name=f"OIDC {subject}"[:200],
                key_hash=hash_api_key(api_key),
                prefix=api_key[:8],
                created_at=tx.now,
                expires_at=expires,
            )
            .returning(t.api_keys.c.id)
        )
        key_id = int(result.scalar_one())
        matched = {rule.claim: claims.get(rule.claim) for rule in chosen.trust.rules}
        await tx.audit(
            Category.API_KEY_CREATED,
            f"An OIDC token of {facts['issuer']} ({subject}) was exchanged for a key of "
            f'"{user.username}" ({api_key[:8]}…) valid for {minutes} min',
            documents=[public_id("users", user.id), public_id("api_keys", key_id)],
            details=facts | {"matched": matched, "expires": iso(expires), "minutes": minutes},
        )
    return {"token": api_key, "expires": iso(expires), "service_account": user.username}


async def _refused(
    services: Services,
    facts: dict[str, Any],
    refusal: oidc.Refusal,
    ip_address: str | None,
    user_agent: str | None,
) -> None:
    recorded = await throttle.recording(
        services, throttling.refusals("oidc-token", ip_address), services.clock()
    )
    if not recorded.record:
        return
    where = f" from {ip_address}" if ip_address else ""
    async with services.tx(anonymous(ip_address, user_agent)) as tx:
        await tx.audit(
            Category.LOGIN_FAILED,
            f"An OIDC token exchange was refused{where}: {refusal.message}"
            + throttle.unrecorded_note(recorded),
            details=facts | {"reason": refusal.reason},
        )
