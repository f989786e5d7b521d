"""Users, passwords and API keys; and the first set-up of a database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import permissions as perms
from conveyor.domain import throttling
from conveyor.domain.audit import Category
from conveyor.domain.documents import ScopedRole, Team, User, key
from conveyor.domain.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    Problem,
    ValidationFailed,
)
from conveyor.domain.model import Model
from conveyor.services import throttle
from conveyor.services.access import find_user, get_user
from conveyor.services.config import built_in_roles, change_config, parse_public_id, public_id
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.credentials import (
    MIN_PASSWORD,
    hash_api_key,
    new_api_key,
    new_password,
)
from conveyor.services.documents import authorise_edit
from conveyor.store import tables as t

ADMIN_TEAM = "Administrators"
ADMIN_ROLE = "System Administrator"
MAX_KEY_NAME = 200


@dataclass(frozen=True)
class InitResult:
    created: bool
    username: str | None = None
    password: str | None = None
    api_key: str | None = None


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created": self.created_at.isoformat(),
            "last_used": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked": self.revoked_at.isoformat() if self.revoked_at else None,
        }


async def sync_built_in_roles(services: Services) -> None:
    """Built-in roles are managed by the product: bring them to this version's definition."""
    roles = built_in_roles()

    def mutate(model: Model) -> Model:
        for role in roles:
            model = model.with_doc("user_roles", role)
        return model

    await change_config(services, system_caller(), mutate)


async def initialise(services: Services) -> InitResult:
    """Create built-in roles, and on a new database the admin user, team and API key."""
    await sync_built_in_roles(services)
    async with services.read() as session:
        count = (await session.execute(select(func.count()).select_from(t.users))).scalar_one()
    if count:
        return InitResult(created=False)
    password = new_password()

    def mutate(model: Model) -> Model:
        model = model.with_doc(
            "users", User(username="admin", display_name="Administrator", email="")
        )
        return model.with_doc(
            "teams",
            Team(
                name=ADMIN_TEAM,
                description="Administers Conveyor: every permission, everywhere.",
                members=("admin",),
                roles=(ScopedRole(role=ADMIN_ROLE),),
            ),
        )

    await change_config(services, system_caller(), mutate)
    await set_password(services, system_caller(), "admin", password)
    api_key = await create_api_key(services, system_caller(), "admin", "created by admin init")
    return InitResult(created=True, username="admin", password=password, api_key=api_key)


def _may_manage(caller: Caller, username: str) -> None:
    if key(caller.username) == key(username):
        return
    decision = perms.authorize(caller.principal, perms.Permission.UserEdit)
    if not decision.allowed:
        raise PermissionDenied(
            f"only {username} or someone with UserEdit may do this: {decision.reason}",
            permission="UserEdit",
        )


async def _may_change(services: Services, caller: Caller, username: str) -> None:
    """``_may_manage`` for a change: a refusal is audited, as every refused change is."""
    if key(caller.username) == key(username):
        return
    async with services.tx(caller) as tx:
        try:
            tx.require(perms.Permission.UserEdit)
        except PermissionDenied as exc:
            raise PermissionDenied(
                f"only {username} or someone with UserEdit may do this: {exc.message}",
                permission="UserEdit",
            ) from None


async def add_user(
    services: Services,
    caller: Caller,
    username: str,
    *,
    email: str = "",
    display_name: str = "",
    service_account: bool = False,
    password: str | None = None,
) -> None:
    # Authorised before what was sent is validated, and audited if refused, as the API does.
    async with services.tx(caller) as tx:
        tx.require(perms.Permission.UserEdit)
    # Checked first: a refused password must not leave a user behind without one.
    if password is not None and service_account:
        raise ValidationFailed(f'"{username}" is a service account: it signs in with API keys only')
    if password is not None and len(password) < MIN_PASSWORD:
        raise ValidationFailed(f"a password needs at least {MIN_PASSWORD} characters")

    def mutate(model: Model) -> Model:
        if model.has("users", username):
            raise Conflict(f'user "{username}" already exists')
        return model.with_doc(
            "users",
            User(
                username=username,
                email=email,
                display_name=display_name,
                service_account=service_account,
            ),
        )

    await change_config(services, caller, mutate)
    if password is not None:
        await set_password(services, caller, username, password)


