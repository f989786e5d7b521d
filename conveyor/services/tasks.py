"""Reading tasks, deployments, logs and the dashboard; and canceling tasks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied
from conveyor.services.config import load_outline, public_id
from conveyor.services.core import Caller, Services, Tx, iso
from conveyor.services.deployments import TERMINAL
from conveyor.services.gates import pending_reasons
from conveyor.services.interruptions import parse_id
from conveyor.store import runs
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


def task_view(loaded: Loaded, row: Any, queue_reason: str | None = None) -> dict[str, Any]:
    ref, env = _names(loaded, row)
    return {
        "id": public_id("tasks", row.id),
        "description": row.description,
        "state": row.state,
        "project": ref.name if ref else None,
        "environment": env,
        "deployment": public_id("deployments", row.deployment_id) if row.deployment_id else None,
        "parent": public_id("tasks", row.parent_task_id) if row.parent_task_id else None,
        "queue_reason": queue_reason,
        # Queued and held by its environment's checks (queue_reason says which wait).
        "held": bool(getattr(row, "held", False)) and row.state == "queued",
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
        reason = await _queue_reason(session, row)
        canceled = await _canceled_by(session, row) if row.state == "canceled" else None
        checks = None
        if row.deployment_id is not None:
            checks = (
                await session.execute(
                    select(t.deployments.c.checks).where(t.deployments.c.id == row.deployment_id)
                )
            ).scalar()
    out = task_view(loaded, row, reason)
    # The environment's checks as last evaluated (none: no check applies).
    out["checks"] = list(checks or [])
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
    # Who canceled it and when: the TaskCanceled event of the task, or of the parent whose
    # cancel canceled it (None for a task that was not canceled, or by no one's request).
    out["canceled_by"], out["canceled_at"] = canceled or (None, None)
    return out


async def _canceled_by(session: Any, row: Any) -> tuple[str, str | None] | None:
    tasks_asked = [public_id("tasks", row.id)]
    if row.parent_task_id is not None:
        tasks_asked.append(public_id("tasks", row.parent_task_id))
    found = (
        await session.execute(
            select(t.events.c.actor, t.events.c.on_behalf_of, t.events.c.occurred_at)
            .join(t.event_documents, t.event_documents.c.event_id == t.events.c.id)
            .where(
                t.event_documents.c.document.in_(tasks_asked),
                t.events.c.category == Category.TASK_CANCELED.value,
            )
            .order_by(t.events.c.id)
            .limit(1)
        )
    ).first()
    if found is None:
        return None
    return (found.on_behalf_of or found.actor), _iso(found.occurred_at)


async def _queue_reason(session: Any, row: Any) -> str | None:
    """Why a queued task has not started: its environment's checks (approvals, a window, a
    freeze, its start time), or what holds its project and environment."""
    if row.state != "queued" or not row.concurrency_key:
        return None
    if row.held and row.deployment_id is not None:
        checks = (
            await session.execute(
                select(t.deployments.c.checks).where(t.deployments.c.id == row.deployment_id)
            )
        ).scalar()
        return f"waiting for its environment's checks: {pending_reasons(checks)}"
    behind = await runs.queued_behind(session, int(row.id), row.concurrency_key)
    if behind is None:
        return None
    blocker, description = behind
    return f"waiting for {public_id('tasks', blocker)} ({description})"


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
            {
                "offset": r.id,
                "at": _iso(r.at),
                "step": r.step,
                "target": r.target,
                "level": r.level,
                "line": r.line,
            }
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
    """A task running on a node is asked to stop (its processes are killed); any other is woken
    to cancel itself. Its children are canceled too (Octopus leaves them running)."""
    if await runs.request_cancel(tx.session, await runs.task(tx.session, int(row.id))):
        await tx.wake()
    await cancel_children_in(tx, int(row.id))


async def cancel_children_in(tx: Tx, task_id: int) -> None:
    """Cancel a task's unfinished children, in the transaction that cancels the task."""
    for child in await runs.children_running(tx.session, task_id):
        await _cancel(tx, child)
