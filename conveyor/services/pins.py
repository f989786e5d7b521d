"""Pins: a release kept in an environment. Automatic deployments and trains leave a pinned
project alone there, and a deployment of another of its releases is refused until it is
unpinned (``domain.holds``). Pinning needs DeploymentCreate where the pin holds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import Environment, Project, key
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from conveyor.domain.holds import Pin, pin_refusal
from conveyor.services.config import load, load_outline, public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.services.documents import resolve
from conveyor.services.releases import find_release
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
PIN = t.release_pins.c
MAX_REASON = 2000


def _query() -> Any:
    return select(
        PIN.project_id,
        PIN.environment_id,
        PIN.release_id,
        PIN.reason,
        PIN.pinned_by,
        PIN.pinned_at,
        t.releases.c.version,
    ).join(t.releases, t.releases.c.id == PIN.release_id)


async def pins_in(session: Any, environment_id: int, loaded: Loaded) -> dict[str, Pin]:
    """Project (key) -> the release pinned in the environment."""
    rows = await session.execute(_query().where(PIN.environment_id == environment_id))
    out = {}
    for r in rows:
        name = loaded.name_of("projects", r.project_id)
        if name is not None:
            out[key(name)] = Pin(name, r.version, r.reason, r.pinned_by)
    return out


async def pin_of(session: Any, project: str, project_id: int, environment_id: int) -> Pin | None:
    row = (
        await session.execute(
            _query().where(PIN.project_id == project_id, PIN.environment_id == environment_id)
        )
    ).first()
    return Pin(project, row.version, row.reason, row.pinned_by) if row else None


async def pinned_children(services: Services, environment_id: int) -> dict[str, Pin]:
    """What a train's deploy_release steps must leave alone in the environment."""
    loaded = await load(services)
    async with services.read() as session:
        return await pins_in(session, environment_id, loaded)


async def automatic_refusal(
    services: Services, project: str, version: str, environment: str
) -> str | None:
    """Why an automatic deployment of ``version`` skips ``environment`` (a pin holds another
    release there); None when it may go."""
    loaded = await load(services)
    project_id = loaded.id_of("projects", project)
    env_id = loaded.id_of("environments", environment)
    if project_id is None or env_id is None:
        return None
    async with services.read() as session:
        pin = await pin_of(session, project, project_id, env_id)
    if pin is None or pin_refusal(pin, version, environment) is None:
        return None
    return pin.describe(environment)


def _as_dict(row: Any, project: str, environment: str) -> dict[str, Any]:
    return {
        "project": project,
        "environment": environment,
        "release": public_id("releases", row.release_id),
        "version": row.version,
        "reason": row.reason,
        "pinned_by": row.pinned_by,
        "pinned_at": iso(row.pinned_at),
    }


def _resolve(
    loaded: Loaded, project_ref: str, environment: str
) -> tuple[Project, int, Environment, int]:
    project = resolve(loaded, "projects", project_ref)
    env = resolve(loaded, "environments", environment)
    project_id = loaded.id_of("projects", project.name)
    env_id = loaded.id_of("environments", env.name)
    assert project_id is not None and env_id is not None
    return project, project_id, env, env_id


