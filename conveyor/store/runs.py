"""The one writer of the runtime: tasks, deployments, their steps, interruptions, the dashboard.

Every function works inside the caller's transaction (a service's ``Tx``), so one engine event
is one transaction: a child deployment is queued together with the parent step that waits for
it, an interruption is raised together with the step's waiting state. What to write is decided
by `conveyor.domain.runtime`; what is read comes back as typed records, never as rows.
Claims, leases and takeovers are here too: every write of a run is fenced by the lease epoch
it was claimed with (`fence`), so a node that lost its lease writes nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import runtime as rt
from conveyor.domain.documents import key
from conveyor.domain.insights import ENDED_STATES
from conveyor.domain.runtime import Lease, StepRun, StepState, TaskRun, TaskState, WaitingOn
from conveyor.store import channel_board, facts
from conveyor.store import tables as t
from conveyor.store.logs import insert_lines
from conveyor.store.run_records import (
    DeploymentRecord,
    InterruptionRecord,
    ReleaseRecord,
    TaskRecord,
    ahead_in_pair,
    children_running,
    deployment,
    interruption,
    queued_behind,
    release,
    steps,
    success_versions,
    task,
    task_record,
)

__all__ = [  # the records and reads, for callers that know only this module
    "DeploymentRecord",
    "InterruptionRecord",
    "ReleaseRecord",
    "TaskRecord",
    "children_running",
    "deployment",
    "interruption",
    "queued_behind",
    "release",
    "steps",
    "success_versions",
    "task",
]

# ---------------------------------------------------------------- queuing


@dataclass(frozen=True)
class NewRun:
    """A deployment to queue, with its task and its steps (names and types, in order)."""

    release_id: int
    release_version: str
    release_channel: str  # its channel's name (the dashboard's line per channel)
    project_id: int
    environment_id: int
    description: str
    created_by_id: int | None
    created_by: str
    skip: Sequence[str]
    guided_failure: bool
    variables: Sequence[Mapping[str, Any]]
    steps: Sequence[tuple[str, str]]
    parent_id: int | None = None
    parent_task_id: int | None = None
    # Held by its environment's checks (services/gates.py), with their evaluation.
    held: bool = False
    checks: Sequence[Mapping[str, Any]] = ()
    start_at: datetime | None = None
    freeze_override: str | None = None


async def queue(
    session: AsyncSession, now: datetime, new: NewRun, *, sqlite: bool
) -> tuple[int, int]:
    """Insert the deployment, its task and steps, and project it; returns both ids."""
    dep = await session.execute(
        t.deployments.insert()
        .values(
            release_id=new.release_id,
            project_id=new.project_id,
            environment_id=new.environment_id,
            parent_id=new.parent_id,
            created_at=now,
            created_by_id=new.created_by_id,
            created_by=new.created_by,
            state=TaskState.QUEUED.value,
            skip=list(new.skip),
            guided_failure=new.guided_failure,
            variables=[dict(v) for v in new.variables],
            start_at=new.start_at,
            freeze_override=new.freeze_override,
            checks=[dict(c) for c in new.checks] if new.checks else None,
        )
        .returning(t.deployments.c.id)
    )
    deployment_id = int(dep.scalar_one())
    created = await session.execute(
        t.tasks.insert()
        .values(
            kind="deploy",
            description=new.description[:400],  # the column's width
            state=TaskState.QUEUED.value,
            deployment_id=deployment_id,
            project_id=new.project_id,
            environment_id=new.environment_id,
            parent_task_id=new.parent_task_id,
            concurrency_key=f"{new.project_id}:{new.environment_id}",
            wake=False,
            cancel_requested=False,
            created_at=now,
            held=new.held,
        )
        .returning(t.tasks.c.id)
    )
    task_id = int(created.scalar_one())
    await session.execute(
        update(t.deployments).where(t.deployments.c.id == deployment_id).values(task_id=task_id)
    )
    if new.steps:
        await session.execute(
            t.task_steps.insert(),
            [
                {
                    "task_id": task_id,
                    "idx": i,
                    "name": name,
                    "type": kind,
                    "state": StepState.PENDING.value,
                    "attempt": 0,
                    "outputs": {},
                }
                for i, (name, kind) in enumerate(new.steps)
            ],
        )
    change = rt.DeploymentState(
        deployment_id, new.release_id, new.release_version, task_id, TaskState.QUEUED
    )
    await project(
        session,
        now,
        new.project_id,
        new.environment_id,
        new.release_channel,
        change,
        new=True,
        sqlite=sqlite,
    )
    return deployment_id, task_id


# ---------------------------------------------------------------- the dashboard


async def project(
    session: AsyncSession,
    now: datetime,
    project_id: int,
    environment_id: int,
    channel: str,
    change: rt.DeploymentState,
    *,
    new: bool = False,
    sqlite: bool,
) -> None:
    """Keep the (project, environment) cell, and the cell of the release's channel in that
    environment (the dashboard's line per channel), in the same transaction as the change."""
    pair = {"project_id": project_id, "environment_id": environment_id}
    await _keep(session, now, t.dashboard, pair, change, new=new, sqlite=sqlite)
    # Every project's, whatever its channels now: it may list several later. Locked after the
    # dashboard row, as every writer does, so two deployments never wait for each other's row.
    line = pair | {"channel": key(channel)}
    await _keep(session, now, t.dashboard_channels, line, change, new=new, sqlite=sqlite)


async def _keep(
    session: AsyncSession,
    now: datetime,
    table: Table,
    at: Mapping[str, Any],
    change: rt.DeploymentState,
    *,
    new: bool,
    sqlite: bool,
) -> None:
    """One cell of a projection table after the change (``rt.project``)."""
    where = [table.c[name] == value for name, value in at.items()]
    # The row stays locked to the end of the transaction: concurrent deployments of one project
    # to one environment then update it one after the other, each seeing the one before.
    locked = select(table).where(*where).with_for_update()
    row = (await session.execute(locked)).first()
    if row is None:
        # Two first deployments at once both find no row: the second one's insert does nothing
        # (instead of failing on the primary key) and it updates the row the first one made.
        fresh = rt.project(None, change, new=True)
        first = (
            (sqlite_insert if sqlite else pg_insert)(table)
            .values(**at, **_cell(fresh, now))
            .on_conflict_do_nothing()
            .returning(table.c.project_id)
        )
        if (await session.execute(first)).first() is not None:
            return
        row = (await session.execute(locked)).one()
    before = rt.Cell(
        row.deployment_id,
        row.release_id,
        row.release_version,
        TaskState(row.state),
        row.task_id,
        row.previous_deployment_id,
        row.success_release_id,
        row.success_version,
    )
    after = rt.project(before, change, new=new)
    values = _cell(after, now)
    if after.deployment_id == before.deployment_id and after.state == before.state:
        values.pop("completed_at")  # an older deployment ending: the current one's time stays
    await session.execute(update(table).where(*where).values(values))


def _cell(cell: rt.Cell, now: datetime) -> dict[str, Any]:
    return {
        "deployment_id": cell.deployment_id,
        "release_id": cell.release_id,
        "release_version": cell.release_version,
        "state": cell.state.value,
        "task_id": cell.task_id,
        "completed_at": now if cell.state.ended else None,
        "previous_deployment_id": cell.previous_deployment_id,
        "success_release_id": cell.success_release_id,
        "success_version": cell.success_version,
        "updated_at": now,
    }


# ---------------------------------------------------------------- steps


async def write_step(
    session: AsyncSession, now: datetime, task_id: int, step: StepRun, *, started: bool = False
) -> None:
    """Store a step as a transition in `conveyor.domain.runtime` left it."""
    values: dict[str, Any] = {
        "state": step.state.value,
        "reason": step.reason,
        "attempt": step.attempt,
        "outputs": dict(step.outputs),
        "child_task_id": step.child_task_id,
        "interruption_id": step.interruption_id,
    }
    if started:
        values |= {"started_at": now, "completed_at": None}
    if step.state.ended:
        values["completed_at"] = now
    await session.execute(
        update(t.task_steps)
        .where(t.task_steps.c.task_id == task_id, t.task_steps.c.idx == step.idx)
        .values(values)
    )


# ---------------------------------------------------------------- the task's own state


@dataclass(frozen=True)
class RunKey:
    """The rows one deployment run writes: its task, deployment and dashboard cell."""

    task_id: int
    deployment_id: int
    project_id: int
    environment_id: int
    release_id: int
    release_version: str
    release_channel: str
    parent_task_id: int | None


async def write_task(
    session: AsyncSession,
    now: datetime,
    key: RunKey,
    task_run: TaskRun,
    *,
    first_start: bool = False,
    release_slot: bool = False,
    sqlite: bool,
) -> bool:
    """Store the task's state on the task, its deployment and the dashboard, and roll it up
    to a parent waiting for it; True when that woke the parent."""
    state = task_run.state
    values: dict[str, Any] = {"state": state.value, "waiting_on": _on(task_run.waiting_on)}
    if state.ended:
        values |= {"completed_at": now, "error": task_run.error, "wake": False, "held": False}
    if release_slot or state.ended:
        values |= {"node": None, "lease_expires_at": None}
    await session.execute(update(t.tasks).where(t.tasks.c.id == key.task_id).values(values))
    dep_values: dict[str, Any] = {"state": state.value}
    if first_start:
        dep_values["started_at"] = now
    if state.ended:
        dep_values["completed_at"] = now
    await session.execute(
        update(t.deployments).where(t.deployments.c.id == key.deployment_id).values(dep_values)
    )
    change = rt.DeploymentState(
        key.deployment_id, key.release_id, key.release_version, key.task_id, state
    )
    await project(
        session, now, key.project_id, key.environment_id, key.release_channel, change, sqlite=sqlite
    )
    if state.value in ENDED_STATES:  # a canceled deployment changed nothing: no facts
        await facts.record(
            session,
            key.deployment_id,
            key.project_id,
            key.environment_id,
            state is TaskState.SUCCESS,
            sqlite=sqlite,
        )
    if key.parent_task_id is None:
        return False
    return await _roll_up(session, key.parent_task_id, state)


def _on(waiting_on: WaitingOn | None) -> str | None:
    return waiting_on.value if waiting_on else None


async def _roll_up(session: AsyncSession, parent_task_id: int, child_state: TaskState) -> bool:
    """A child's state shows on its parent; its end wakes the parent (True)."""
    row = (await session.execute(select(t.tasks).where(t.tasks.c.id == parent_task_id))).first()
    if row is None:
        return False
    parent = task_record(row)
    change = rt.roll_up(parent.run, child_state)
    if change is None:
        return False
    values: dict[str, Any] = {"state": change.state.value}
    if change.wake:
        values["wake"] = True
    await session.execute(update(t.tasks).where(t.tasks.c.id == parent.id).values(values))
    await session.execute(
        update(t.deployments)
        .where(t.deployments.c.id == parent.deployment_id)
        .values(state=change.state.value)
    )
    # A rolled-up state is never a success, so the projection rule shows it only where the
    # parent is the cell's current deployment.
    for table in (t.dashboard, t.dashboard_channels):  # in the order `project` locks them
        await session.execute(
            update(table)
            .where(table.c.deployment_id == parent.deployment_id)
            .values(state=change.state.value)
        )
    woke = change.wake
    if parent.parent_task_id is not None:
        woke = await _roll_up(session, parent.parent_task_id, change.state) or woke
    return woke


async def wake(session: AsyncSession, task_id: int) -> None:
    """Make a suspended task runnable again (any node may claim it)."""
    await session.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(wake=True))


