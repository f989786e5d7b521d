"""The task queue: which node runs which task, and taking over from nodes that died.

Nodes claim runnable tasks (the oldest whose project and environment are free), renew the
leases of the tasks they run, and recover the tasks of nodes whose leases expired. What a task
does once claimed goes through `conveyor.services.execution`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, text, update

from conveyor.domain.runtime import StepState, TaskState, WaitingOn
from conveyor.services.config import public_id
from conveyor.services.core import Services
from conveyor.store import tables as t

CLAIM_LOCK = 7_010_003
STOPPED = "the server stopped while this step was running"


async def claim(services: Services, node: str, lease: timedelta) -> int | None:
    """Take the oldest runnable task whose project and environment are free; None if none."""
    claimed = await claim_many(services, node, lease, 1)
    return claimed[0] if claimed else None


async def claim_many(services: Services, node: str, lease: timedelta, limit: int) -> list[int]:
    """Take up to ``limit`` runnable tasks, oldest first, in one transaction: a node with many
    free slots (a burst of 100 deployments) does not pay a transaction, and a turn of the
    global claim lock, per task. A task claimed here blocks the later ones of its project and
    environment, as the transaction sees its own writes."""
    claimed: list[int] = []
    async with services.write() as session:
        if not services.is_sqlite:
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK})
        now = services.clock()
        query = (
            select(t.tasks)
            .where(
                or_(
                    t.tasks.c.state == "queued",
                    and_(t.tasks.c.wake.is_(True), t.tasks.c.node.is_(None)),
                )
            )
            .order_by(t.tasks.c.id)
            .limit(limit + 50)
        )
        if not services.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        candidates = (await session.execute(query)).all()
        for task in candidates:
            if len(claimed) == limit:
                break
            if task.state == "queued" and task.concurrency_key:
                blocker = await _blocker(session, task)
                if blocker is not None:
                    reason = f"waiting for {public_id('tasks', blocker.id)} ({blocker.description})"
                    if task.queue_reason != reason:
                        await session.execute(
                            update(t.tasks)
                            .where(t.tasks.c.id == task.id)
                            .values(queue_reason=reason)
                        )
                    continue
            values: dict[str, Any] = {
                "node": node,
                "lease_expires_at": now + lease,
                "wake": False,
                "queue_reason": None,
            }
            if task.state == "queued":
                values["state"] = "executing"
            if task.started_at is None:
                values["started_at"] = now
            await session.execute(update(t.tasks).where(t.tasks.c.id == task.id).values(values))
            claimed.append(int(task.id))
    return claimed


async def _blocker(session: Any, task: Any) -> Any:
    """The task that holds this task's project and environment, if any.

    A task waiting for a person holds nothing (unless its step blocks deployments); a parent
    waiting for its child still holds its own project and environment."""
    row = (
        await session.execute(
            select(t.tasks.c.id, t.tasks.c.description)
            .where(
                t.tasks.c.concurrency_key == task.concurrency_key,
                t.tasks.c.id != task.id,
                or_(
                    t.tasks.c.state == "executing",
                    and_(
                        t.tasks.c.state == "waiting",
                        t.tasks.c.waiting_on.in_(("child", "block")),
                    ),
                ),
            )
            .order_by(t.tasks.c.id)
            .limit(1)
        )
    ).first()
    return row


async def renew(
    services: Services, node: str, task_ids: Sequence[int], lease: timedelta
) -> set[int]:
    """Extend the leases this node holds; returns the tasks someone asked to cancel."""
    if not task_ids:
        return set()
    async with services.write() as session:
        await session.execute(
            update(t.tasks)
            .where(t.tasks.c.id.in_(task_ids), t.tasks.c.node == node)
            .values(lease_expires_at=services.clock() + lease)
        )
        rows = await session.execute(
            select(t.tasks.c.id).where(
                t.tasks.c.id.in_(task_ids), t.tasks.c.cancel_requested.is_(True)
            )
        )
        return {int(r.id) for r in rows}


async def recover(services: Services, node: str, *, own_tasks_too: bool) -> list[int]:
    """Take over tasks whose node died: steps caught mid-run fail, the rest resumes.

    A step waiting for a child deployment or a person is not "mid-run": it resumes as it was."""
    now = services.clock()
    async with services.write() as session:
        dead = (
            or_(t.tasks.c.lease_expires_at < now, t.tasks.c.node == node)
            if own_tasks_too
            else (t.tasks.c.lease_expires_at < now)
        )
        rows = (
            await session.execute(
                select(t.tasks.c.id).where(
                    t.tasks.c.state.in_(("executing", "waiting")),
                    t.tasks.c.node.is_not(None),
                    dead,
                )
            )
        ).all()
        recovered = [int(r.id) for r in rows]
        for task_id in recovered:
            steps = (
                await session.execute(
                    select(t.task_steps).where(
                        t.task_steps.c.task_id == task_id, t.task_steps.c.state == "running"
                    )
                )
            ).all()
            for step in steps:
                await session.execute(
                    update(t.task_steps)
                    .where(t.task_steps.c.task_id == task_id, t.task_steps.c.idx == step.idx)
                    .values(state="failed", reason=STOPPED, completed_at=now)
                )
                await session.execute(
                    t.task_logs.insert().values(
                        task_id=task_id,
                        at=now,
                        step=step.idx,
                        level="error",
                        line=f'Step "{step.name}" failed: {STOPPED}',
                    )
                )
            await session.execute(
                update(t.tasks)
                .where(t.tasks.c.id == task_id)
                .values(node=None, lease_expires_at=None, wake=True)
            )
    return recovered


async def wake_forgotten_parents(services: Services) -> int:
    """Wake a parent that waits for a child which has already ended; how many were woken.

    A child's end wakes its parent in the child's own transaction. A parent suspending at that
    very moment checks, in its transaction, whether a child ended meanwhile; on PostgreSQL's
    read committed each of the two can read the other as it was before either committed, and
    the wake-up is lost. Locking the parent in the roll-up would close that window but invert
    the lock order of a cancel (parent, then children), so the heartbeat sweeps instead: such a
    parent waits a heartbeat longer, never forever."""
    child = t.tasks.alias("child")
    ended_child = (
        select(t.task_steps.c.task_id)
        .join(child, child.c.id == t.task_steps.c.child_task_id)
        .where(
            t.task_steps.c.task_id == t.tasks.c.id,
            t.task_steps.c.state.not_in([s.value for s in StepState if s.ended]),
            child.c.state.in_([s.value for s in TaskState if s.ended]),
        )
        .exists()
    )
    async with services.write() as session:
        woken = await session.execute(
            update(t.tasks)
            .where(
                t.tasks.c.state.in_((TaskState.EXECUTING.value, TaskState.WAITING.value)),
                t.tasks.c.waiting_on == WaitingOn.CHILD.value,
                t.tasks.c.node.is_(None),
                t.tasks.c.wake.is_(False),
                ended_child,
            )
            .values(wake=True)
        )
        return int(getattr(woken, "rowcount", 0) or 0)
