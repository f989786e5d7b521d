"""Reading tasks, deployments, logs and the dashboard; and canceling tasks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied
from conveyor.services.config import load_outline, public_id
from conveyor.services.core import Caller, Services, Tx, iso, system_caller
from conveyor.services.deployments import TERMINAL
from conveyor.services.interruptions import parse_id
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission


def _iso(value: Any) -> str | None:
    return iso(value)


def _names(loaded: Loaded, row: Any) -> tuple[perms.ProjectRef | None, str | None]:
    project_name = loaded.name_of("projects", row.project_id) if row.project_id else None
    env_name = loaded.name_of("environments", row.environment_id) if row.environment_id else None
    project = loaded.model.get("projects", project_name) if project_name else None
    ref = perms.ProjectRef(project.name, project.group) if project else None
    return ref, env_name


def _check(caller: Caller, permission: P, ref: perms.ProjectRef | None, env: str | None) -> None:
    decision = perms.authorize(caller.principal, permission, project=ref, environment=env)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(permission))


def task_view(loaded: Loaded, row: Any) -> dict[str, Any]:
    ref, env = _names(loaded, row)
    return {
        "id": public_id("tasks", row.id),
        "description": row.description,
        "state": row.state,
        "project": ref.name if ref else None,
        "environment": env,
        "deployment": public_id("deployments", row.deployment_id) if row.deployment_id else None,
        "parent": public_id("tasks", row.parent_task_id) if row.parent_task_id else None,
        "queue_reason": row.queue_reason,
        "waiting_on": row.waiting_on,
        "error": row.error,
        "created": _iso(row.created_at),
        "started": _iso(row.started_at),
        "completed": _iso(row.completed_at),
    }


async def _task_row(session: Any, task: str | int, *, lock: bool = False) -> Any:
    ident = task if isinstance(task, int) else parse_id(task, "tasks")
    query = select(t.tasks).where(t.tasks.c.id == ident)
    # Locked, a cancel decides on the state the engine left, not one it has since changed.
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise NotFound(f"task {public_id('tasks', ident)} does not exist")
    return row


async def get_task(services: Services, caller: Caller, task: str) -> dict[str, Any]:
    loaded = await load_outline(services)
    async with services.read() as session:
        row = await _task_row(session, task)
        ref, env = _names(loaded, row)
        _check(caller, P.TaskView, ref, env)
        steps = (
            await session.execute(
                select(t.task_steps)
                .where(t.task_steps.c.task_id == row.id)
                .order_by(t.task_steps.c.idx)
            )
        ).all()
        children = (
            await session.execute(
                select(t.tasks).where(t.tasks.c.parent_task_id == row.id).order_by(t.tasks.c.id)
            )
        ).all()
    out = task_view(loaded, row)
    out["steps"] = [
        {
            "index": s.idx,
            "name": s.name,
            "type": s.type,
            "state": s.state,
            "reason": s.reason,
            "attempt": s.attempt,
            "child_task": public_id("tasks", s.child_task_id) if s.child_task_id else None,
            "interruption": (
                public_id("interruptions", s.interruption_id) if s.interruption_id else None
            ),
            "started": _iso(s.started_at),
            "completed": _iso(s.completed_at),
        }
        for s in steps
    ]
    out["children"] = [task_view(loaded, c) for c in children]
    return out


async def task_log(
    services: Services, caller: Caller, task: str, *, after: int = 0, limit: int = 1000
) -> dict[str, Any]:
    """Log lines after an offset (the id of the last line read), oldest first."""
    loaded = await load_outline(services)
    async with services.read() as session:
        row = await _task_row(session, task)
        ref, env = _names(loaded, row)
        _check(caller, P.TaskView, ref, env)
        lines = (
            await session.execute(
                select(t.task_logs)
                .where(t.task_logs.c.task_id == row.id, t.task_logs.c.id > after)
                .order_by(t.task_logs.c.id)
                .limit(min(max(limit, 1), 5000))
            )
        ).all()
    return {
        "task": public_id("tasks", row.id),
        "state": row.state,
        "lines": [
            {"offset": r.id, "at": _iso(r.at), "step": r.step, "level": r.level, "line": r.line}
            for r in lines
        ],
        "next": lines[-1].id if lines else after,
        "finished": row.state in TERMINAL,
    }


async def cancel_task(services: Services, caller: Caller, task: str) -> dict[str, Any]:
    loaded = await load_outline(services)
    async with services.tx(caller) as tx:
        row = await _task_row(tx.session, task, lock=True)
        ref, env = _names(loaded, row)
        tx.require(
            P.TaskCancel,
            project=ref,
            environment=env,
            documents=[public_id("tasks", row.id)],
            project_id=row.project_id,
            environment_id=row.environment_id,
        )
        if row.state in TERMINAL:
            raise Conflict(f"{public_id('tasks', row.id)} already ended ({row.state})")
        # Asked already (a double click, or two people at once): one cancel, one event.
        if not row.cancel_requested:
            await _cancel(tx, row)
            await tx.audit(
                Category.TASK_CANCELED,
                f"{caller.username} canceled {public_id('tasks', row.id)} ({row.description})",
                documents=[public_id("tasks", row.id)]
                + ([public_id("deployments", row.deployment_id)] if row.deployment_id else []),
                project_id=row.project_id,
                environment_id=row.environment_id,
            )
    return await get_task(services, caller, public_id("tasks", row.id))


async def _cancel(tx: Tx, row: Any) -> None:
    """A task running on a node is asked to stop (its processes are killed); any other ends now."""
    if row.node is not None and row.state == "executing":
        await tx.session.execute(
            update(t.tasks).where(t.tasks.c.id == row.id).values(cancel_requested=True)
        )
        await _cancel_children_of(tx, row.id)
        return
    # Queued, waiting for a person, or suspended for a child: wake it to cancel itself.
    await tx.session.execute(
        update(t.tasks)
        .where(t.tasks.c.id == row.id)
        .values(
            cancel_requested=True,
            wake=True,
            state="executing" if row.state == "queued" else row.state,
        )
    )
    await tx.session.execute(
        update(t.interruptions)
        .where(t.interruptions.c.task_id == row.id, t.interruptions.c.state == "pending")
        .values(state="canceled")
    )
    await tx.wake()
    await _cancel_children_of(tx, row.id)


async def _cancel_children_of(tx: Tx, task_id: int) -> None:
    children = (
        await tx.session.execute(
            select(t.tasks).where(
                t.tasks.c.parent_task_id == task_id, t.tasks.c.state.not_in(TERMINAL)
            )
        )
    ).all()
    for child in children:
        await _cancel(tx, child)


async def cancel_children(services: Services, task_id: int) -> None:
    """Canceling a parent cancels its children (Octopus leaves them running)."""
    async with services.tx(system_caller()) as tx:
        children = (
            await tx.session.execute(
                select(t.tasks).where(
                    t.tasks.c.parent_task_id == task_id, t.tasks.c.state.not_in(TERMINAL)
                )
            )
        ).all()
        for child in children:
            await _cancel(tx, child)


async def list_deployments(
    services: Services,
    caller: Caller,
    *,
    project: str | None = None,
    environment: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; keyset paging with ``before`` (a deployment number)."""
    from conveyor.services.documents import resolve

    loaded = await load_outline(services)
    query = select(t.deployments, t.releases.c.version).join(
        t.releases, t.releases.c.id == t.deployments.c.release_id
    )
    if project:
        doc = resolve(loaded, "projects", project)
        query = query.where(t.deployments.c.project_id == loaded.id_of("projects", doc.name))
    if environment:
        env = resolve(loaded, "environments", environment)
        query = query.where(
            t.deployments.c.environment_id == loaded.id_of("environments", env.name)
        )
    if before is not None:
        query = query.where(t.deployments.c.id < before)
    query = query.order_by(t.deployments.c.id.desc()).limit(min(max(limit, 1), 1000))
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    out = []
    for r in rows:
        ref, env_name = _names(loaded, r)
        if not perms.authorize(
            caller.principal, P.DeploymentView, project=ref, environment=env_name
        ).allowed:
            continue
        out.append(
            {
                "id": public_id("deployments", r.id),
                "project": ref.name if ref else None,
                "release": r.version,
                "environment": env_name,
                "state": r.state,
                "task": public_id("tasks", r.task_id) if r.task_id else None,
                "parent": public_id("deployments", r.parent_id) if r.parent_id else None,
                "created_by": r.created_by,
                "queued": _iso(r.created_at),
                "started": _iso(r.started_at),
                "completed": _iso(r.completed_at),
            }
        )
    return out


