"""Browser sessions of the web UI: sign in (throttled), resume, sign out, change one's password.

A session id is 256 random bits, handed to the browser once (in an HttpOnly cookie) and stored
only as its SHA-256, like API keys. The form token that protects against cross-site requests is
derived from the session id, so it needs no storage and cannot be computed from the database.

Sign-in attempts are counted in the database before the password is checked, so that the
limits hold under parallel attempts, across restarts and across server nodes; the rule (which
counters, how many attempts) is ``conveyor.domain.throttling``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import throttling
from conveyor.domain.audit import Category
from conveyor.domain.documents import key
from conveyor.services import auth, throttle
from conveyor.services.access import UserRow, caller_for_user
from conveyor.services.config import public_id
from conveyor.services.core import Caller, Services
from conveyor.services.throttle import SignInThrottled as SignInThrottled
from conveyor.services.users import set_password
from conveyor.store import tables as t

MAX_PER_USER = throttling.MAX_PER_NAME_FROM_ADDRESS
MAX_PER_ADDRESS = throttling.MAX_PER_ADDRESS
# Writing last-seen on every request would make every page view a write.
TOUCH_EVERY = timedelta(minutes=1)
MAX_TOKEN = 128


@dataclass(frozen=True)
class Session:
    token: str
    caller: Caller
    expires_at: datetime
    # An administrator set the password: nothing but choosing a new one until it is done.
    must_change: bool = False

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    """The form token of a session: keyed by the session id, which only the browser holds."""
    return hmac.new(token.encode(), b"conveyor form token", hashlib.sha256).hexdigest()


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def sign_in(
    services: Services,
    username: str,
    password: str,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> Session:
    """A new session; ``Unauthenticated`` (or ``SignInThrottled``) otherwise, audited either way."""
    now = services.clock()
    name = username.strip()
    # Charged before the password is checked: parallel guesses cannot overtake the count.
    attempt = await throttle.charge(
        services, throttling.counters(key(name[: auth.MAX_USERNAME]), ip_address), now
    )
    if attempt.wait:
        await _audit_throttled(services, name, ip_address, user_agent, attempt.wait)
        raise SignInThrottled(
            f"Too many failed sign-ins. Wait {throttling.in_words(attempt.wait)}, then try again.",
            attempt.wait,
        )
    # A wrong password leaves the attempt charged.
    caller = await auth.sign_in(services, username, password, ip_address, user_agent)
    async with services.write() as session:
        await throttle.refund(session, attempt)
        return await open_session(session, services, caller, ip_address, user_agent)


async def open_session(
    session: AsyncSession,
    services: Services,
    caller: Caller,
    ip_address: str | None,
    user_agent: str | None,
) -> Session:
    """A new web session for someone whose sign-in (password or single sign-on) succeeded,
    written in the caller's transaction; expired sessions are cleared on the way."""
    now = services.clock()
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(hours=services.settings.session_hours)
    await session.execute(delete(t.web_sessions).where(t.web_sessions.c.expires_at <= now))
    await session.execute(
        insert(t.web_sessions).values(
            token_hash=token_hash(token),
            user_id=caller.user_id,
            created_at=now,
            expires_at=expires,
            last_seen_at=now,
            ip_address=ip_address[:64] if ip_address else None,
            user_agent=user_agent[:400] if user_agent else None,
        )
    )
    return Session(token, caller, expires)


async def _audit_throttled(
    services: Services,
    username: str,
    ip_address: str | None,
    user_agent: str | None,
    wait: int,
) -> None:
    recorded = await throttle.recording(
        services, throttling.refusals("sign-in", ip_address), services.clock()
    )
    if not recorded.record:
        return
    async with services.tx(auth.anonymous(ip_address, user_agent)) as tx:
        await tx.audit(
            Category.LOGIN_FAILED,
            f"A sign-in as {username[:100]!r} was refused without checking the password: "
            "too many failed attempts"
            + (f" from {ip_address}" if ip_address else "")
            + throttle.unrecorded_note(recorded),
            details={"username": username[:100], "reason": "throttled", "retry_after": wait},
        )


async def resume(
    services: Services,
    token: str | None,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> Session | None:
    """The session of a cookie, with the caller's permissions as of now; ``None`` if it is
    unknown, expired, or its user is inactive."""
    if not token or len(token) > MAX_TOKEN:
        return None
    now = services.clock()
    async with services.read() as session:
        row = (
            await session.execute(
                select(
                    t.web_sessions.c.id.label("session_id"),
                    t.web_sessions.c.expires_at,
                    t.web_sessions.c.last_seen_at,
                    t.users,
                )
                .join(t.users, t.users.c.id == t.web_sessions.c.user_id)
                .where(t.web_sessions.c.token_hash == token_hash(token))
            )
        ).first()
        if row is None or _aware(row.expires_at) <= now or not row.active:
            return None
        user = _user(row)
        caller = await caller_for_user(
            session, user, ip_address=ip_address, user_agent=user_agent, services=services
        )
    if _aware(row.last_seen_at) < now - TOUCH_EVERY:
        async with services.write() as session:
            await session.execute(
                update(t.web_sessions)
                .where(t.web_sessions.c.id == row.session_id)
                .values(last_seen_at=now)
            )
    return Session(token, caller, _aware(row.expires_at), bool(row.must_change_password))


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


async def sign_out(services: Services, caller: Caller, token: str) -> None:
    async with services.tx(caller) as tx:
        ended = await tx.session.execute(
            delete(t.web_sessions)
            .where(t.web_sessions.c.token_hash == token_hash(token))
            .returning(t.web_sessions.c.id)
        )
        if ended.first() is not None:
            await tx.audit(
                Category.LOGGED_OUT,
                f"{caller.username} signed out",
                documents=[public_id("users", caller.user_id)] if caller.user_id else [],
            )


async def change_own_password(
    services: Services, caller: Caller, token: str, current: str, new: str
) -> None:
    """Change the signed-in person's password after checking the current one; their other
    sessions end (whoever else held one no longer does)."""
    await set_password(
        services, caller, caller.username, new, current=current, keep_session=token_hash(token)
    )


async def choose_required_password(
    services: Services, caller: Caller, token: str, new: str
) -> None:
    """The new password a sign-in asked for (an administrator set the last one): no current
    password needed; the flag clears and the person's other sessions end."""
    await set_password(
        services, caller, caller.username, new, keep_session=token_hash(token), required=True
    )


async def active_sessions(services: Services, caller: Caller) -> int:
    """How many sessions the signed-in person has open (shown on their account page)."""
    async with services.read() as session:
        count = (
            await session.execute(
                select(func.count())
                .select_from(t.web_sessions)
                .where(
                    t.web_sessions.c.user_id == caller.user_id,
                    t.web_sessions.c.expires_at > services.clock(),
                )
            )
        ).scalar_one()
    return int(count)