async def any_ended(session: AsyncSession, task_ids: Sequence[int]) -> bool:
    if not task_ids:
        return False
    found = await session.execute(
        select(t.tasks.c.id).where(t.tasks.c.id.in_(task_ids), t.tasks.c.state.in_(rt.TASK_ENDED))
    )
    return found.first() is not None


async def request_cancel(session: AsyncSession, task_row: TaskRecord) -> bool:
    """Ask a task to stop: one running on a node is told (its processes are killed); any other
    is woken to cancel itself, and its open questions close. True when it was woken."""
    if task_row.node is not None and task_row.state is TaskState.EXECUTING:
        await session.execute(
            update(t.tasks).where(t.tasks.c.id == task_row.id).values(cancel_requested=True)
        )
        return False
    state = TaskState.EXECUTING if task_row.state is TaskState.QUEUED else task_row.state
    await session.execute(
        update(t.tasks)
        .where(t.tasks.c.id == task_row.id)
        .values(cancel_requested=True, wake=True, state=state.value)
    )
    await session.execute(
        update(t.interruptions)
        .where(t.interruptions.c.task_id == task_row.id, t.interruptions.c.state == "pending")
        .values(state="canceled")
    )
    return True


# ---------------------------------------------------------------- interruptions


@dataclass(frozen=True)
class NewInterruption:
    task_id: int
    deployment_id: int
    project_id: int
    environment_id: int
    step_idx: int
    step_name: str
    kind: str
    title: str
    instructions: str
    responsible_teams: Sequence[str]
    settings: Mapping[str, Any]