async def set_password(
    services: Services,
    caller: Caller,
    username: str,
    password: str,
    *,
    current: str | None = None,
    keep_session: str | None = None,
    must_change: bool = False,
    required: bool = False,
) -> None:
    """Set a password. One's own needs the current one, checked and throttled like a sign-in
    (a borrowed session or key must not be enough to take the account over); someone with
    UserEdit sets another person's without it. The user's web sessions end, all but
    ``keep_session`` (the token hash of the session making the change), in the same
    transaction as the change and its audit event (which never holds a password).

    ``must_change`` (someone else's password) makes the next sign-in ask for a new one;
    ``required`` is that new one, given without the current password: only while asked for."""
    await _may_change(services, caller, username)
    own = not caller.is_system and key(caller.username) == key(username)
    if own and must_change:
        raise ValidationFailed("you choose your own password: nobody needs to ask you for it")
    if own and not required:
        await _check_current(services, caller, current)
        if password == current:
            raise ValidationFailed("the new password is the same as the current one")
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed(f"a password needs at least {MIN_PASSWORD} characters")
    # Hashing takes most of a second by design: do it off the event loop, outside the lock.
    password_hash = await asyncio.to_thread(services.passwords.hash, password)
    async with services.tx(caller) as tx:
        user = await get_user(tx.session, username)
        if user.service_account:
            raise ValidationFailed(
                f'"{username}" is a service account: it signs in with API keys only'
            )
        if required and not (own and await _must_change(tx.session, user.id)):
            raise ValidationFailed("give your current password to set a new one")
        await tx.session.execute(
            update(t.users)
            .where(t.users.c.id == user.id)
            .values(
                password_hash=password_hash, must_change_password=must_change, updated_at=tx.now
            )
        )
        ending = delete(t.web_sessions).where(t.web_sessions.c.user_id == user.id)
        if keep_session is not None:
            ending = ending.where(t.web_sessions.c.token_hash != keep_session)
        ended = len((await tx.session.execute(ending.returning(t.web_sessions.c.id))).all())
        signed_out = f"; {ended} other session{'s' if ended != 1 else ''} ended" if ended else ""
        await tx.audit(
            Category.PASSWORD_CHANGED,
            f'{caller.username} set the password of "{user.username}"{signed_out}',
            documents=[public_id("users", user.id)],
            details={"own": own, "sessions_ended": ended}
            | ({"must_change": True} if must_change else {}),
        )


async def _must_change(session: AsyncSession, user_id: int) -> bool:
    flag = await session.execute(
        select(t.users.c.must_change_password).where(t.users.c.id == user_id)
    )
    return bool(flag.scalar_one_or_none())


async def password_state(services: Services, caller: Caller, username: str) -> str:
    """How a user signs in, in a few words: for those who may view users."""
    if key(caller.username) != key(username):
        async with services.tx(caller) as tx:
            tx.require(perms.Permission.UserView)
    async with services.read() as session:
        user = await get_user(session, username)
        must_change = await _must_change(session, user.id)
    if user.service_account:
        return "API keys only (a service account)"
    if not user.password_hash:
        return "no password set: cannot sign in"
    return "set; must be changed at the next sign-in" if must_change else "set"


async def reset_password(
    services: Services, caller: Caller, username: str, *, must_change: bool
) -> str:
    """A new generated password for someone else, returned once (only its hash is kept)."""
    password = new_password()
    await set_password(services, caller, username, password, must_change=must_change)
    return password


async def set_active(services: Services, caller: Caller, username: str, active: bool) -> None:
    """Deactivate (or reactivate) a user: a change of their document, audited as through the
    API or ``apply``. An inactive user is refused everything; their web sessions end."""
    await authorise_edit(services, caller, "users", username)
    if not active and key(caller.username) == key(username):
        raise Conflict("you cannot deactivate yourself: ask another administrator")

    def mutate(model: Model) -> Model:
        user = model.get("users", username)
        if user is None:
            raise NotFound(f'user "{username}" does not exist')
        return model.with_doc("users", replace(user, active=active))

    await change_config(services, caller, mutate, edits=(("users", username, "document"),))
    if not active:
        # Already refused by every request (sessions resume only for active users): this
        # removes what is left, so that a reactivation does not bring old sessions back.
        async with services.write() as session:
            user = await get_user(session, username)
            await session.execute(delete(t.web_sessions).where(t.web_sessions.c.user_id == user.id))


async def change_team(
    services: Services, caller: Caller, team: str, change: Callable[[Model, Team], Team]
) -> None:
    """One change to a team (members, roles, scopes): TeamEdit, checked before anything else,
    then the change of the team's document, audited as through the API or ``apply``."""
    await authorise_edit(services, caller, "teams", team)

    def mutate(model: Model) -> Model:
        found = model.get("teams", team)
        if not isinstance(found, Team):
            raise NotFound(f'team "{team}" does not exist')
        return model.with_doc("teams", change(model, found))

    await change_config(services, caller, mutate, edits=(("teams", team, "document"),))


def with_member(model: Model, team: Team, username: str, member: bool) -> Team:
    """``team`` with ``username`` in it (or not); an unknown user is refused."""
    user = model.get("users", username)
    if user is None:
        raise NotFound(f'user "{username}" does not exist')
    others = tuple(m for m in team.members if key(m) != key(username))
    return replace(team, members=(*others, user.username) if member else others)


