"""Targets at run time: their recorded health, as deployments and `conveyor target list` read it.

Health checks (`conveyor target check`, the periodic check of `conveyor.engine.health`) write one
row per target; a change of state is audited (``TargetHealthChanged``), a check that finds what
the one before found is not. Who sees a target's health is who sees the target document
(``MachineView`` in one of its environments); who may check one is who may edit it
(``MachineEdit`` there).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import Project, Target, key, slugify
from conveyor.domain.errors import PermissionDenied
from conveyor.domain.model import Model
from conveyor.domain.targets import Health, HealthState, changed, runs_on
from conveyor.domain.visibility import sees_deployment
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.services.documents import may_view, resolve
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
H = t.target_health.c
# PostgreSQL advisory lock held by the node doing a round of periodic checks: one at a time.
ROUND_LOCK = 7_010_012
# SQLite is one node: rounds of one process wait for each other here.
_ROUNDS: weakref.WeakKeyDictionary[Services, asyncio.Lock] = weakref.WeakKeyDictionary()


def health_key(name: str) -> str:
    return slugify(name)


async def health_states(services: Services) -> dict[str, HealthState]:
    """The last recorded state of each checked target, by the slug of its name."""
    async with services.read() as session:
        rows = (await session.execute(select(H.target, H.state))).all()
    return {row.target: HealthState(row.state) for row in rows}


# ---------------------------------------------------------------- what a person sees


@dataclass(frozen=True)
class Recorded:
    """The last check of one target (``state`` unknown and no times: never checked)."""

    state: HealthState = HealthState.UNKNOWN
    message: str = ""
    os: str = ""
    free_disk_bytes: int | None = None
    agent_version: str = ""
    checked_at: datetime | None = None
    changed_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "health": self.state.value,
            "message": self.message,
            "os": self.os,
            "free_disk_bytes": self.free_disk_bytes,
            "agent_version": self.agent_version,
            "checked_at": iso(self.checked_at),
            "changed_at": iso(self.changed_at),
        }


@dataclass(frozen=True)
class LastDeployment:
    id: str
    project: str
    release: str
    environment: str
    state: str
    task: str | None
    completed_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "release": self.release,
            "environment": self.environment,
            "state": self.state,
            "task": self.task,
            "completed_at": self.completed_at,
        }


@dataclass(frozen=True)
class TargetStatus:
    """One target as `conveyor target list` and the targets page show it."""

    id: str
    name: str
    kind: str
    environments: tuple[str, ...]
    roles: tuple[str, ...]
    pool: str
    disabled: bool
    recorded: Recorded
    # The latest deployment the caller may see in each of its environments, of a project whose
    # process has a step on one of its roles there.
    last_deployments: dict[str, LastDeployment] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.recorded.state is HealthState.HEALTHY

    def last_deployment(self, environment: str | None = None) -> LastDeployment | None:
        found = [
            d
            for env, d in self.last_deployments.items()
            if environment is None or key(env) == key(environment)
        ]
        return max(found, key=lambda d: _number(d.id), default=None)

    def as_dict(self, environment: str | None = None) -> dict[str, Any]:
        last = self.last_deployment(environment)
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "environments": list(self.environments),
            "roles": list(self.roles),
            "pool": self.pool or None,
            "disabled": self.disabled,
            **self.recorded.as_dict(),
            "last_deployment": last.as_dict() if last is not None else None,
        }


def _recorded(row: Any) -> Recorded:
    return Recorded(
        HealthState(row.state),
        row.message,
        row.os,
        row.free_disk_bytes,
        row.agent_version,
        row.checked_at,
        row.changed_at,
    )


def may_check(caller: Caller, target: Target) -> perms.Decision:
    """Who may edit a target may check it: ``MachineEdit`` in one of its environments (a
    worker, which has none: anywhere)."""
    decisions = [
        perms.authorize(caller.principal, P.MachineEdit, environment=env)
        for env in target.environments
    ] or [perms.authorize(caller.principal, P.MachineEdit)]
    return next((d for d in decisions if d.allowed), decisions[0])


async def list_targets(
    services: Services, caller: Caller, environment: str | None = None
) -> list[TargetStatus]:
    """The targets the caller may see (in ``environment`` only, when given; workers belong to
    none and are left out then), in file order, with their last check and last deployment."""
    loaded = await load(services)
    model = loaded.model
    wanted = key(resolve(loaded, "environments", environment).name) if environment else None
    shown = [
        target
        for target in model.targets
        if may_view(caller, model, "targets", target)
        and (wanted is None or wanted in {key(e) for e in target.environments})
    ]
    return await _statuses(services, caller, loaded, shown)


async def statuses_of(
    services: Services, caller: Caller, targets: Sequence[Target]
) -> list[TargetStatus]:
    """``targets`` as `list_targets` shows them (after a check)."""
    return await _statuses(services, caller, await load(services), targets)


async def _statuses(
    services: Services, caller: Caller, loaded: Loaded, targets: Sequence[Target]
) -> list[TargetStatus]:
    if not targets:
        return []
    slugs = {health_key(target.name) for target in targets}
    async with services.read() as session:
        rows = (await session.execute(select(t.target_health).where(H.target.in_(slugs)))).all()
        last = await _last_deployments(session, caller, loaded, targets)
    recorded = {row.target: _recorded(row) for row in rows}
    return [
        TargetStatus(
            id=public_id("targets", loaded.id_of("targets", target.name)),
            name=target.name,
            kind=target.kind,
            environments=target.environments,
            roles=target.roles,
            pool=target.pool,
            disabled=target.disabled,
            recorded=recorded.get(health_key(target.name), Recorded()),
            last_deployments=last.get(target.name, {}),
        )
        for target in targets
    ]


async def _last_deployments(
    session: AsyncSession, caller: Caller, loaded: Loaded, targets: Sequence[Target]
) -> dict[str, dict[str, LastDeployment]]:
    """For each target and environment, the latest deployment there that ran on it, among
    those the caller may see: the current deployment (the dashboard projection, one row per
    project and environment, never the history) of each project whose process has a step on
    one of the target's roles, when its task log has lines of that target (a deployment that
    left the target out, or failed before it started, did not run there)."""
    model: Model = loaded.model
    environments = {key(e) for target in targets for e in target.environments}
    env_ids = {
        row_id: env.name
        for env in model.environments
        if key(env.name) in environments
        and (row_id := loaded.id_of("environments", env.name)) is not None
    }
    if not env_ids:
        return {}
    d = t.dashboard.c
    rows = (
        await session.execute(
            select(
                d.project_id,
                d.environment_id,
                d.deployment_id,
                d.release_version,
                d.state,
                d.task_id,
                d.completed_at,
            ).where(d.environment_id.in_(sorted(env_ids)))
        )
    ).all()
    candidates: list[tuple[Target, LastDeployment, int]] = []
    for row in rows:
        project_name = loaded.name_of("projects", row.project_id)
        project = model.get("projects", project_name) if project_name else None
        environment = env_ids[row.environment_id]
        if not isinstance(project, Project) or row.task_id is None:
            continue
        ref = perms.ProjectRef(project.name, project.group)
        if not sees_deployment(caller.principal, ref, environment):
            continue
        deployment = LastDeployment(
            id=public_id("deployments", row.deployment_id),
            project=project.name,
            release=row.release_version,
            environment=environment,
            state=row.state,
            task=public_id("tasks", row.task_id),
            completed_at=iso(row.completed_at),
        )
        for target in targets:
            # By the project's current process: one of its steps runs on the target there.
            if any(runs_on(step, target, environment) for step in project.process.steps):
                candidates.append((target, deployment, row.task_id))
    if not candidates:
        return {}
    L = t.task_logs.c
    tasks_ran = await session.execute(
        select(L.task_id, L.target)
        .where(
            L.task_id.in_(sorted({task for _, _, task in candidates})),
            L.target.in_(sorted({target.name for target, _, _ in candidates})),
        )
        .group_by(L.task_id, L.target)
    )
    ran = {(row.task_id, row.target) for row in tasks_ran}
    found: dict[str, dict[str, LastDeployment]] = {}
    for target, deployment, task_id in candidates:
        if (task_id, target.name) not in ran:
            continue
        mine = found.setdefault(target.name, {})
        before = mine.get(deployment.environment)
        if before is None or _number(before.id) < _number(deployment.id):
            mine[deployment.environment] = deployment
    return found


def _number(public: str) -> int:
    return int(public.rsplit("-", 1)[-1])


# ---------------------------------------------------------------- checks


async def checkable(services: Services, caller: Caller, name: str | None) -> list[Target]:
    """The targets a check by ``caller`` covers: ``name`` (refused unless the caller may edit
    it), or every enabled target the caller may edit (refused when there is none)."""
    loaded = await load(services)
    model = loaded.model
    if name is not None:
        target = resolve(loaded, "targets", name)
        decision = may_check(caller, target)
        if decision.allowed:
            return [target]
        if not may_view(caller, model, "targets", target):
            raise PermissionDenied(decision.reason, permission=str(decision.permission))
        async with services.tx(caller) as tx:  # refused, and the refusal audited
            tx.require(
                P.MachineEdit,
                environment=target.environments[0] if target.environments else None,
                documents=[public_id("targets", loaded.id_of("targets", target.name))],
            )
        raise PermissionDenied(decision.reason, permission=str(decision.permission))
    enabled = [target for target in model.targets if not target.disabled]
    allowed = [target for target in enabled if may_check(caller, target).allowed]
    if enabled and not allowed:
        decision = may_check(caller, enabled[0])
        raise PermissionDenied(decision.reason, permission=str(decision.permission))
    return allowed


async def record(services: Services, caller: Caller, target: Target, health: Health) -> bool:
    """Write what a check of ``target`` found; audit it when the state differs from the last
    recorded one. Whether it was audited (the state changed)."""
    slug = health_key(target.name)
    loaded = await load(services)
    async with services.tx(caller) as tx:
        now = tx.now
        before = await _locked_state(tx.session, services, slug, health, now)
        values = {
            "state": health.state.value,
            "message": health.message,
            "os": health.os,
            "free_disk_bytes": health.free_disk_bytes,
            "agent_version": health.agent_version,
            "checked_at": now,
        }
        is_change = before is None or changed(before, health.state)
        if is_change:
            values["changed_at"] = now
        await tx.session.execute(t.target_health.update().where(H.target == slug).values(values))
        if not is_change:
            return False
        verdict = "healthy" if health.healthy else health.state.value
        said = f": {health.message}" if health.message and not health.healthy else ""
        env_id = (
            loaded.id_of("environments", target.environments[0]) if target.environments else None
        )
        doc_id = public_id("targets", loaded.id_of("targets", target.name))
        await tx.audit(
            Category.TARGET_HEALTH_CHANGED,
            f"Target {target.name} found {verdict}{said}",
            documents=[doc_id] if doc_id else [],
            details={
                "target": target.name,
                "state": health.state.value,
                "previous": before.value if before is not None else None,
                "message": health.message,
            },
            environment_id=env_id,
        )
        return True


async def _locked_state(
    session: AsyncSession, services: Services, slug: str, health: Health, now: datetime
) -> HealthState | None:
    """The state recorded before this check, its row locked until the commit (two checks of
    one target at once, on two nodes, audit one change, not two). None: never checked; the row
    is then made here (with this check's values, updated by the caller like any other)."""
    locked = select(H.state).where(H.target == slug).with_for_update()
    state = (await session.execute(locked)).scalar_one_or_none()
    if state is not None:
        return HealthState(state)
    insert = sqlite_insert if services.is_sqlite else pg_insert
    made = await session.execute(
        insert(t.target_health)
        .values(
            target=slug,
            state=health.state.value,
            message="",
            os="",
            free_disk_bytes=None,
            agent_version="",
            checked_at=now,
            changed_at=now,
        )
        .on_conflict_do_nothing(index_elements=[H.target])
        .returning(H.target)
    )
    if made.first() is not None:
        return None
    # Another check made it first (and has committed): its state is the one before.
    state = (await session.execute(locked)).scalar_one_or_none()
    return HealthState(state) if state is not None else None


async def due(services: Services, every_seconds: float) -> list[Target]:
    """The enabled targets (workers too) whose last check is older than ``every_seconds``, or
    that were never checked: what a round of the periodic check covers."""
    loaded = await load(services)
    since = services.clock() - timedelta(seconds=every_seconds)
    async with services.read() as session:
        rows = (await session.execute(select(H.target, H.checked_at))).all()
    fresh = {row.target for row in rows if _aware(row.checked_at) > since}
    return [
        target
        for target in loaded.model.targets
        if not target.disabled and health_key(target.name) not in fresh
    ]


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@contextlib.asynccontextmanager
async def round_lock(services: Services) -> AsyncIterator[bool]:
    """Whether this node does the next round of periodic checks: only one node at a time in a
    cluster (a PostgreSQL session advisory lock, held on a connection of its own for the
    round); the others skip their turn, and find the targets fresh at the next one."""
    if services.is_sqlite:
        lock = _ROUNDS.setdefault(services, asyncio.Lock())
        if lock.locked():
            yield False
            return
        async with lock:
            yield True
        return
    async with services.engine.connect() as conn:
        got = bool(
            (
                await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ROUND_LOCK})
            ).scalar_one()
        )
        await conn.commit()
        try:
            yield got
        finally:
            if got:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ROUND_LOCK})
                await conn.commit()