async def raise_interruption(session: AsyncSession, now: datetime, new: NewInterruption) -> int:
    result = await session.execute(
        t.interruptions.insert()
        .values(
            task_id=new.task_id,
            deployment_id=new.deployment_id,
            project_id=new.project_id,
            environment_id=new.environment_id,
            step_idx=new.step_idx,
            step_name=new.step_name,
            kind=new.kind,
            title=new.title[:400],  # the column's width
            instructions=new.instructions,
            responsible_teams=list(new.responsible_teams),
            settings=dict(new.settings),
            state="pending",
            created_at=now,
            answers=[],
        )
        .returning(t.interruptions.c.id)
    )
    return int(result.scalar_one())


async def take_interruption(
    session: AsyncSession, now: datetime, interruption_id: int, username: str, user_id: int | None
) -> None:
    await session.execute(
        update(t.interruptions)
        .where(t.interruptions.c.id == interruption_id)
        .values(taken_by=username, taken_by_id=user_id, taken_at=now)
    )


@dataclass(frozen=True)
class Settled:
    """The answer that settled an interruption."""

    result: str
    notes: str
    username: str
    user_id: int | None
    # The answers to the step's questions that stand (by field name); None: none asked.
    fields: Mapping[str, str] | None = None


async def record_answers(
    session: AsyncSession,
    now: datetime,
    interruption_id: int,
    answers: Sequence[Mapping[str, Any]],
    settled: Settled | None,
) -> None:
    """Store the answers given so far; a settling one closes it, otherwise the next approver
    takes it from here."""
    values: dict[str, Any] = {"answers": [dict(a) for a in answers]}
    if settled is not None:
        values |= {
            "state": "answered",
            "result": settled.result,
            "notes": settled.notes,
            "answered_by": settled.username,
            "answered_at": now,
            "taken_by": settled.username,
            "taken_by_id": settled.user_id,
            "fields": dict(settled.fields) if settled.fields is not None else None,
        }
    else:
        values |= {"taken_by": None, "taken_by_id": None, "taken_at": None}
    await session.execute(
        update(t.interruptions).where(t.interruptions.c.id == interruption_id).values(values)
    )


