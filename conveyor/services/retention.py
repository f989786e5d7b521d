"""Retention, the read side: the facts the planner needs, and the plan as the API shows it.

What the policies would delete now (`conveyor retention plan`, ``GET /api/v1/retention/plan``,
the /retention page). Reading it needs ``AdministerSystem``, or ``ReleaseView`` and
``DeploymentView`` held for every project and environment (the Auditor role, a Project Viewer
without scope): the plan names releases of every project. Applying it is
`conveyor.services.retention_apply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from conveyor.domain import permissions as perms
from conveyor.domain import retention as rules
from conveyor.domain.codec_retention import describe
from conveyor.domain.documents import Lifecycle, PackageAction, RetentionPolicy
from conveyor.domain.errors import PermissionDenied
from conveyor.domain.packages import package_key
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
# The name of the lease row of the retention job (``singleton_leases``).
LEASE = "retention"
FINISHED = frozenset({"success", "failed", "canceled", "timed_out"})


def may_read(caller: Caller | None) -> bool:
    """Whether ``caller`` may see the plan (the navigation asks this too)."""
    return caller is not None and rules.may_read_plan(caller.principal)


def require_read(caller: Caller) -> None:
    if not may_read(caller):
        raise PermissionDenied(
            f"{caller.username} may not read the retention plan: it needs AdministerSystem, or "
            "ReleaseView and DeploymentView for every project and environment (the Auditor "
            "role has them)",
            permission=str(P.AdministerSystem),
        )


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------- the facts


def governed(loaded: Loaded) -> dict[str, Lifecycle]:
    """Project name -> its lifecycle, for the projects whose lifecycle has any policy."""
    out = {}
    for project in loaded.model.projects:
        lc = loaded.model.get("lifecycles", project.lifecycle)
        if isinstance(lc, Lifecycle) and rules.has_policy(lc):
            out[project.name] = lc
    return out


async def gather(services: Services, loaded: Loaded, now: datetime) -> rules.Facts:
    """Everything the planner needs, read in one transaction. Only the releases and
    deployments of projects with a policy are read: the others are kept forever."""
    lifecycles = governed(loaded)
    if not lifecycles:
        return rules.Facts(now, {})
    names = {
        pid: name for name in lifecycles if (pid := loaded.id_of("projects", name)) is not None
    }
    users: dict[str, set[str]] = {}
    for project in loaded.model.projects:
        for step in project.process.steps:
            if isinstance(step.action, PackageAction):
                users.setdefault(package_key(step.action.package), set()).add(project.name)
    r, d, k = t.releases.c, t.deployments.c, t.tasks.c
    async with services.read() as session:
        release_rows = (
            await session.execute(
                select(r.id, r.project_id, r.version, r.created_at, r.packages, r.children)
                .where(r.project_id.in_(list(names)))
                .order_by(r.id)
            )
        ).all()
        deployment_rows = (
            await session.execute(
                select(
                    d.id,
                    d.release_id,
                    d.project_id,
                    d.environment_id,
                    d.created_at,
                    d.state,
                    d.parent_id,
                    d.task_id,
                    k.log_removed_at,
                )
                .outerjoin(t.tasks, k.id == d.task_id)
                .where(d.project_id.in_(list(names)))
                .order_by(d.id)
            )
        ).all()
        other_rows = (
            await session.execute(
                select(r.packages, r.project_id).where(r.project_id.not_in(list(names)))
            )
        ).all()
        board = (await session.execute(select(t.dashboard))).all()
        pinned = (await session.execute(select(t.release_pins.c.release_id))).scalars().all()
        package_rows = (
            await session.execute(
                select(
                    t.packages.c.id,
                    t.packages.c.package_id,
                    t.packages.c.version,
                    t.packages.c.created_at,
                    t.packages.c.size,
                )
            )
        ).all()
    releases = []
    for row in release_rows:
        owner = names[row.project_id]
        pins = tuple((str(p), str(v)) for p, v in dict(row.packages or {}).items())
        for package, _ in pins:
            users.setdefault(package_key(package), set()).add(owner)
        children = tuple(
            int(c["release_id"]) for c in row.children or [] if c.get("release_id") is not None
        )
        releases.append(
            rules.ReleaseFact(row.id, owner, row.version, _utc(row.created_at), pins, children)
        )
    other_pins: set[tuple[str, str]] = set()
    for other_row in other_rows:
        other = loaded.name_of("projects", other_row.project_id) or ""
        for package, version in dict(other_row.packages or {}).items():
            other_pins.add((str(package), str(version)))
            users.setdefault(package_key(str(package)), set()).add(other)
    deployments = [
        rules.DeploymentFact(
            row.id,
            row.release_id,
            names[row.project_id],
            loaded.name_of("environments", row.environment_id) or f"#{row.environment_id}",
            _utc(row.created_at),
            finished=row.state in FINISHED,
            parent=row.parent_id,
            task=row.task_id,
            has_log=row.task_id is not None and row.log_removed_at is None,
        )
        for row in deployment_rows
    ]
    release_of = {dep.id: dep.release for dep in deployments}
    current_deployments: set[int] = set()
    current_releases: set[int] = set()
    for row in board:
        for dep_id in (row.deployment_id, row.previous_deployment_id):
            if dep_id is not None:
                current_deployments.add(int(dep_id))
                if int(dep_id) in release_of:
                    current_releases.add(release_of[int(dep_id)])
        for rel_id in (row.release_id, row.success_release_id):
            if rel_id is not None:
                current_releases.add(int(rel_id))
    return rules.Facts(
        now=now,
        lifecycles=lifecycles,
        releases=releases,
        deployments=deployments,
        current_deployments=frozenset(current_deployments),
        current_releases=frozenset(current_releases),
        pinned_releases=frozenset(int(i) for i in pinned),
        packages=[
            rules.PackageFact(p.id, p.package_id, p.version, _utc(p.created_at), int(p.size))
            for p in package_rows
        ],
        package_users={p: frozenset(projects) for p, projects in users.items()},
        other_pins=frozenset(other_pins),
    )


async def current_plan(services: Services) -> rules.Plan:
    """What the policies would delete now (no permission: for the job and the services)."""
    loaded = await load(services)
    return rules.plan(await gather(services, loaded, services.clock()))


# ---------------------------------------------------------------- the plan as shown


@dataclass(frozen=True)
class Shown:
    plan: rules.Plan
    policies: list[dict[str, Any]]
    last_run: dict[str, Any] | None
    generated: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated": iso(self.generated),
            "counts": self.plan.counts(),
            "releases": [_release(x) for x in self.plan.releases],
            "deployments": [_deployment(x) for x in self.plan.deployments],
            "task_logs": [_log(x) for x in self.plan.task_logs],
            "packages": [_package(x) for x in self.plan.packages],
            "policies": self.policies,
            "last_run": self.last_run,
        }


def _release(x: rules.Removal) -> dict[str, Any]:
    version = x.what.removeprefix(f"{x.project} ")
    return {
        "id": public_id("releases", x.id),
        "project": x.project,
        "version": version,
        "reason": x.reason,
    }


def _deployment(x: rules.Removal) -> dict[str, Any]:
    return {
        "id": public_id("deployments", x.id),
        "project": x.project,
        "environment": x.environment,
        "release": public_id("releases", x.release),
        "task": public_id("tasks", x.task),
        "description": x.what,
        "reason": x.reason,
    }


def _log(x: rules.Removal) -> dict[str, Any]:
    return _deployment(x)


def _package(x: rules.Removal) -> dict[str, Any]:
    package_id, _, version = x.what.rpartition(" ")
    return {
        "id": public_id("packages", x.id),
        "package_id": package_id,
        "version": version,
        "size": x.size,
        "reason": x.reason,
    }


def _policy(policy: RetentionPolicy | None, noun: str) -> dict[str, Any] | None:
    if policy is None:
        return None
    return {"keep": policy.keep, "unit": str(policy.unit), "text": describe(policy, noun)}


def policies(loaded: Loaded) -> list[dict[str, Any]]:
    """Each lifecycle's policies, phase by phase (what is in force where)."""
    out = []
    for lc in loaded.model.lifecycles:
        out.append(
            {
                "lifecycle": lc.name,
                "releases": _policy(lc.release_retention, "releases"),
                "task_logs": _policy(lc.task_log_retention, "deployments"),
                "packages": _policy(lc.package_retention, "versions"),
                "phases": [
                    {
                        "phase": ph.name,
                        "releases": _policy(rules.release_policy(lc, ph), "releases"),
                        "task_logs": _policy(rules.task_log_policy(lc, ph), "deployments"),
                    }
                    for ph in lc.phases
                ],
                "projects": sorted(p.name for p in loaded.model.projects if p.lifecycle == lc.name),
            }
        )
    return out


async def last_run(services: Services) -> dict[str, Any] | None:
    L = t.singleton_leases.c
    async with services.read() as session:
        row = (await session.execute(select(t.singleton_leases).where(L.name == LEASE))).first()
    if row is None or row.finished_at is None:
        return None
    outcome = dict(row.outcome or {})
    return {
        "finished": iso(row.finished_at),
        "node": outcome.get("node"),
        "counts": outcome.get("counts", {}),
        "error": outcome.get("error"),
    }


async def show_plan(services: Services, caller: Caller) -> Shown:
    """What the policies would delete now, and why (AdministerSystem, or read everywhere)."""
    require_read(caller)
    loaded = await load(services)
    now = services.clock()
    plan = rules.plan(await gather(services, loaded, now))
    return Shown(plan, policies(loaded), await last_run(services), now)