def with_role(
    model: Model, team: Team, index: int | None, role: ScopedRole | None, was: str = ""
) -> Team:
    """``team`` with its ``index``-th role replaced by ``role`` (removed when ``None``), or
    ``role`` added when ``index`` is ``None``. ``was`` is the role the editor saw there: if
    someone changed the roles meanwhile, the edit is refused rather than applied to another.
    An unknown role is refused by its name (not as a path into the team's document)."""
    if role is not None and model.get("user_roles", role.role) is None:
        raise ValidationFailed(
            f'the user role "{role.role}" does not exist: choose one of the roles listed'
        )
    roles = list(team.roles)
    if index is None:
        assert role is not None
        return replace(team, roles=(*roles, role))
    if not 0 <= index < len(roles) or (was and key(roles[index].role) != key(was)):
        raise Conflict(f'the roles of team "{team.name}" changed meanwhile: reload and try again')
    if role is None:
        del roles[index]
    else:
        roles[index] = role
    return replace(team, roles=tuple(roles))


async def _check_current(services: Services, caller: Caller, current: str | None) -> None:
    if not current:
        raise ValidationFailed(
            Problem(("current_password",), "give your current password to set a new one")
        )
    now = services.clock()
    attempt = await throttle.charge(
        services, throttling.counters(key(caller.username), caller.ip_address), now
    )
    if attempt.wait:
        raise throttle.SignInThrottled(
            f"Too many wrong passwords. Wait {throttling.in_words(attempt.wait)}, then try again.",
            attempt.wait,
        )
    async with services.read() as session:
        user = await find_user(session, caller.username)
    stored = user.password_hash if user is not None else None
    if not await asyncio.to_thread(services.passwords.verify, stored, current):
        raise ValidationFailed("the current password is wrong")
    async with services.write() as session:
        await throttle.refund(session, attempt)


async def create_api_key(services: Services, caller: Caller, username: str, name: str) -> str:
    """A new API key for a user; the key is returned once and only its hash is kept."""
    await _may_change(services, caller, username)
    if len(name) > MAX_KEY_NAME or "\x00" in name:
        raise ValidationFailed(
            Problem(("name",), f"must be at most {MAX_KEY_NAME} characters, without NUL")
        )
    api_key = new_api_key()
    async with services.tx(caller) as tx:
        user = await get_user(tx.session, username)
        if not user.active:
            raise ValidationFailed(f'user "{username}" is inactive')
        result = await tx.session.execute(
            insert(t.api_keys)
            .values(
                user_id=user.id,
                name=name or "API key",
                key_hash=hash_api_key(api_key),
                prefix=api_key[:8],
                created_at=tx.now,
            )
            .returning(t.api_keys.c.id)
        )
        key_id = int(result.scalar_one())
        await tx.audit(
            Category.API_KEY_CREATED,
            f'{caller.username} created API key "{name}" ({api_key[:8]}…) for "{user.username}"',
            documents=[public_id("users", user.id), public_id("api_keys", key_id)],
        )
    return api_key


async def list_api_keys(services: Services, caller: Caller, username: str) -> list[ApiKeyInfo]:
    _may_manage(caller, username)
    async with services.read() as session:
        user = await get_user(session, username)
        rows = (
            await session.execute(
                select(t.api_keys).where(t.api_keys.c.user_id == user.id).order_by(t.api_keys.c.id)
            )
        ).all()
    return [
        ApiKeyInfo(
            id=public_id("api_keys", r.id),
            name=r.name,
            prefix=r.prefix,
            created_at=r.created_at,
            last_used_at=r.last_used_at,
            revoked_at=r.revoked_at,
        )
        for r in rows
    ]


async def revoke_api_key(services: Services, caller: Caller, username: str, key_id: str) -> None:
    await _may_change(services, caller, username)
    number = parse_public_id("api_keys", key_id)
    if number is None:
        raise NotFound(f'"{key_id}" is not an API key id (they look like ApiKeys-12)')
    async with services.tx(caller) as tx:
        user = await get_user(tx.session, username)
        row = (
            await tx.session.execute(
                select(t.api_keys).where(t.api_keys.c.id == number, t.api_keys.c.user_id == user.id)
            )
        ).first()
        if row is None:
            raise NotFound(f'user "{username}" has no API key {key_id}')
        revoked = await tx.session.execute(
            update(t.api_keys)
            .where(t.api_keys.c.id == row.id, t.api_keys.c.revoked_at.is_(None))
            .values(revoked_at=tx.now)
            .returning(t.api_keys.c.id)
        )
        if revoked.first() is None:
            # Revoked already, maybe by a request at the same moment: one revocation, one event.
            return
        await tx.audit(
            Category.API_KEY_REVOKED,
            f'{caller.username} revoked API key "{row.name}" ({row.prefix}…) of "{user.username}"',
            documents=[public_id("users", user.id), public_id("api_keys", row.id)],
        )


def deactivated(model: Model, username: str) -> Model:
    user = model.get("users", username)
    if user is None:
        raise NotFound(f'user "{username}" does not exist')
    return model.with_doc("users", replace(user, active=False))
