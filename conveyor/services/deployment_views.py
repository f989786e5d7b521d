"""What deployments a person sees: the paged deployment list and the dashboard.

Both decide visibility by one rule, ``domain.visibility`` (``DeploymentView`` for the project and
environment). The list applies it in SQL, so a page holds ``limit`` visible deployments whenever
that many exist; paging is by keyset (``before`` = the last id of the previous page), so pages
never overlap or skip rows while deployments are being added.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select

from conveyor.domain import permissions as perms
from conveyor.domain.errors import ValidationFailed
from conveyor.domain.runtime import TaskState
from conveyor.domain.visibility import DeploymentScope, deployment_scope
from conveyor.services.config import load_outline, public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.services.documents import resolve
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
D = t.deployments.c
MAX_PAGE = 1000
STATES = tuple(state.value for state in TaskState)


def _scope(loaded: Loaded, caller: Caller) -> DeploymentScope:
    model = loaded.model
    return deployment_scope(
        caller.principal,
        [perms.ProjectRef(p.name, p.group) for p in model.projects],
        [e.name for e in model.environments],
    )


def _visible_in_sql(
    loaded: Loaded, scope: DeploymentScope, *, sqlite: bool
) -> ColumnElement[bool] | None:
    """The scope as a WHERE clause (``None``: no filter), one term per environment.

    The page is found by walking the primary key backwards and stopping after ``limit`` visible
    rows, so its cost does not grow with the history. PostgreSQL picks that plan from its
    statistics; SQLite would rather gather every visible row through the (project, environment)
    index and sort them all, so there the columns are wrapped (``+ 0``) to keep it off that index.
    """
    if scope.everything:
        return None
    project_col = D.project_id + 0 if sqlite else D.project_id
    env_col = D.environment_id + 0 if sqlite else D.environment_id
    every_project = len(loaded.model.projects)
    terms: list[ColumnElement[bool]] = []
    for environment, projects in scope.projects_by_environment.items():
        env_id = loaded.id_of("environments", environment)
        if env_id is None:
            continue
        if len(projects) == every_project:
            terms.append(env_col == env_id)
            continue
        ids = [i for i in (loaded.id_of("projects", name) for name in projects) if i is not None]
        terms.append(and_(env_col == env_id, project_col.in_(sorted(ids))))
    return or_(*terms) if terms else false()


def _parse_state(state: str) -> str:
    wanted = state.strip().lower()
    if wanted not in STATES:
        raise ValidationFailed(
            f"state {state!r} is not a deployment state; use one of: {', '.join(STATES)}"
        )
    return wanted


async def list_deployments(
    services: Services,
    caller: Caller,
    *,
    project: str | None = None,
    environment: str | None = None,
    state: str | None = None,
    created_by: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first, only those the caller may see; ``before`` (a deployment number) pages;
    ``created_by``: only those this person queued (any case)."""
    loaded = await load_outline(services)
    query = select(t.deployments, t.releases.c.version).join(
        t.releases, t.releases.c.id == D.release_id
    )
    if project:
        doc = resolve(loaded, "projects", project)
        query = query.where(D.project_id == loaded.id_of("projects", doc.name))
    if environment:
        env = resolve(loaded, "environments", environment)
        query = query.where(D.environment_id == loaded.id_of("environments", env.name))
    if state:
        query = query.where(D.state == _parse_state(state))
    if created_by and created_by.strip():
        query = query.where(func.lower(D.created_by) == created_by.strip().lower())
    visible = _visible_in_sql(loaded, _scope(loaded, caller), sqlite=services.is_sqlite)
    if visible is not None:
        query = query.where(visible)
    if before is not None:
        query = query.where(D.id < before)
    query = query.order_by(D.id.desc()).limit(min(max(limit, 1), MAX_PAGE))
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    project_names = _names(loaded, "projects")
    env_names = _names(loaded, "environments")
    return [
        {
            "id": public_id("deployments", r.id),
            "project": project_names.get(r.project_id),
            "release": r.version,
            "environment": env_names.get(r.environment_id),
            "state": r.state,
            "task": public_id("tasks", r.task_id) if r.task_id else None,
            "parent": public_id("deployments", r.parent_id) if r.parent_id else None,
            "created_by": r.created_by,
            "queued": iso(r.created_at),
            "started": iso(r.started_at),
            "completed": iso(r.completed_at),
            "duration": _duration(r.started_at, r.completed_at, services.clock()),
        }
        for r in rows
    ]


