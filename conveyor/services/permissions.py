"""'Why can(not) this person do that?': answered by the same evaluation that enforces."""

from __future__ import annotations

from typing import Any

from conveyor.domain import permissions as perms
from conveyor.domain.documents import key
from conveyor.domain.errors import NotFound, PermissionDenied, ValidationFailed
from conveyor.services.access import get_user, principal_of
from conveyor.services.config import load
from conveyor.services.core import Caller, Services


def _may_inspect(caller: Caller, username: str) -> None:
    if key(caller.username) == key(username):
        return
    decision = perms.authorize(caller.principal, perms.Permission.UserView)
    if not decision.allowed:
        raise PermissionDenied(
            f"to see what {username} may do you need UserView: {decision.reason}",
            permission="UserView",
        )


def _granted(decision: perms.Decision) -> list[dict[str, str]]:
    return [{"team": g.team, "role": g.role} for g in decision.granted_by]


async def explain(
    services: Services,
    caller: Caller,
    username: str,
    permission: str,
    *,
    project: str | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    _may_inspect(caller, username)
    parsed = perms.parse_permission(permission)
    if parsed is None:
        raise ValidationFailed(
            f'"{permission}" is not a permission; `conveyor permissions list` shows them all'
        )
    loaded = await load(services)
    model = loaded.model
    ref = None
    if project:
        doc = model.get("projects", project)
        if doc is None:
            raise NotFound(f'project "{project}" does not exist')
        ref = perms.ProjectRef(doc.name, doc.group)
    env_name = None
    if environment:
        env = model.get("environments", environment)
        if env is None:
            raise NotFound(f'environment "{environment}" does not exist')
        env_name = env.name
    async with services.read() as session:
        user = await get_user(session, username)
        principal = await principal_of(session, user.username, user.active)
    decision = perms.explain(principal, parsed, project=ref, environment=env_name)
    return {
        "user": user.username,
        "permission": str(parsed),
        "project": ref.name if ref else None,
        "environment": env_name,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "granted_by": _granted(decision),
    }


async def matrix(
    services: Services, caller: Caller, username: str, permissions: list[str] | None = None
) -> dict[str, Any]:
    _may_inspect(caller, username)
    wanted: list[perms.Permission] | None = None
    if permissions:
        wanted = []
        for name in permissions:
            parsed = perms.parse_permission(name)
            if parsed is None:
                raise ValidationFailed(f'"{name}" is not a permission')
            wanted.append(parsed)
    model = (await load(services)).model
    async with services.read() as session:
        user = await get_user(session, username)
        principal = await principal_of(session, user.username, user.active)
    projects = [perms.ProjectRef(p.name, p.group) for p in model.projects]
    environments = [e.name for e in model.environments]
    cells = perms.matrix(principal, projects, environments, wanted)
    return {
        "user": user.username,
        "projects": [p.name for p in projects],
        "environments": environments,
        "cells": [
            {
                "permission": str(c.permission),
                "project": c.project,
                "environment": c.environment,
                "allowed": c.allowed,
                "granted_by": [{"team": g.team, "role": g.role} for g in c.granted_by],
            }
            for c in cells
        ],
    }


def catalogue() -> list[dict[str, Any]]:
    return [
        {
            "permission": str(info.permission),
            "description": info.description,
            "scoped_by": sorted(str(d) for d in info.dimensions),
            "system": info.system,
        }
        for info in perms.CATALOGUE.values()
    ]


def roles() -> list[dict[str, Any]]:
    return [
        {
            "name": r.name,
            "description": r.description,
            "permissions": sorted(str(p) for p in r.permissions),
        }
        for r in perms.BUILT_IN_ROLES
    ]