# ---------------------------------------------------------------- claims, leases, takeover


async def claim(
    session: AsyncSession,
    now: datetime,
    node: str,
    lease: timedelta,
    limit: int,
    *,
    sqlite: bool,
) -> list[Lease]:
    """Take up to ``limit`` runnable tasks, oldest first, in one statement; their leases.

    Runnable: a task woken to resume (an answer, a child's end, a takeover), or a queued one
    whose project and environment nobody holds and with no older queued task of its own there.
    That last clause makes the rule safe without any global lock: two nodes claiming at once
    both see the older task queued (so only it is claimable) or already taken (so it holds the
    pair). On PostgreSQL, rows another node is claiming are skipped, not waited for."""
    candidate = t.tasks.alias("candidate")
    other = t.tasks.alias("other")
    pair_taken = (
        select(other.c.id)
        .where(ahead_in_pair(other, candidate.c.concurrency_key, candidate.c.id))
        .exists()
    )
    runnable = (
        select(candidate.c.id)
        .where(
            or_(
                and_(
                    candidate.c.state == TaskState.QUEUED.value,
                    candidate.c.held.is_(False),
                    or_(candidate.c.concurrency_key.is_(None), ~pair_taken),
                ),
                and_(candidate.c.wake.is_(True), candidate.c.node.is_(None)),
            )
        )
        .order_by(candidate.c.id)
        .limit(limit)
    )
    if not sqlite:
        runnable = runnable.with_for_update(skip_locked=True)
    tasks = t.tasks
    claimed = await session.execute(
        update(tasks)
        .where(tasks.c.id.in_(runnable.scalar_subquery()))
        .values(
            node=node,
            lease_expires_at=now + lease,
            lease_epoch=tasks.c.lease_epoch + 1,
            wake=False,
            state=case(
                (tasks.c.state == TaskState.QUEUED.value, TaskState.EXECUTING.value),
                else_=tasks.c.state,
            ),
            started_at=func.coalesce(tasks.c.started_at, now),
        )
        .returning(tasks.c.id, tasks.c.lease_epoch)
    )
    return sorted((Lease(int(r.id), int(r.lease_epoch)) for r in claimed), key=_by_task)