def _duration(started: datetime | None, completed: datetime | None, now: datetime) -> int | None:
    """Seconds from start to end (to now while it runs); None before it starts."""
    if started is None:
        return None
    end = _utc(completed) if completed is not None else now
    return max(0, int((end - _utc(started)).total_seconds()))


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for what is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _names(loaded: Loaded, kind: str) -> dict[int, str]:
    """Row id -> name for every document of ``kind``: one dictionary per read, not a lookup per
    row."""
    docs = loaded.model.projects if kind == "projects" else loaded.model.environments
    out: dict[int, str] = {}
    for doc in docs:
        row_id = loaded.id_of(kind, doc.name)
        if row_id is not None:
            out[row_id] = doc.name
    return out


@dataclass(frozen=True, slots=True)
class BoardCell:
    """What one project x environment cell shows: the deployment the projection points at."""

    release: str
    state: str
    task_id: int | None
    deployment_id: int
    completed_at: datetime | None
    success_version: str | None


@dataclass(frozen=True)
class Board:
    """The dashboard a person sees: rows are the projects they may view (by group, in order),
    columns the environments they may view, and the cells whose deployments they may see."""

    environments: list[str]
    projects: list[str]
    groups: dict[str, list[str]]
    cells: dict[tuple[str, str], BoardCell]


async def board(services: Services, caller: Caller) -> Board:
    """The current deployment of each project in each environment, from the projection only."""
    loaded = await load_outline(services)
    async with services.read() as session:
        rows = (await session.execute(select(t.dashboard))).all()
    model = loaded.model
    principal = caller.principal
    environments = [
        e.name
        for e in model.environments
        if perms.allows(principal, P.EnvironmentView, environment=e.name)
    ]
    refs = [perms.ProjectRef(p.name, p.group) for p in model.projects]
    shown = [ref for ref in refs if perms.allows(principal, P.ProjectView, project=ref)]
    scope = deployment_scope(principal, shown, environments)
    project_names = _names(loaded, "projects")
    env_names = _names(loaded, "environments")
    cells: dict[tuple[str, str], BoardCell] = {}
    for r in rows:
        project = project_names.get(r.project_id)
        env = env_names.get(r.environment_id)
        if project is None or env is None or not scope.sees(project, env):
            continue
        completed = r.completed_at
        if completed is not None:  # SQLite hands back naive datetimes for what is UTC
            completed = (
                completed.replace(tzinfo=UTC)
                if completed.tzinfo is None
                else completed.astimezone(UTC)
            )
        cells[(project, env)] = BoardCell(
            r.release_version, r.state, r.task_id, r.deployment_id, completed, r.success_version
        )
    groups: dict[str, list[str]] = {}
    for ref in shown:
        groups.setdefault(ref.group, []).append(ref.name)
    return Board(environments, [ref.name for ref in shown], groups, cells)


async def dashboard(services: Services, caller: Caller) -> dict[str, Any]:
    """The board as the API gives it: cells in row order (projects, then environments)."""
    found = await board(services, caller)
    projects = found.projects
    cells = [
        {
            "project": project,
            "environment": env,
            "release": cell.release,
            "state": cell.state,
            "task": public_id("tasks", cell.task_id) if cell.task_id else None,
            "completed": cell.completed_at.isoformat() if cell.completed_at else None,
            "deployment": public_id("deployments", cell.deployment_id),
            "current_success": cell.success_version,
        }
        for project in projects
        for env in found.environments
        if (cell := found.cells.get((project, env))) is not None
    ]
    return {
        "environments": found.environments,
        "projects": projects,
        "groups": found.groups,
        "cells": cells,
    }
