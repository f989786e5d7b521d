"""Single sign-on: OpenID Connect, authorization code flow with PKCE (Authlib's OAuth 2 client),
the ID token verified against the provider's published keys (docs/sso.md).

A sign-in under way is one row: the state (stored hashed, bound to the browser by a cookie,
used once, for ten minutes), the nonce and the PKCE verifier. People are known by issuer and
subject; a first sign-in links the one account whose email the provider says is verified, or
creates one (``sso_create_users``); an unverified email never links anything. Team membership
follows the groups claim for the teams that name ``sso_groups``. Every sign-in, refusal and
user creation is audited.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.auth import encode_client_secret_basic  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_grant_uri,
    prepare_token_request,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from sqlalchemy import delete, func, insert, select, update

from conveyor.domain import oidc
from conveyor.domain.audit import Category
from conveyor.domain.documents import Team, User, key
from conveyor.domain.errors import ValidationFailed
from conveyor.domain.model import Model
from conveyor.services import tls
from conveyor.services.access import UserRow, caller_for_user
from conveyor.services.auth import anonymous
from conveyor.services.config import change_config, public_id
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.oidc_jwks import TokenRejected, discovery, verify
from conveyor.services.sessions import Session, open_session
from conveyor.settings import Settings
from conveyor.store import tables as t

CALLBACK_PATH = "/sso/callback"
STATE_MINUTES = 10
METHOD = "oidc"


class SsoRefused(Exception):
    """A refused sign-in: ``message`` for the person, ``reason`` for the audit log."""

    def __init__(self, message: str, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.message = message
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Started:
    url: str  # the provider's authorization endpoint, with our request
    state: str  # for the browser's cookie


def configured(settings: Settings) -> bool:
    return bool(settings.sso_issuer and settings.sso_client_id)


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _redirect_uri(settings: Settings) -> str:
    return settings.base_url + CALLBACK_PATH


async def _provider(services: Services) -> dict[str, Any]:
    issuer = services.settings.sso_issuer
    assert issuer
    try:
        return await discovery(services, issuer)
    except TokenRejected as exc:
        raise SsoRefused(
            "The sign-in provider cannot be reached just now: try again in a moment.",
            exc.reason,
            502,
        ) from None


async def begin(services: Services, next_path: str) -> Started:
    """Where to send the browser to sign in, with a fresh state, nonce and PKCE verifier."""
    if not configured(services.settings):
        raise SsoRefused("Single sign-on is not set up on this server.", "not configured", 404)
    provider = await _provider(services)
    endpoint = provider.get("authorization_endpoint")
    if not isinstance(endpoint, str) or oidc.issuer_url_problem(endpoint):
        raise SsoRefused(
            "The sign-in provider is misconfigured.", "bad authorization_endpoint", 502
        )
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(24)
    verifier = generate_token(64)
    settings = services.settings
    url = prepare_grant_uri(
        endpoint,
        settings.sso_client_id,
        "code",
        redirect_uri=_redirect_uri(settings),
        scope=settings.sso_scopes,
        state=state,
        nonce=nonce,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    now = services.clock()
    async with services.write() as session:
        await session.execute(
            delete(t.sso_states).where(t.sso_states.c.created_at < now - timedelta(days=1))
        )
        await session.execute(
            insert(t.sso_states).values(
                state_hash=_hash(state),
                nonce=nonce,
                code_verifier=verifier,
                next_path=next_path[:2000],
                created_at=now,
            )
        )
    return Started(url, state)


async def complete(
    services: Services,
    *,
    state: str,
    browser_state: str | None,
    code: str,
    error: str,
    ip_address: str | None,
    user_agent: str | None,
) -> tuple[Session, str]:
    """The new session and the page to go to; ``SsoRefused`` (audited) otherwise."""
    facts: dict[str, Any] = {"method": METHOD, "issuer": services.settings.sso_issuer}
    try:
        claims, next_path = await _verified_claims(services, state, browser_state, code, error)
        facts["subject"] = claims["sub"]
        user, created = await _account(services, claims, ip_address)
        if not user.active:
            raise SsoRefused(
                "Your account is inactive: ask an administrator.", "inactive account", 403
            )
        if user.service_account:
            raise SsoRefused("A service account cannot sign in.", "service account", 403)
    except SsoRefused as exc:
        await _refused(services, facts, exc.reason, ip_address, user_agent)
        raise
    joined, left = await _follow_groups(services, user.username, claims)
    async with services.read() as session:
        caller = await caller_for_user(session, user, ip_address=ip_address, user_agent=user_agent)
    signed_in = await _open_session(services, caller, ip_address, user_agent)
    async with services.tx(caller) as tx:
        details = facts | {"created": created, "teams_joined": joined, "teams_left": left}
        await tx.audit(
            Category.LOGIN_SUCCEEDED,
            f"{user.username} signed in with single sign-on"
            + (f" from {ip_address}" if ip_address else ""),
            documents=[public_id("users", user.id)],
            details=details,
        )
    return signed_in, next_path


async def _verified_claims(
    services: Services, state: str, browser_state: str | None, code: str, error: str
) -> tuple[dict[str, Any], str]:
    settings = services.settings
    if not configured(settings):
        raise SsoRefused("Single sign-on is not set up on this server.", "not configured", 404)
    if not state or len(state) > 200:
        raise SsoRefused(
            "The sign-in came back without its state: start again.", "missing state", 400
        )
    now = services.clock()
    async with services.write() as session:
        row = (
            await session.execute(
                select(t.sso_states).where(t.sso_states.c.state_hash == _hash(state))
            )
        ).first()
        if row is None:
            raise SsoRefused(
                "This sign-in is unknown or too old: start again.", "unknown state", 400
            )
        if row.used_at is not None:
            raise SsoRefused(
                "This sign-in link was used already: start again.", "replayed state", 400
            )
        used = await session.execute(
            update(t.sso_states)
            .where(t.sso_states.c.id == row.id, t.sso_states.c.used_at.is_(None))
            .values(used_at=now)
            .returning(t.sso_states.c.id)
        )
        if used.first() is None:
            raise SsoRefused(
                "This sign-in link was used already: start again.", "replayed state", 400
            )
    if not browser_state or not secrets.compare_digest(browser_state, state):
        raise SsoRefused(
            "This sign-in was started in another browser (or its cookie expired): start again.",
            "state not bound to this browser",
            400,
        )
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=now.tzinfo)
    if created < now - timedelta(minutes=STATE_MINUTES):
        raise SsoRefused("This sign-in took too long: start again.", "state expired", 400)
    if error:
        raise SsoRefused(
            "The sign-in provider did not sign you in: start again.",
            f"provider answered {error[:100]!r}",
        )
    if not code:
        raise SsoRefused("The sign-in came back without a code: start again.", "no code", 400)
    provider = await _provider(services)
    token_endpoint = provider.get("token_endpoint")
    if not isinstance(token_endpoint, str) or oidc.issuer_url_problem(token_endpoint):
        raise SsoRefused("The sign-in provider is misconfigured.", "bad token_endpoint", 502)
    tokens = await _fetch_tokens(settings, token_endpoint, code[:2000], row.code_verifier)
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str):
        raise SsoRefused("The sign-in provider sent no ID token.", "no id_token", 502)
    issuer = settings.sso_issuer
    assert issuer and settings.sso_client_id
    try:
        claims = await verify(services, issuer, id_token)
    except TokenRejected as exc:
        raise SsoRefused("The sign-in could not be verified: start again.", exc.reason) from None
    refusal = oidc.id_token_refusal(
        claims,
        issuer=issuer,
        client_id=settings.sso_client_id,
        nonce=row.nonce,
        now=now.timestamp(),
    )
    if refusal is not None:
        raise SsoRefused(f"Sign-in refused: {refusal.message}.", refusal.reason)
    return claims, row.next_path


class _ClientCredentials:
    def __init__(self, settings: Settings) -> None:
        self.client_id = settings.sso_client_id
        self.client_secret = settings.sso_client_secret or ""


async def _fetch_tokens(
    settings: Settings, token_endpoint: str, code: str, verifier: str
) -> dict[str, Any]:
    """The code (with its PKCE verifier) exchanged at the provider's token endpoint, the client
    authenticated with its secret (client_secret_basic)."""
    body = prepare_token_request(
        "authorization_code",
        code=code,
        redirect_uri=_redirect_uri(settings),
        code_verifier=verifier,
    )
    _, headers, body = encode_client_secret_basic(
        _ClientCredentials(settings),
        "POST",
        token_endpoint,
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        body,
    )
    try:
        async with httpx.AsyncClient(
            verify=tls.client_context(), timeout=15.0, follow_redirects=False
        ) as client:
            response = await client.post(token_endpoint, content=body, headers=headers)
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SsoRefused(
            "The sign-in provider could not be reached to complete the sign-in: start again.",
            f"token request failed: {exc.__class__.__name__}",
            502,
        ) from None
    if response.status_code != 200 or not isinstance(answer, dict) or "error" in answer:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise SsoRefused(
            "The sign-in provider refused to complete the sign-in: start again.",
            f"token request answered {response.status_code} {str(error)[:100]!r}",
        )
    return answer


async def _account(
    services: Services, claims: dict[str, Any], ip_address: str | None
) -> tuple[UserRow, bool]:
    """The user this issuer and subject are; linked or created on a first sign-in."""
    issuer = services.settings.sso_issuer
    subject = claims["sub"]
    now = services.clock()
    async with services.read() as session:
        row = (
            await session.execute(
                select(t.users)
                .join(t.sso_identities, t.sso_identities.c.user_id == t.users.c.id)
                .where(t.sso_identities.c.issuer == issuer, t.sso_identities.c.subject == subject)
            )
        ).first()
    if row is not None:
        async with services.write() as session:
            await session.execute(
                update(t.sso_identities)
                .where(t.sso_identities.c.issuer == issuer, t.sso_identities.c.subject == subject)
                .values(last_sign_in_at=now)
            )
        return _user(row), False
    linked = await _verified_email_match(services, claims)
    created = False
    if linked is None:
        if not services.settings.sso_create_users:
            raise SsoRefused(
                "You have no account on this Conveyor server: ask an administrator for one.",
                "no linked account and sso_create_users is off",
                403,
            )
        linked = await _create_user(services, claims, ip_address)
        created = True
    async with services.write() as session:
        await session.execute(
            insert(t.sso_identities).values(
                issuer=issuer,
                subject=subject,
                user_id=linked.id,
                created_at=now,
                last_sign_in_at=now,
            )
        )
    return linked, created


async def _verified_email_match(services: Services, claims: dict[str, Any]) -> UserRow | None:
    """The one person account with the email the provider vouches for (``email_verified``)
    and no identity of this issuer yet; never on an unverified email."""
    email = claims.get("email")
    if claims.get("email_verified") is not True or not isinstance(email, str) or not email:
        return None
    linked_here = select(t.sso_identities.c.user_id).where(
        t.sso_identities.c.issuer == services.settings.sso_issuer
    )
    async with services.read() as session:
        rows = (
            await session.execute(
                select(t.users).where(
                    func.lower(t.users.c.email) == email.lower(),
                    t.users.c.service_account.is_(False),
                    t.users.c.id.not_in(linked_here),
                )
            )
        ).all()
    return _user(rows[0]) if len(rows) == 1 else None


async def _create_user(
    services: Services, claims: dict[str, Any], ip_address: str | None
) -> UserRow:
    wanted = oidc.username_from(claims)
    name = claims.get("name")
    email = claims.get("email")
    verified = claims.get("email_verified") is True and isinstance(email, str)
    chosen: list[str] = []

    def mutate(model: Model) -> Model:
        username = wanted
        n = 1
        while model.has("users", username):
            n += 1
            username = f"{wanted}-{n}"
        chosen.append(username)
        return model.with_doc(
            "users",
            User(
                username=username,
                display_name=name[:200] if isinstance(name, str) else "",
                # An unverified address is not kept: mail would go to whoever typed it.
                email=str(email)[:320] if verified else "",
            ),
        )

    creator = system_caller(on_behalf_of=f"single sign-on ({claims['sub'][:60]})")
    await change_config(services, creator, mutate)
    username = chosen[-1]
    async with services.tx(creator) as tx:
        row = await tx.session.execute(select(t.users).where(t.users.c.slug == key(username)))
        user = _user(row.one())
        await tx.audit(
            Category.USER_CREATED,
            f'User "{username}" was created at their first single sign-on'
            + (f" from {ip_address}" if ip_address else ""),
            documents=[public_id("users", user.id)],
            details={"method": METHOD, "issuer": services.settings.sso_issuer},
        )
    return user


async def _follow_groups(
    services: Services, username: str, claims: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """Teams with ``sso_groups`` get (or lose) the person as their groups claim says."""
    groups = oidc.groups_of(claims, services.settings.sso_groups_claim)
    if groups is None:
        return [], []
    joined: list[str] = []
    left: list[str] = []

    def mutate(model: Model) -> Model:
        joined.clear()
        left.clear()
        wanted = oidc.teams_for_groups(((tm.name, tm.sso_groups) for tm in model.teams), groups)
        for team in model.teams:
            if not team.sso_groups:
                continue
            member = any(key(m) == key(username) for m in team.members)
            if (team.name in wanted) == member:
                continue
            model = model.with_doc("teams", _membership(team, username, team.name in wanted))
            (joined if team.name in wanted else left).append(team.name)
        return model

    try:
        await change_config(services, system_caller(on_behalf_of=username), mutate)
    except ValidationFailed:
        # Such as taking the last administrator out of their team: left as it is.
        return [], []
    return joined, left


def _membership(team: Team, username: str, member: bool) -> Team:
    others = tuple(m for m in team.members if key(m) != key(username))
    return replace(team, members=(*others, username) if member else others)


async def _open_session(
    services: Services, caller: Caller, ip_address: str | None, user_agent: str | None
) -> Session:
    async with services.write() as session:
        return await open_session(session, services, caller, ip_address, user_agent)


def _user(row: Any) -> UserRow:
    return UserRow(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        email=row.email,
        service_account=row.service_account,
        active=row.active,
        password_hash=None,
    )


async def _refused(
    services: Services,
    facts: dict[str, Any],
    reason: str,
    ip_address: str | None,
    user_agent: str | None,
) -> None:
    async with services.tx(anonymous(ip_address, user_agent)) as tx:
        await tx.audit(
            Category.LOGIN_FAILED,
            "A single sign-on was refused" + (f" from {ip_address}" if ip_address else ""),
            details=facts | {"reason": reason},
        )
