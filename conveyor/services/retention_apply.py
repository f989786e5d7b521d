"""Retention, the write side: one node at a time deletes what the plan lets go, in batches.

The job holds the ``retention`` row of ``singleton_leases``: a node claims it when it is free
(or its holder's lease ran out) and the last run is older than the interval, which bumps the
row's epoch. Every batch checks, in its own transaction, that this node still holds the lease
with that epoch (fencing: a node frozen past its lease and then continuing is refused) and that
nothing it is about to delete became current, pinned or active since the plan was made, nor is
a child release that a release staying chose (Deploy All; releases go newest first). The plan
is made and applied a chunk of projects at a time (`conveyor.services.retention.plans`). Each
batch records what it deleted as one ``RetentionApplied`` event; audit events are never
deleted, so the hash chain still verifies. Package files go after their batch commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import String, cast, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from conveyor.domain import permissions as perms
from conveyor.domain import retention as rules
from conveyor.domain.audit import Category
from conveyor.domain.errors import Conflict, PermissionDenied
from conveyor.domain.packages import package_key
from conveyor.domain.versions import Version
from conveyor.services.config import public_id
from conveyor.services.core import Caller, Services, Tx, system_caller
from conveyor.services.packages import feed_root, pins_of
from conveyor.services.retention import FINISHED, LEASE, plans
from conveyor.store import runs
from conveyor.store import tables as t

log = logging.getLogger("conveyor.retention")

P = perms.Permission
L = t.singleton_leases.c
KINDS = ("releases", "deployments", "task_logs", "packages")


@dataclass
class Applied:
    """What one run deleted (``ran`` is False when another node holds the job or it is not
    due yet)."""

    ran: bool = True
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    # Things the plan named that had become current, pinned or active by their batch.
    spared: int = 0
    batches: int = 0
    freed_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "counts": self.counts,
            "spared": self.spared,
            "batches": self.batches,
            "freed_bytes": self.freed_bytes,
        }


@dataclass(frozen=True)
class Lease:
    node: str
    epoch: int


# ---------------------------------------------------------------- the lease


async def claim(services: Services, node: str, *, due_after: float | None) -> Lease | None:
    """Take the job's lease if it is free; with ``due_after`` only if the last run finished at
    least that many seconds ago. None: another node holds it, or it is not due."""
    now = services.clock()
    insert = sqlite_insert if services.is_sqlite else pg_insert
    async with services.write() as session:
        await session.execute(
            insert(t.singleton_leases)
            .values(name=LEASE, epoch=0)
            .on_conflict_do_nothing(index_elements=[L.name])
        )
        statement = update(t.singleton_leases).where(
            L.name == LEASE, or_(L.holder.is_(None), L.expires_at < now)
        )
        if due_after is not None:
            due = now - timedelta(seconds=due_after)
            statement = statement.where(or_(L.finished_at.is_(None), L.finished_at <= due))
        lease_for = timedelta(seconds=services.settings.lease_seconds)
        got = (
            await session.execute(
                statement.values(
                    holder=node, epoch=L.epoch + 1, expires_at=now + lease_for, started_at=now
                ).returning(L.epoch)
            )
        ).first()
    return Lease(node, int(got.epoch)) if got is not None else None


async def _fence(tx: Tx, lease: Lease) -> None:
    """Still ours? Renews the lease, in the batch's transaction; refuses when taken over."""
    lease_for = timedelta(seconds=tx.services.settings.lease_seconds)
    result = await tx.session.execute(
        update(t.singleton_leases)
        .where(L.name == LEASE, L.holder == lease.node, L.epoch == lease.epoch)
        .values(expires_at=tx.now + lease_for)
    )
    if int(getattr(result, "rowcount", 0) or 0) != 1:
        raise Conflict(
            f"node {lease.node} no longer holds the retention job (epoch {lease.epoch}): "
            "another node took it over; nothing more is deleted here"
        )


async def release_lease(services: Services, lease: Lease, outcome: dict[str, Any]) -> None:
    async with services.write() as session:
        await session.execute(
            update(t.singleton_leases)
            .where(L.name == LEASE, L.holder == lease.node, L.epoch == lease.epoch)
            .values(holder=None, expires_at=None, finished_at=services.clock(), outcome=outcome)
        )


# ---------------------------------------------------------------- running


async def run_if_due(services: Services, node: str) -> Applied:
    """The periodic job: apply the policies if no node did within the interval."""
    lease = await claim(services, node, due_after=services.settings.retention_interval)
    if lease is None:
        return Applied(ran=False)
    return await _run(services, system_caller(), lease)


async def apply_now(services: Services, caller: Caller, node: str) -> Applied:
    """`conveyor retention apply`: apply the policies now (AdministerSystem)."""
    decision = perms.authorize(caller.principal, P.AdministerSystem)
    if not decision.allowed:
        async with services.tx(caller) as tx:  # audits the refusal
            tx.require(P.AdministerSystem)
        raise PermissionDenied(decision.reason, permission=str(P.AdministerSystem))
    lease = await claim(services, node, due_after=None)
    if lease is None:
        raise Conflict("another node is applying the retention policies now; try again shortly")
    return await _run(services, caller, lease)