async def dashboard(services: Services, caller: Caller) -> dict[str, Any]:
    """The current deployment of each project in each environment, from the projection only."""
    loaded = await load_outline(services)
    async with services.read() as session:
        rows = (await session.execute(select(t.dashboard))).all()
    model = loaded.model
    environments = [
        e.name
        for e in model.environments
        if perms.authorize(caller.principal, P.EnvironmentView, environment=e.name).allowed
    ]
    projects = [
        p.name
        for p in model.projects
        if perms.authorize(
            caller.principal, P.ProjectView, project=perms.ProjectRef(p.name, p.group)
        ).allowed
    ]
    visible_projects, visible_envs = set(projects), set(environments)
    cells = []
    for r in rows:
        ref, env = _names(loaded, r)
        if (
            ref is None
            or env is None
            or ref.name not in visible_projects
            or env not in visible_envs
        ):
            continue
        cells.append(
            {
                "project": ref.name,
                "environment": env,
                "release": r.release_version,
                "state": r.state,
                "task": public_id("tasks", r.task_id) if r.task_id else None,
                "completed": _iso(r.completed_at),
                "deployment": public_id("deployments", r.deployment_id),
                "current_success": r.success_version,
            }
        )
    order_p = {n: i for i, n in enumerate(projects)}
    order_e = {n: i for i, n in enumerate(environments)}
    cells.sort(key=lambda c: (order_p[c["project"]], order_e[c["environment"]]))
    groups: dict[str, list[str]] = {}
    for p in model.projects:
        if p.name in visible_projects:
            groups.setdefault(p.group, []).append(p.name)
    return {"environments": environments, "projects": projects, "groups": groups, "cells": cells}