def reason_given(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("give a reason (--reason): the people it stops read it")
    if len(reason) > MAX_REASON:
        raise ValidationFailed(f"the reason is longer than {MAX_REASON} characters")
    return reason


async def pin(
    services: Services,
    caller: Caller,
    project_ref: str,
    version: str,
    environment: str,
    reason: str,
) -> dict[str, Any]:
    """Pin the release current in ``environment`` there (replacing an earlier pin's reason)."""
    loaded = await load(services)
    project, project_id, env, env_id = _resolve(loaded, project_ref, environment)
    ref = perms.ProjectRef(project.name, project.group)
    docs = [public_id("projects", project_id), public_id("environments", env_id)]
    release = await find_release(services, project_id, version)
    async with services.tx(caller) as tx:
        tx.require(
            P.DeploymentCreate,
            project=ref,
            environment=env.name,
            documents=docs,
            project_id=project_id,
            environment_id=env_id,
        )
        reason = reason_given(reason)
        if release is None:
            raise NotFound(f"{project.name} has no release {version}")
        current = (
            await tx.session.execute(
                select(t.dashboard.c.success_release_id, t.dashboard.c.success_version).where(
                    t.dashboard.c.project_id == project_id,
                    t.dashboard.c.environment_id == env_id,
                )
            )
        ).first()
        if current is None or current.success_release_id != release.id:
            now = (
                f"{current.success_version} is"
                if current and current.success_version
                else ("nothing is")
            )
            raise Conflict(
                f"{project.name} {release.version} is not the current release in {env.name} "
                f"({now}): only the release deployed there successfully last can be pinned"
            )
        where = (PIN.project_id == project_id, PIN.environment_id == env_id)
        before = (await tx.session.execute(select(PIN.reason).where(*where))).first()
        await tx.session.execute(delete(t.release_pins).where(*where))
        await tx.session.execute(
            t.release_pins.insert().values(
                project_id=project_id,
                environment_id=env_id,
                release_id=release.id,
                reason=reason,
                pinned_by=caller.username,
                pinned_at=tx.now,
            )
        )
        docs.append(public_id("releases", release.id))
        await tx.audit(
            Category.RELEASE_PINNED,
            f"{caller.username} pinned {project.name} {release.version} in {env.name}: {reason}",
            documents=docs,
            details={
                "version": release.version,
                "environment": env.name,
                "reason": reason,
                "previous_reason": before.reason if before else None,
            },
            project_id=project_id,
            environment_id=env_id,
        )
        row = (await tx.session.execute(_query().where(*where))).one()
    return _as_dict(row, project.name, env.name)


async def unpin(
    services: Services, caller: Caller, project_ref: str, environment: str
) -> dict[str, Any]:
    """Remove the pin of ``project`` in ``environment``; what it was is returned and audited."""
    loaded = await load(services)
    project, project_id, env, env_id = _resolve(loaded, project_ref, environment)
    docs = [public_id("projects", project_id), public_id("environments", env_id)]
    async with services.tx(caller) as tx:
        tx.require(
            P.DeploymentCreate,
            project=perms.ProjectRef(project.name, project.group),
            environment=env.name,
            documents=docs,
            project_id=project_id,
            environment_id=env_id,
        )
        where = (PIN.project_id == project_id, PIN.environment_id == env_id)
        row = (await tx.session.execute(_query().where(*where))).first()
        if row is None:
            raise NotFound(f"{project.name} is not pinned in {env.name}")
        await tx.session.execute(delete(t.release_pins).where(*where))
        docs.append(public_id("releases", row.release_id))
        await tx.audit(
            Category.RELEASE_UNPINNED,
            f"{caller.username} unpinned {project.name} {row.version} in {env.name}",
            documents=docs,
            details={
                "version": row.version,
                "environment": env.name,
                "pinned_by": row.pinned_by,
                "reason": row.reason,
            },
            project_id=project_id,
            environment_id=env_id,
        )
    return _as_dict(row, project.name, env.name)


async def list_pins(services: Services, caller: Caller, project_ref: str) -> list[dict[str, Any]]:
    """The pins of a project, in environment order (those environments the caller may view)."""
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    project_id = loaded.id_of("projects", project.name)
    decision = perms.authorize(
        caller.principal, P.ReleaseView, project=perms.ProjectRef(project.name, project.group)
    )
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission="ReleaseView")
    async with services.read() as session:
        rows = {
            r.environment_id: r
            for r in await session.execute(_query().where(PIN.project_id == project_id))
        }
    return [
        _as_dict(rows[env_id], project.name, env.name)
        for env, env_id in _environments(loaded, caller)
        if env_id in rows
    ]


def _environments(loaded: Loaded, caller: Caller) -> Iterable[tuple[Environment, int]]:
    for env in loaded.model.environments:
        env_id = loaded.id_of("environments", env.name)
        if env_id is not None and perms.allows(
            caller.principal, P.EnvironmentView, environment=env.name
        ):
            yield env, env_id


async def release_controls(
    services: Services, caller: Caller, project_ref: str, release_id: int
) -> dict[str, Any]:
    """What the release page shows and offers: for each environment the caller may view, the
    project's pin there, whether this release is current there (so it can be pinned), and
    whether the caller may pin or unpin there; and whether they may block the release."""
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    project_id = loaded.id_of("projects", project.name)
    ref = perms.ProjectRef(project.name, project.group)
    async with services.read() as session:
        pinned = {
            r.environment_id: r
            for r in await session.execute(_query().where(PIN.project_id == project_id))
        }
        current = {
            r.environment_id: r.success_release_id
            for r in await session.execute(
                select(t.dashboard.c.environment_id, t.dashboard.c.success_release_id).where(
                    t.dashboard.c.project_id == project_id
                )
            )
        }
    environments = []
    for env, env_id in _environments(loaded, caller):
        row = pinned.get(env_id)
        environments.append(
            {
                "name": env.name,
                "pin": _as_dict(row, project.name, env.name) if row else None,
                "current": current.get(env_id) == release_id,
                "may_pin": perms.allows(
                    caller.principal, P.DeploymentCreate, project=ref, environment=env.name
                ),
            }
        )
    return {
        "environments": environments,
        "may_block": perms.allows(caller.principal, P.ReleaseEdit, project=ref),
    }


async def pinned_cells(services: Services) -> dict[tuple[str, str], Pin]:
    """(project, environment) -> its pin, for the dashboard's pin marks (a handful of rows)."""
    loaded = await load_outline(services)
    async with services.read() as session:
        rows = (await session.execute(_query())).all()
    out = {}
    for r in rows:
        project = loaded.name_of("projects", r.project_id)
        env = loaded.name_of("environments", r.environment_id)
        if project is not None and env is not None:
            out[(project, env)] = Pin(project, r.version, r.reason, r.pinned_by)
    return out
