"""What the runtime reads back: tasks, deployments, releases, steps and interruptions, as
typed records (never rows), for the engine and the services. The writes are `runs`'."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import runtime as rt
from conveyor.domain.errors import NotFound
from conveyor.domain.runtime import StepRun, StepState, TaskRun, TaskState, WaitingOn
from conveyor.store import tables as t


@dataclass(frozen=True)
class TaskRecord:
    id: int
    description: str
    state: TaskState
    deployment_id: int | None
    project_id: int | None
    environment_id: int | None
    parent_task_id: int | None
    node: str | None
    waiting_on: WaitingOn | None
    cancel_requested: bool
    wake: bool
    started_at: datetime | None
    lease_epoch: int = 0

    @property
    def run(self) -> TaskRun:
        return TaskRun(self.state, (), self.waiting_on, self.cancel_requested)


@dataclass(frozen=True)
class ReleaseRecord:
    id: int
    version: str
    notes: str
    created_by: str
    channel: str
    snapshot: Mapping[str, Any]
    packages: Mapping[str, str]
    children: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class DeploymentRecord:
    id: int
    release_id: int
    project_id: int
    environment_id: int
    task_id: int | None
    parent_id: int | None
    created_by: str
    state: TaskState
    skip: tuple[str, ...]
    guided_failure: bool
    variables: tuple[Mapping[str, Any], ...]
    started_at: datetime | None


@dataclass(frozen=True)
class InterruptionRecord:
    id: int
    task_id: int
    step_idx: int
    kind: str
    state: str
    result: str | None
    answered_by: str | None
    notes: str | None
    settings: Mapping[str, Any]
    # The settled answers to the step's questions (fields), by field name.
    fields: Mapping[str, str] = field(default_factory=dict)


def task_record(row: Any) -> TaskRecord:
    return TaskRecord(
        id=int(row.id),
        description=row.description,
        state=TaskState(row.state),
        deployment_id=row.deployment_id,
        project_id=row.project_id,
        environment_id=row.environment_id,
        parent_task_id=row.parent_task_id,
        node=row.node,
        waiting_on=WaitingOn(row.waiting_on) if row.waiting_on else None,
        cancel_requested=bool(row.cancel_requested),
        wake=bool(row.wake),
        started_at=row.started_at,
        lease_epoch=int(row.lease_epoch),
    )


async def task(session: AsyncSession, task_id: int, *, lock: bool = False) -> TaskRecord:
    query = select(t.tasks).where(t.tasks.c.id == task_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise NotFound(f"task {task_id} does not exist")
    return task_record(row)


def holding(tasks: Any) -> Any:
    """A task that holds its project and environment: running, or waiting for what holds it
    (`WaitingOn.holds_pair`)."""
    return or_(
        tasks.c.state == TaskState.EXECUTING.value,
        and_(
            tasks.c.state == TaskState.WAITING.value,
            tasks.c.waiting_on.in_([w.value for w in WaitingOn if w.holds_pair]),
        ),
    )


def ahead_in_pair(other: Any, key: Any, task_id: Any) -> Any:
    """``other`` goes before task ``task_id`` of pair ``key``: it holds the pair, or it is an
    older queued task of it. The claim's rule (`runs.claim`) and why a task waits (below)."""
    return and_(
        other.c.concurrency_key == key,
        other.c.id != task_id,
        or_(
            holding(other),
            # A held task (waiting for its checks) keeps nobody waiting behind it.
            and_(
                other.c.state == TaskState.QUEUED.value,
                other.c.held.is_(False),
                other.c.id < task_id,
            ),
        ),
    )


async def queued_behind(session: AsyncSession, task_id: int, key: str) -> tuple[int, str] | None:
    """Why a queued task waits: the task holding its project and environment, or the older
    queued one that goes first (the claim's rule, `runs.claim`); its id and description."""
    other = t.tasks
    row = (
        await session.execute(
            select(other.c.id, other.c.description)
            .where(ahead_in_pair(other, key, task_id))
            .order_by(other.c.id)
            .limit(1)
        )
    ).first()
    return (int(row.id), row.description) if row is not None else None


async def children_running(session: AsyncSession, task_id: int) -> list[TaskRecord]:
    rows = await session.execute(
        select(t.tasks)
        .where(t.tasks.c.parent_task_id == task_id, t.tasks.c.state.not_in(rt.TASK_ENDED))
        .order_by(t.tasks.c.id)
    )
    return [task_record(r) for r in rows]


async def deployment(session: AsyncSession, deployment_id: int) -> DeploymentRecord:
    row = (
        await session.execute(select(t.deployments).where(t.deployments.c.id == deployment_id))
    ).one()
    return DeploymentRecord(
        id=int(row.id),
        release_id=row.release_id,
        project_id=row.project_id,
        environment_id=row.environment_id,
        task_id=row.task_id,
        parent_id=row.parent_id,
        created_by=row.created_by,
        state=TaskState(row.state),
        skip=tuple(row.skip or ()),
        guided_failure=bool(row.guided_failure),
        variables=tuple(row.variables or ()),
        started_at=row.started_at,
    )


async def release(session: AsyncSession, release_id: int) -> ReleaseRecord:
    row = (await session.execute(select(t.releases).where(t.releases.c.id == release_id))).one()
    return ReleaseRecord(
        id=int(row.id),
        version=row.version,
        notes=row.notes or "",
        created_by=row.created_by,
        channel=row.channel,
        snapshot=row.snapshot,
        packages=dict(row.packages or {}),
        children=tuple(row.children or ()),
    )


async def steps(session: AsyncSession, task_id: int) -> tuple[StepRun, ...]:
    rows = await session.execute(
        select(t.task_steps).where(t.task_steps.c.task_id == task_id).order_by(t.task_steps.c.idx)
    )
    return tuple(
        StepRun(
            idx=r.idx,
            name=r.name,
            state=StepState(r.state),
            reason=r.reason,
            attempt=r.attempt,
            child_task_id=r.child_task_id,
            interruption_id=r.interruption_id,
            outputs=dict(r.outputs or {}),
        )
        for r in rows
    )


async def interruption(session: AsyncSession, interruption_id: int) -> InterruptionRecord:
    row = (
        await session.execute(
            select(t.interruptions).where(t.interruptions.c.id == interruption_id)
        )
    ).one()
    return InterruptionRecord(
        id=int(row.id),
        task_id=row.task_id,
        step_idx=row.step_idx,
        kind=row.kind,
        state=row.state,
        result=row.result,
        answered_by=row.answered_by,
        notes=row.notes,
        settings=dict(row.settings or {}),
        fields={str(k): str(v) for k, v in (row.fields or {}).items()},
    )


async def success_versions(session: AsyncSession, environment_id: int) -> dict[int, str | None]:
    """Project id -> the version last deployed successfully to the environment."""
    rows = await session.execute(
        select(t.dashboard.c.project_id, t.dashboard.c.success_version).where(
            t.dashboard.c.environment_id == environment_id
        )
    )
    return {r.project_id: r.success_version for r in rows}
