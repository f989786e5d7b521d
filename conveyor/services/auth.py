"""Signing in with a username and password (the web UI's sign-in form uses it).

Every attempt is audited: LoginSucceeded as the user; LoginFailed as "anonymous", with the name
that was tried and why it failed in the details (never the password). The person signing in is
told the same thing whatever went wrong, after the same time, so no username is revealed.
"""

from __future__ import annotations

import asyncio

from conveyor.domain.audit import Category
from conveyor.domain.errors import Unauthenticated
from conveyor.domain.permissions import Principal
from conveyor.services.access import caller_for_user, find_user
from conveyor.services.config import public_id
from conveyor.services.core import Caller, Services

FAILED = "the username or password is wrong"
PASSWORDS_OFF = "password sign-in is turned off here: use single sign-on"
ANONYMOUS = "anonymous"


def anonymous(ip_address: str | None, user_agent: str | None) -> Caller:
    """The actor of what someone not (yet) signed in did: a refused sign-in, token or
    callback is never attributed to the account it named."""
    return Caller(
        user_id=None,
        username=ANONYMOUS,
        principal=Principal(ANONYMOUS, False, ()),
        ip_address=ip_address,
        user_agent=user_agent,
    )


MAX_USERNAME = 100


async def sign_in(
    services: Services,
    username: str,
    password: str,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> Caller:
    """The signed-in caller; ``Unauthenticated`` (and a LoginFailed event) otherwise."""
    username = username.strip()[:MAX_USERNAME]
    if not services.settings.password_sign_in:
        # Single sign-on only (docs/sso.md): no password is even checked.
        await _failed(services, username, None, "password sign-in is off", ip_address, user_agent)
        raise Unauthenticated(PASSWORDS_OFF)
    async with services.read() as session:
        user = await find_user(session, username) if username else None
    stored = user.password_hash if user is not None else None
    # Without a stored hash a decoy is checked, so that every failure takes as long.
    ok = await asyncio.to_thread(services.passwords.verify, stored, password)
    reason = (
        "unknown user"
        if user is None
        else "no password (a service account, or none set)"
        if not stored
        else "inactive account"
        if not user.active
        else "wrong password"
        if not ok
        else None
    )
    if reason is not None:
        user_id = user.id if user is not None else None
        await _failed(services, username, user_id, reason, ip_address, user_agent)
        raise Unauthenticated(FAILED)
    assert user is not None
    async with services.read() as session:
        caller = await caller_for_user(session, user, ip_address=ip_address, user_agent=user_agent)
    async with services.tx(caller) as tx:
        await tx.audit(
            Category.LOGIN_SUCCEEDED,
            f"{user.username} signed in" + (f" from {ip_address}" if ip_address else ""),
            documents=[public_id("users", user.id)],
        )
    return caller


async def _failed(
    services: Services,
    username: str,
    user_id: int | None,
    reason: str,
    ip_address: str | None,
    user_agent: str | None,
) -> None:
    # Nobody is authenticated: the actor is "anonymous", so that a failed attempt is never
    # attributed to the account it tried (anyone can type any name).
    async with services.tx(anonymous(ip_address, user_agent)) as tx:
        await tx.audit(
            Category.LOGIN_FAILED,
            f"A sign-in as {username!r} failed" + (f" from {ip_address}" if ip_address else ""),
            documents=[public_id("users", user_id)] if user_id is not None else [],
            # Why, for the auditor only: the person signing in is told nothing more.
            details={"username": username, "reason": reason},
        )