async def _run(services: Services, caller: Caller, lease: Lease) -> Applied:
    applied = Applied()
    outcome: dict[str, Any] = {"node": lease.node}
    try:
        # A chunk of projects at a time: each part is planned once the one before is applied.
        async for plan in plans(services):
            await apply_plan(services, caller, lease, plan, applied)
    except Exception as exc:
        outcome["error"] = str(exc) if isinstance(exc, Conflict) else type(exc).__name__
        raise
    finally:
        outcome["counts"] = applied.counts
        outcome["freed_bytes"] = applied.freed_bytes
        await release_lease(services, lease, outcome)
    return applied


def _chunks(items: Sequence[rules.Removal], size: int) -> Iterable[list[rules.Removal]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


async def apply_plan(
    services: Services, caller: Caller, lease: Lease, plan: rules.Plan, applied: Applied
) -> None:
    """Delete what ``plan`` lets go, ``retention_batch`` things per transaction."""
    size = services.settings.retention_batch
    gone_releases = {x.id for x in plan.releases}
    # The releases the plan lets go and no batch spared yet: a child release stays while a
    # parent outside this set (kept, spared, or made since the plan) chose it. Newest first:
    # a parent is newer than the releases it chose, so it is spared (or not) before them.
    doomed = set(gone_releases)
    newest_first = sorted(plan.releases, key=lambda x: x.id, reverse=True)
    for chunk in _chunks(newest_first, size):
        await _batch(services, caller, lease, applied, releases=chunk, doomed=doomed)
    alone = [x for x in plan.deployments if x.release not in gone_releases]
    for chunk in _chunks(alone, size):
        await _batch(services, caller, lease, applied, deployments=chunk)
    for chunk in _chunks(plan.task_logs, size):
        await _batch(services, caller, lease, applied, task_logs=chunk)
    for chunk in _chunks(plan.packages, size):
        await _batch(services, caller, lease, applied, packages=chunk)


async def _batch(
    services: Services,
    caller: Caller,
    lease: Lease,
    applied: Applied,
    *,
    releases: Sequence[rules.Removal] = (),
    deployments: Sequence[rules.Removal] = (),
    task_logs: Sequence[rules.Removal] = (),
    packages: Sequence[rules.Removal] = (),
    doomed: set[int] | None = None,
) -> None:
    files: list[Path] = []
    async with services.tx(caller) as tx:
        if not caller.is_system:
            tx.require(P.AdministerSystem)
        await _fence(tx, lease)
        done: dict[str, list[int]] = {kind: [] for kind in KINDS}
        spared = 0
        if releases:
            ids = await _releases_still_unused(tx, [x.id for x in releases], doomed or set())
            spared += len(releases) - len(ids)
            if doomed is not None:
                doomed.difference_update(x.id for x in releases if x.id not in ids)
            deps = await _deployments_of(tx, ids)
            await _delete_deployments(tx, deps)
            await tx.session.execute(delete(t.releases).where(t.releases.c.id.in_(ids)))
            done["releases"] = ids
            done["deployments"] = sorted(deps)
        if deployments:
            ids = await _deployments_still_unused(tx, [x.id for x in deployments])
            spared += len(deployments) - len(ids)
            deps = await _tasks_of(tx, ids)
            await _delete_deployments(tx, deps)
            done["deployments"] = sorted(deps)
        if task_logs:
            ids = await _deployments_still_unused(tx, [x.id for x in task_logs])
            spared += len(task_logs) - len(ids)
            tasks = [task for task in (await _tasks_of(tx, ids)).values() if task is not None]
            await runs.forget_logs(tx.session, tasks, tx.now)
            done["task_logs"] = sorted(tasks)
        if packages:
            rows = await _packages_still_unpinned(tx, [x.id for x in packages])
            spared += len(packages) - len(rows)
            await tx.session.execute(
                delete(t.packages).where(t.packages.c.id.in_([row.id for row in rows]))
            )
            done["packages"] = [row.id for row in rows]
            root = feed_root(services.settings)
            files = [root / row.package_key / row.file_name for row in rows]
            applied.freed_bytes += sum(int(row.size) for row in rows)
        if any(done.values()):
            await _audit(tx, lease, done)
    for kind in KINDS:
        applied.counts[kind] += len(done[kind])
    applied.spared += spared
    applied.batches += 1
    for path in files:
        await asyncio.to_thread(path.unlink, missing_ok=True)


# ---------------------------------------------------------------- checked again in the batch


async def _protected_releases(tx: Tx, ids: list[int]) -> set[int]:
    """Of ``ids``: the releases current or previous somewhere, pinned, or being deployed."""
    if not ids:
        return set()
    b, d = t.dashboard.c, t.deployments.c
    s = tx.session
    out: set[int] = set()
    out.update((await s.execute(select(b.release_id).where(b.release_id.in_(ids)))).scalars().all())
    out.update(
        (
            await s.execute(select(b.success_release_id).where(b.success_release_id.in_(ids)))
        ).scalars()
    )
    previous = select(b.previous_deployment_id).where(b.previous_deployment_id.is_not(None))
    out.update(
        (
            await s.execute(select(d.release_id).where(d.release_id.in_(ids), d.id.in_(previous)))
        ).scalars()
    )
    pinned = t.release_pins.c
    out.update(
        (await s.execute(select(pinned.release_id).where(pinned.release_id.in_(ids)))).scalars()
    )
    out.update(
        (
            await s.execute(
                select(d.release_id).where(d.release_id.in_(ids), d.state.not_in(FINISHED))
            )
        ).scalars()
    )
    return {int(i) for i in out}


async def _releases_still_unused(tx: Tx, ids: list[int], doomed: set[int]) -> list[int]:
    protected = await _protected_releases(tx, ids)
    protected |= await _chosen_by_staying(tx, set(ids) - protected, doomed - protected)
    return [i for i in ids if i not in protected]


async def _chosen_by_staying(tx: Tx, ids: set[int], doomed: set[int]) -> set[int]:
    """Of ``ids``: the child releases that a release staying chose (Deploy All), however deep;
    a parent may have become pinned or current since the plan, or have been made since."""
    r = t.releases.c
    text = cast(r.children, String)
    rows = await tx.session.execute(
        select(r.id, r.children).where(text.not_in(["[]", "{}", "null"]), r.children.is_not(None))
    )
    chose: dict[int, set[int]] = {}
    for row in rows:
        for child in row.children if isinstance(row.children, list) else []:
            if isinstance(child, dict) and child.get("release_id") is not None:
                chose.setdefault(int(child["release_id"]), set()).add(int(row.id))
    out: set[int] = set()
    todo = [i for i in ids if chose.get(i, set()) - doomed]
    while todo:
        child = todo.pop()
        if child in out:
            continue
        out.add(child)
        # What this child chose stays too: its parent stays now.
        todo.extend(i for i, parents in chose.items() if child in parents and i in ids)
    return out


async def _deployments_still_unused(tx: Tx, ids: list[int]) -> list[int]:
    """Of ``ids``: those that are finished and nobody's current or previous deployment."""
    b, d = t.dashboard.c, t.deployments.c
    current = set(
        (await tx.session.execute(select(b.deployment_id).where(b.deployment_id.in_(ids))))
        .scalars()
        .all()
    )
    current.update(
        (
            await tx.session.execute(
                select(b.previous_deployment_id).where(b.previous_deployment_id.in_(ids))
            )
        ).scalars()
    )
    finished = set(
        (
            await tx.session.execute(select(d.id).where(d.id.in_(ids), d.state.in_(FINISHED)))
        ).scalars()
    )
    return [i for i in ids if i in finished and i not in current]


async def _deployments_of(tx: Tx, release_ids: list[int]) -> dict[int, int | None]:
    d = t.deployments.c
    rows = await tx.session.execute(select(d.id, d.task_id).where(d.release_id.in_(release_ids)))
    return {int(r.id): r.task_id for r in rows}


async def _tasks_of(tx: Tx, deployment_ids: list[int]) -> dict[int, int | None]:
    d = t.deployments.c
    rows = await tx.session.execute(select(d.id, d.task_id).where(d.id.in_(deployment_ids)))
    return {int(r.id): r.task_id for r in rows}


async def _delete_deployments(tx: Tx, deployments: dict[int, int | None]) -> None:
    # The run store writes the runtime tables (tests/integration/test_run_writer.py).
    await runs.forget(tx.session, deployments, tx.now)


async def _packages_still_unpinned(tx: Tx, ids: list[int]) -> list[Any]:
    p = t.packages.c
    rows = (await tx.session.execute(select(t.packages).where(p.id.in_(ids)))).all()
    pins = await pins_of(tx.session, sorted({row.package_id for row in rows}))
    pinned = {(pin.package_key, Version(pin.version)) for pin in pins}
    return [
        row for row in rows if (package_key(row.package_id), Version(row.version)) not in pinned
    ]


# Singular and plural, as the audit message counts them.
_NOUNS = {
    "releases": ("release", "releases"),
    "deployments": ("deployment", "deployments"),
    "task_logs": ("task log", "task logs"),
    "packages": ("package version", "package versions"),
}


async def _audit(tx: Tx, lease: Lease, done: dict[str, list[int]]) -> None:
    counts = {kind: len(ids) for kind, ids in done.items()}
    named = {
        "releases": [public_id("releases", i) for i in done["releases"]],
        "deployments": [public_id("deployments", i) for i in done["deployments"]],
        "task_logs": [public_id("tasks", i) for i in done["task_logs"]],
        "packages": [public_id("packages", i) for i in done["packages"]],
    }
    said = ", ".join(f"{n} {_NOUNS[kind][n != 1]}" for kind, n in counts.items() if n)
    await tx.audit(
        Category.RETENTION_APPLIED,
        f"Retention deleted {said}",
        documents=named["releases"] + named["deployments"] + named["packages"],
        details={"counts": counts, **named, "node": lease.node, "epoch": lease.epoch},
    )