def _by_task(lease: Lease) -> int:
    return lease.task_id


@dataclass(frozen=True)
class Renewal:
    """What a node learns when it renews its leases."""

    cancel: set[int]  # someone asked to cancel these
    lost: set[int]  # another node took these over: stop them, write nothing more


async def renew(
    session: AsyncSession, now: datetime, node: str, leases: Sequence[Lease], lease: timedelta
) -> Renewal:
    """Extend the leases this node still holds."""
    if not leases:
        return Renewal(set(), set())
    epochs = {held.task_id: held.epoch for held in leases}
    # Locked first, in id order as everywhere: an UPDATE of many rows locks them in the order
    # it finds them, and deadlocked with a run's fenced write and the log writer's shared locks.
    rows = (
        await session.execute(
            select(t.tasks.c.id, t.tasks.c.node, t.tasks.c.lease_epoch, t.tasks.c.cancel_requested)
            .where(t.tasks.c.id.in_(sorted(epochs)))
            .order_by(t.tasks.c.id)
            .with_for_update(key_share=True)
        )
    ).all()
    current = {int(r.id): int(r.lease_epoch) for r in rows}
    held = [int(r.id) for r in rows if r.node == node and epochs[r.id] == r.lease_epoch]
    if held:
        await session.execute(
            update(t.tasks).where(t.tasks.c.id.in_(held)).values(lease_expires_at=now + lease)
        )
    return Renewal(
        cancel={int(r.id) for r in rows if r.cancel_requested and int(r.id) in held},
        lost=rt.lost(leases, current),
    )


async def take_over(
    session: AsyncSession, now: datetime, node: str, reason: str, *, own_tasks_too: bool
) -> list[int]:
    """Tasks whose node died (its lease expired; or this node's own, when it starts): a step
    caught running fails with ``reason``, and the task is woken for any node to resume. The
    epoch moves on, so the node that held it can write nothing more even if it was only frozen.
    A step waiting for a child or a person was not running: it resumes as it was."""
    expired = t.tasks.c.lease_expires_at < now
    dead = or_(expired, t.tasks.c.node == node) if own_tasks_too else expired
    return await _take(
        session,
        now,
        reason,
        and_(
            t.tasks.c.state.in_((TaskState.EXECUTING.value, TaskState.WAITING.value)),
            t.tasks.c.node.is_not(None),
            dead,
        ),
    )


