"""Who is calling: API keys and passwords to a Caller with its effective permissions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import permissions as perms
from conveyor.domain.codec import decode
from conveyor.domain.documents import Team, UserRole, key, slugify
from conveyor.domain.errors import NotFound, Problem, Unauthenticated
from conveyor.services import model_cache
from conveyor.services.core import Caller, Services
from conveyor.services.credentials import hash_api_key
from conveyor.store import tables as t

# Writing last-used on every request would make every read a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class UserRow:
    id: int
    username: str
    display_name: str
    email: str
    service_account: bool
    active: bool
    password_hash: str | None


def _user(row: Any) -> UserRow:
    return UserRow(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        email=row.email,
        service_account=row.service_account,
        active=row.active,
        password_hash=row.password_hash,
    )


async def find_user(session: AsyncSession, username: str) -> UserRow | None:
    row = (
        await session.execute(select(t.users).where(t.users.c.slug == slugify(username)))
    ).first()
    return _user(row) if row is not None else None


async def get_user(session: AsyncSession, username: str) -> UserRow:
    user = await find_user(session, username)
    if user is None:
        raise NotFound(f'user "{username}" does not exist')
    return user


async def load_access(session: AsyncSession) -> tuple[list[Team], dict[str, UserRole]]:
    """Teams and roles: the only facts permission evaluation needs."""
    teams: list[Team] = []
    for row in (await session.execute(select(t.teams.c.name, t.teams.c.body))).all():
        problems: list[Problem] = []
        team = decode("teams", row.body, ("teams", row.name), problems)
        if isinstance(team, Team):
            teams.append(team)
    roles: dict[str, UserRole] = {}
    for row in (await session.execute(select(t.user_roles.c.name, t.user_roles.c.body))).all():
        problems = []
        role = decode("user_roles", row.body, ("user_roles", row.name), problems)
        if isinstance(role, UserRole):
            roles[key(role.name)] = role
    return teams, roles


async def principal_of(
    session: AsyncSession, username: str, active: bool, services: Services | None = None
) -> perms.Principal:
    """With ``services``, from this node's cached configuration: computed once per user and
    revision (per request, decoding every team and role was a cost that grew with them)."""
    if services is not None:
        return (await model_cache.snapshot(services, session)).principal(username, active)
    teams, roles = await load_access(session)
    return perms.principal_for(username, active, teams, roles)


async def caller_for_user(
    session: AsyncSession,
    user: UserRow,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
    on_behalf_of: str | None = None,
    services: Services | None = None,
) -> Caller:
    principal = await principal_of(session, user.username, user.active, services)
    return Caller(
        user_id=user.id,
        username=user.username,
        principal=principal,
        ip_address=ip_address,
        user_agent=user_agent,
        on_behalf_of=on_behalf_of,
    )


async def authenticate_api_key(
    services: Services,
    api_key: str | None,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> Caller:
    if not api_key:
        raise Unauthenticated(
            "this request needs an API key: send it in the X-Api-Key header "
            "(conveyor: set CONVEYOR_API_KEY or pass --api-key)"
        )
    digest = hash_api_key(api_key)
    async with services.read() as session:
        row = (
            await session.execute(
                select(t.api_keys, t.users)
                .join(t.users, t.users.c.id == t.api_keys.c.user_id)
                .where(t.api_keys.c.key_hash == digest)
            )
        ).first()
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("the API key is not valid (unknown or revoked)")
        if row.expires_at is not None and _aware(row.expires_at) <= services.clock():
            raise Unauthenticated(
                "the API key has expired: exchange a fresh OIDC token (conveyor login --oidc-token)"
            )
        if not row.active:
            raise Unauthenticated(f'the API key belongs to user "{row.username}", who is inactive')
        user = UserRow(
            id=row.user_id,
            username=row.username,
            display_name=row.display_name,
            email=row.email,
            service_account=row.service_account,
            active=row.active,
            password_hash=None,
        )
        caller = await caller_for_user(
            session, user, ip_address=ip_address, user_agent=user_agent, services=services
        )
        last_used = row.last_used_at
        key_id = row.id
    now = services.clock()
    if last_used is None or _aware(last_used) < now - LAST_USED_RESOLUTION:
        async with services.write() as session:
            await session.execute(
                update(t.api_keys).where(t.api_keys.c.id == key_id).values(last_used_at=now)
            )
    return caller


def _aware(value: Any) -> Any:
    # SQLite returns naive datetimes for timezone-aware columns; they are stored in UTC.
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
