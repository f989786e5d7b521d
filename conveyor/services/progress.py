"""Where releases have been and may go next: the lifecycle progress a person reads before deploying.

A release's progress answers, per environment of its lifecycle, what happened there (the latest
deployment), whether the lifecycle allows a deployment now and whether the reader may make it,
each with its reason. A project's progress is a page of its releases against its environments.
Both read only the deployments of the releases asked about.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from conveyor.domain import channels as ch
from conveyor.domain import lifecycle as lc
from conveyor.domain import permissions as perms
from conveyor.domain.documents import Lifecycle, Project, key
from conveyor.domain.visibility import sees_deployment
from conveyor.services.config import load, parse_public_id, public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.services.deployments import env_names, outcome
from conveyor.services.documents import resolve
from conveyor.services.releases import get_release, list_releases
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
D = t.deployments.c
# A release is deployed a handful of times; this bounds a pathological one.
MAX_DEPLOYMENTS = 1000


def _lifecycle_environments(lifecycle: Lifecycle | None) -> list[str]:
    if lifecycle is None:
        return []
    seen: set[str] = set()
    out: list[str] = []
    for phase in lifecycle.phases:
        for env in (*phase.environments, *phase.automatic):
            if key(env) not in seen:
                seen.add(key(env))
                out.append(env)
    return out


def _cell(row: Any, names: dict[int, str]) -> dict[str, Any]:
    return {
        "deployment": public_id("deployments", row.id),
        "environment": names.get(row.environment_id, "?"),
        "state": row.state,
        "task": public_id("tasks", row.task_id) if row.task_id else None,
        "created_by": row.created_by,
        "queued": iso(row.created_at),
        "completed": iso(row.completed_at),
    }


def _project(loaded: Loaded, ref: str) -> tuple[Project, perms.ProjectRef, Lifecycle | None]:
    project = resolve(loaded, "projects", ref)
    assert isinstance(project, Project)
    lifecycle = loaded.model.get("lifecycles", project.lifecycle)
    return project, perms.ProjectRef(project.name, project.group), lifecycle


async def release_progress(
    services: Services, caller: Caller, project_ref: str, version: str
) -> dict[str, Any]:
    """Per environment of the lifecycle: the latest deployment, and whether one may be made now."""
    release = await get_release(services, caller, project_ref, version)  # checks ReleaseView
    loaded = await load(services)
    project, ref, lifecycle = _project(loaded, project_ref)
    # A release follows its channel's lifecycle (by default the project's).
    lifecycle = loaded.model.get("lifecycles", ch.lifecycle_of(project, release.channel))
    names = env_names(loaded)
    async with services.read() as session:
        rows = (
            await session.execute(
                select(t.deployments)
                .where(D.release_id == release.id)
                .order_by(D.id.desc())
                .limit(MAX_DEPLOYMENTS)
            )
        ).all()
    attempts = [lc.Attempt(names.get(r.environment_id, "?"), outcome(r.state)) for r in rows]
    environments = []
    for env in _lifecycle_environments(lifecycle):
        assert lifecycle is not None
        allowed = lc.can_deploy(lifecycle, attempts, env)
        may = perms.authorize(caller.principal, P.DeploymentCreate, project=ref, environment=env)
        viewable = sees_deployment(caller.principal, ref, env)
        history = [
            _cell(r, names) for r in rows if key(names.get(r.environment_id, "")) == key(env)
        ]
        environments.append(
            {
                "name": env,
                "latest": history[0] if history and viewable else None,
                "deployments": len(history) if viewable else 0,
                "lifecycle_allows": allowed.allowed,
                "lifecycle_reason": allowed.reason,
                "may_deploy": may.allowed,
                "permission_reason": may.reason,
                "can_deploy": allowed.allowed and may.allowed and not project.disabled,
            }
        )
    phases = lc.progression(lifecycle, attempts) if lifecycle is not None else []
    return {
        "project": project.name,
        "version": release.version,
        "lifecycle": lifecycle.name if lifecycle else None,
        "phases": [
            {
                "name": p.name,
                "state": p.state.value,
                "optional": p.optional,
                "environments": list(p.environments),
                "succeeded": list(p.succeeded),
            }
            for p in phases
        ],
        "environments": environments,
    }


async def project_progress(
    services: Services, caller: Caller, project_ref: str, *, offset: int = 0, limit: int = 20
) -> dict[str, Any]:
    """A page of the project's releases (highest version first) against its environments."""
    offset, limit = max(offset, 0), min(max(limit, 1), 100)
    found = await list_releases(services, caller, project_ref, limit=offset + limit + 1)
    page = found[offset : offset + limit]
    loaded = await load(services)
    project, ref, _ = _project(loaded, project_ref)
    names = env_names(loaded)
    # Every environment a release may reach: the project's lifecycle's and its channels'.
    environments = ch.reachable(
        project, lambda name: _lifecycle_environments(loaded.model.get("lifecycles", name))
    )
    visible = {key(env): env for env in environments if sees_deployment(caller.principal, ref, env)}
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    if page:
        async with services.read() as session:
            rows = (
                await session.execute(
                    select(t.deployments)
                    .where(D.release_id.in_([r.id for r in page]))
                    .order_by(D.id)
                    .limit(MAX_DEPLOYMENTS * len(page))
                )
            ).all()
        for row in rows:
            env = visible.get(key(names.get(row.environment_id, "")))
            if env is not None:
                latest[(row.release_id, env)] = _cell(row, names)
    return {
        "project": project.name,
        "environments": environments,
        "releases": [
            {
                "version": r.version,
                "created": iso(r.created_at),
                "created_by": r.created_by,
                "notes": r.notes,
                "cells": {env: latest.get((r.id, env)) for env in environments},
                **({"channel": r.channel} if project.channels else {}),
            }
            for r in page
        ],
        "offset": offset,
        "limit": limit,
        "more": len(found) > offset + limit,
    }


async def release_of_deployment(services: Services, caller: Caller, deployment: str) -> str | None:
    """The release version a deployment ships (``None`` if unknown or not the reader's to see)."""
    number = parse_public_id("deployments", deployment)
    if number is None:
        return None
    loaded = await load(services)
    async with services.read() as session:
        row = (
            await session.execute(
                select(D.project_id, D.environment_id, t.releases.c.version)
                .join(t.releases, t.releases.c.id == D.release_id)
                .where(D.id == number)
            )
        ).first()
    if row is None:
        return None
    name = loaded.name_of("projects", row.project_id)
    project = loaded.model.get("projects", name) if name else None
    env = loaded.name_of("environments", row.environment_id)
    ref = perms.ProjectRef(project.name, project.group) if project is not None else None
    if ref is None or env is None or not sees_deployment(caller.principal, ref, env):
        return None
    return str(row.version)