async def let_go(
    session: AsyncSession, now: datetime, leases: Sequence[Lease], reason: str
) -> list[int]:
    """A stopping node lets go of the tasks it still held mid-step (after their processes were
    stopped): as a takeover does, at once instead of when the lease expires."""
    held = [
        and_(t.tasks.c.id == lease.task_id, t.tasks.c.lease_epoch == lease.epoch)
        for lease in leases
    ]
    if not held:
        return []
    return await _take(session, now, reason, or_(*held))


async def _take(
    session: AsyncSession, now: datetime, reason: str, which: ColumnElement[bool]
) -> list[int]:
    taken = (
        (
            await session.execute(
                select(t.tasks.c.id)
                .where(which)
                .order_by(t.tasks.c.id)  # task rows are locked in id order, everywhere
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
    if not taken:
        return []
    interrupted = await session.execute(
        update(t.task_steps)
        .where(
            t.task_steps.c.task_id.in_(taken),
            t.task_steps.c.state == StepState.RUNNING.value,
        )
        .values(state=StepState.FAILED.value, reason=reason, completed_at=now)
        .returning(t.task_steps.c.task_id, t.task_steps.c.idx, t.task_steps.c.name)
    )
    lines = [
        {
            "task_id": step.task_id,
            "at": now,
            "step": step.idx,
            "level": "error",
            "line": f'Step "{step.name}" failed: {reason}',
        }
        for step in sorted(interrupted, key=lambda s: (s.task_id, s.idx))
    ]
    await insert_lines(session, lines)
    await session.execute(
        update(t.tasks)
        .where(t.tasks.c.id.in_(taken))
        .values(node=None, lease_expires_at=None, wake=True, lease_epoch=t.tasks.c.lease_epoch + 1)
    )
    return [int(task_id) for task_id in taken]


async def wake_forgotten_parents(session: AsyncSession) -> int:
    """Wake a parent that waits for a child which has already ended; how many were woken.

    A child's end wakes its parent in the child's own transaction. A parent suspending at that
    very moment checks, in its transaction, whether a child ended meanwhile; on PostgreSQL's
    read committed each of the two can read the other as it was before either committed, and
    the wake-up is lost. The node's heartbeat sweeps for such parents: one waits a heartbeat
    longer, never forever."""
    child = t.tasks.alias("child")
    ended_child = (
        select(t.task_steps.c.task_id)
        .join(child, child.c.id == t.task_steps.c.child_task_id)
        .where(
            t.task_steps.c.task_id == t.tasks.c.id,
            t.task_steps.c.state.not_in(rt.STEP_ENDED),
            child.c.state.in_(rt.TASK_ENDED),
        )
        .exists()
    )
    forgotten = (
        (
            await session.execute(
                select(t.tasks.c.id)
                .where(
                    t.tasks.c.state.in_((TaskState.EXECUTING.value, TaskState.WAITING.value)),
                    t.tasks.c.waiting_on == WaitingOn.CHILD.value,
                    t.tasks.c.node.is_(None),
                    t.tasks.c.wake.is_(False),
                    ended_child,
                )
                .order_by(t.tasks.c.id)  # locked in id order, as everywhere
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
    if forgotten:
        await session.execute(update(t.tasks).where(t.tasks.c.id.in_(forgotten)).values(wake=True))
    return len(forgotten)


async def fence(session: AsyncSession, lease: Lease, *, parent_task_id: int | None = None) -> None:
    """Refuse this write (`LeaseLost`) unless ``lease`` is still the task's.

    The task row stays locked to the end of the transaction, so a takeover cannot slip in
    between this check and the writes after it. An event that rolls up to the parent (any
    change of the task's own state) locks the parent and its ancestors too, before the task,
    as every transaction locks task rows: in id order, ancestors first (a cancel locks the
    parent, then its children)."""
    ids = [lease.task_id]
    up = parent_task_id
    while up is not None:
        ids.append(up)
        up = (
            await session.execute(select(t.tasks.c.parent_task_id).where(t.tasks.c.id == up))
        ).scalar_one_or_none()
    rows = await session.execute(
        select(t.tasks.c.id, t.tasks.c.lease_epoch)
        .where(t.tasks.c.id.in_(ids))
        .order_by(t.tasks.c.id)
        .with_for_update()
    )
    current = {int(r.id): int(r.lease_epoch) for r in rows}
    rt.fenced(lease, current.get(lease.task_id))


async def current_epochs(session: AsyncSession, task_ids: Sequence[int]) -> dict[int, int]:
    """The epochs of these tasks, held (shared) to the end of the transaction: log lines of a
    round are kept only for the holders that are still current."""
    rows = await session.execute(
        select(t.tasks.c.id, t.tasks.c.lease_epoch)
        .where(t.tasks.c.id.in_(sorted(set(task_ids))))
        .order_by(t.tasks.c.id)
        .with_for_update(read=True)
    )
    return {int(r.id): int(r.lease_epoch) for r in rows}


# ---------------------------------------------------------------- held deployments


async def held_tasks(session: AsyncSession, environment_id: int | None = None) -> list[Any]:
    """Queued deployments held by their environment's checks, oldest first, with the
    deployment's fields the checks need."""
    d = t.deployments
    query = (
        select(
            t.tasks.c.id.label("task_id"),
            d.c.id.label("deployment_id"),
            d.c.release_id,
            d.c.project_id,
            d.c.environment_id,
            d.c.parent_id,
            d.c.created_by,
            d.c.start_at,
            d.c.freeze_override,
            d.c.checks,
        )
        .join(d, d.c.id == t.tasks.c.deployment_id)
        .where(t.tasks.c.held.is_(True), t.tasks.c.state == TaskState.QUEUED.value)
        .order_by(t.tasks.c.id)
    )
    if environment_id is not None:
        query = query.where(d.c.environment_id == environment_id)
    return list((await session.execute(query)).all())


async def set_checks(
    session: AsyncSession, deployment_id: int, checks: Sequence[Mapping[str, Any]]
) -> None:
    await session.execute(
        update(t.deployments)
        .where(t.deployments.c.id == deployment_id)
        .values(checks=[dict(c) for c in checks])
    )


async def hold_unstarted(session: AsyncSession, environment_id: int) -> int:
    """Hold again the deployments to an environment that its checks let go and that have not
    started (an approval was revoked): the checks look at them anew. How many."""
    gated = (
        select(t.deployments.c.task_id)
        .where(t.deployments.c.environment_id == environment_id)
        .where(t.deployments.c.checks.is_not(None))
    )
    done = await session.execute(
        update(t.tasks)
        .where(
            t.tasks.c.id.in_(gated.scalar_subquery()),
            t.tasks.c.state == TaskState.QUEUED.value,
            t.tasks.c.started_at.is_(None),
            t.tasks.c.held.is_(False),
        )
        .values(held=True)
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


async def release_held(session: AsyncSession, task_id: int) -> bool:
    """A held task whose checks passed becomes claimable; False if it is no longer held
    (another node released or canceled it first)."""
    done = await session.execute(
        update(t.tasks)
        .where(
            t.tasks.c.id == task_id,
            t.tasks.c.held.is_(True),
            t.tasks.c.state == TaskState.QUEUED.value,
        )
        .values(held=False)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


async def hold_again(session: AsyncSession, lease: Lease, deployment_id: int) -> None:
    """A task claimed but not started goes back to the queue, held (``runtime.hold``): no
    node, no lease, not started."""
    await fence(session, lease)
    await session.execute(
        update(t.tasks)
        .where(t.tasks.c.id == lease.task_id)
        .values(
            state=TaskState.QUEUED.value,
            held=True,
            node=None,
            lease_expires_at=None,
            started_at=None,
            wake=False,
        )
    )
    await session.execute(
        update(t.deployments)
        .where(t.deployments.c.id == deployment_id)
        .values(state=TaskState.QUEUED.value)
    )


async def withdraw(
    session: AsyncSession, now: datetime, task_id: int, reason: str, *, sqlite: bool
) -> bool | None:
    """Cancel a queued task that never started, with the reason (``runtime.withdraw``), in the
    caller's transaction. None when it is no longer queued; else whether a parent woke."""
    task_row = await task(session, task_id, lock=True)
    if task_row.state is not TaskState.QUEUED or task_row.deployment_id is None:
        return None
    dep = await deployment(session, task_row.deployment_id)
    rel = await release(session, dep.release_id)
    ended = rt.withdraw(rt.TaskRun(TaskState.QUEUED, await steps(session, task_id)), reason)
    for step in ended.steps:
        await write_step(session, now, task_id, step)
    await session.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(held=False))
    key = RunKey(
        task_id,
        dep.id,
        dep.project_id,
        dep.environment_id,
        dep.release_id,
        rel.version,
        rel.channel,
        task_row.parent_task_id,
    )
    return await write_task(session, now, key, ended, sqlite=sqlite)


async def unstarted_in_pair(
    session: AsyncSession, project_id: int, environment_id: int, before_task: int | None = None
) -> list[tuple[int, int, str]]:
    """Queued deployment tasks of a project and environment that have not started:
    (task id, deployment id, description), oldest first."""
    query = (
        select(t.tasks.c.id, t.tasks.c.deployment_id, t.tasks.c.description)
        .where(
            t.tasks.c.concurrency_key == f"{project_id}:{environment_id}",
            t.tasks.c.state == TaskState.QUEUED.value,
            t.tasks.c.started_at.is_(None),
            t.tasks.c.cancel_requested.is_(False),
        )
        .order_by(t.tasks.c.id)
    )
    if before_task is not None:
        query = query.where(t.tasks.c.id < before_task)
    return [(int(r.id), int(r.deployment_id), r.description) for r in await session.execute(query)]


# ---------------------------------------------------------------- retention


async def forget(
    session: AsyncSession, deployments: Mapping[int, int | None], now: datetime
) -> None:
    """Retention: finished deployments (id -> task id) with their tasks and everything of the
    tasks (steps, questions, agent jobs, logs) and their insights' facts; the logs first:
    they are most of the rows. The caller has checked that none of them runs or waits."""
    tasks = [task for task in deployments.values() if task is not None]
    if tasks:
        await session.execute(delete(t.task_logs).where(t.task_logs.c.task_id.in_(tasks)))
        await session.execute(delete(t.interruptions).where(t.interruptions.c.task_id.in_(tasks)))
        await session.execute(delete(t.task_steps).where(t.task_steps.c.task_id.in_(tasks)))
        await session.execute(delete(t.agent_jobs).where(t.agent_jobs.c.task_id.in_(tasks)))
        await session.execute(delete(t.tasks).where(t.tasks.c.id.in_(tasks)))
    if deployments:
        await facts.forget(session, list(deployments))
        await session.execute(
            delete(t.deployments).where(t.deployments.c.id.in_(list(deployments)))
        )
        # Retention's plan keeps what every channel's line shows (domain/retention.py), but its
        # batches check again only the project's cells: a channel's cell that still pointed at
        # one of these is written anew from what is left, or goes with the channel's last
        # deployment there (never a line pointing at a deployment that is gone).
        c = t.dashboard_channels.c
        gone = list(deployments)
        stale = await session.execute(
            select(c.project_id, c.environment_id, c.channel).where(
                or_(c.deployment_id.in_(gone), c.previous_deployment_id.in_(gone))
            )
        )
        cells = [(int(r.project_id), int(r.environment_id), str(r.channel)) for r in stale]
        if cells:
            await channel_board.rewrite(session, now, cells)


async def forget_logs(session: AsyncSession, tasks: Sequence[int], now: datetime) -> None:
    """Retention: the log lines of finished tasks; the tasks stay and say when it went."""
    await session.execute(delete(t.task_logs).where(t.task_logs.c.task_id.in_(tasks)))
    await session.execute(update(t.tasks).where(t.tasks.c.id.in_(tasks)).values(log_removed_at=now))
