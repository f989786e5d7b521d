"""Retention, the read side: the facts the planner needs, and the plan as the API shows it.

What the policies would delete now (`conveyor retention plan`, ``GET /api/v1/retention/plan``,
the /retention page). Reading it needs ``AdministerSystem``, or ``ReleaseView`` and
``DeploymentView`` held for every project and environment (the Auditor role, a Project Viewer
without scope): the plan names releases of every project. Applying it is
`conveyor.services.retention_apply`.

The facts are read ``CHUNK`` projects at a time, a project whose releases choose another's
(Deploy All) in an earlier chunk than that one, so a chunk knows which parents outside it stay;
the feed's package versions are planned last, against the pins of every release that stays.
The job applies each part before reading the next: its memory is one chunk's history, not the
whole database's (bench/bench_retention.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import String, cast, select

from conveyor.domain import channels as ch
from conveyor.domain import permissions as perms
from conveyor.domain import retention as rules
from conveyor.domain.codec_retention import describe
from conveyor.domain.documents import (
    DeployReleaseAction,
    Lifecycle,
    PackageAction,
    RetentionPolicy,
    key,
)
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
# Projects planned together: one chunk's releases and deployments are in memory at a time
# (bench/bench_retention.py).
CHUNK = 20


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


def _same(value: datetime) -> datetime:
    return value


# ---------------------------------------------------------------- the facts


def governed(loaded: Loaded) -> tuple[dict[str, Lifecycle], dict[tuple[str, str], Lifecycle]]:
    """For the projects any of whose lifecycles (the project's, its channels') has a policy:
    project name -> its lifecycle, and (project name, channel key) -> a channel's own."""
    projects: dict[str, Lifecycle] = {}
    channels: dict[tuple[str, str], Lifecycle] = {}
    for project in loaded.model.projects:
        own = loaded.model.get("lifecycles", project.lifecycle)
        theirs = {}
        for channel in ch.channels_of(project):
            lc = loaded.model.get("lifecycles", channel.lifecycle) if channel.lifecycle else None
            if isinstance(lc, Lifecycle):
                theirs[(project.name, key(channel.name))] = lc
        found = [lc for lc in (own, *theirs.values()) if isinstance(lc, Lifecycle)]
        if isinstance(own, Lifecycle) and any(rules.has_policy(lc) for lc in found):
            projects[project.name] = own
            channels.update(theirs)
    return projects, channels


def _steps_using(loaded: Loaded) -> dict[str, set[str]]:
    """Package key -> the projects whose process deploys it."""
    users: dict[str, set[str]] = {}
    for project in loaded.model.projects:
        for step in project.process.steps:
            if isinstance(step.action, PackageAction):
                users.setdefault(package_key(step.action.package), set()).add(project.name)
    return users


@dataclass(frozen=True)
class _Choices:
    """Deploy All: the releases that chose each child release, and which project's releases
    chose which project's (from the process and from the releases themselves)."""

    parents_of: dict[int, set[int]]
    edges: set[tuple[str, str]]


async def _choices(services: Services, loaded: Loaded) -> _Choices:
    r = t.releases.c
    edges: set[tuple[str, str]] = set()
    for project in loaded.model.projects:
        for step in project.process.steps:
            if isinstance(step.action, DeployReleaseAction):
                edges.add((project.name, step.action.project))
    query = select(r.id, r.project_id, r.children).where(
        cast(r.children, String).not_in(["[]", "{}", "null"])
    )
    parents_of: dict[int, set[int]] = defaultdict(set)
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    for row in rows:
        parent = loaded.name_of("projects", row.project_id)
        for child in row.children if isinstance(row.children, list) else []:
            if isinstance(child, dict) and child.get("release_id") is not None:
                parents_of[int(child["release_id"])].add(int(row.id))
                name = loaded.name_of("projects", int(child.get("project_id") or 0))
                if parent and name:
                    edges.add((parent, name))
    return _Choices(dict(parents_of), edges)


def _chunks(names: Sequence[str], edges: set[tuple[str, str]]) -> list[list[str]]:
    """The projects in chunks of ``CHUNK``, a project whose releases choose another's before
    it (so the chunk of the child knows which of its parents stay); cycles as they come."""
    wanted = set(names)
    after: dict[str, set[str]] = defaultdict(set)
    before = dict.fromkeys(names, 0)
    for parent, child in edges:
        parent, child = _named(names, parent), _named(names, child)
        if parent in wanted and child in wanted and parent != child and child not in after[parent]:
            after[parent].add(child)
            before[child] += 1
    ready = deque(n for n in names if before[n] == 0)
    order: list[str] = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for child in sorted(after[name]):
            before[child] -= 1
            if before[child] == 0:
                ready.append(child)
    placed = set(order)
    order += [n for n in names if n not in placed]
    return [order[i : i + CHUNK] for i in range(0, len(order), CHUNK)]


def _named(names: Sequence[str], name: str) -> str:
    wanted = key(name)
    return next((n for n in names if key(n) == wanted), name)


async def _chunk_facts(
    services: Services,
    loaded: Loaded,
    now: datetime,
    scope: tuple[dict[str, Lifecycle], dict[tuple[str, str], Lifecycle]],
    chunk: Sequence[str],
    choices: _Choices,
    gone: set[int],
) -> rules.Facts:
    """The releases and deployments of a chunk of projects, read in one transaction."""
    lifecycles, channel_lifecycles = scope
    names = {pid: name for name in chunk if (pid := loaded.id_of("projects", name)) is not None}
    r, d, k, b = t.releases.c, t.deployments.c, t.tasks.c, t.dashboard.c
    async with services.read() as session:
        release_rows = (
            await session.execute(
                select(
                    r.id, r.project_id, r.version, r.created_at, r.packages, r.children, r.channel
                )
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
        board = (
            await session.execute(select(t.dashboard).where(b.project_id.in_(list(names))))
        ).all()
        pinned = (await session.execute(select(t.release_pins.c.release_id))).scalars().all()
    # SQLite hands back naive datetimes (UTC): made aware by a C call, not a Python one per
    # row; PostgreSQL's are aware already.
    utc = partial(datetime.replace, tzinfo=UTC) if services.is_sqlite else _same
    releases = []
    for row in release_rows:
        pins = tuple((str(p), str(v)) for p, v in dict(row.packages or {}).items())
        children = tuple(
            int(c["release_id"]) for c in row.children or [] if c.get("release_id") is not None
        )
        releases.append(
            rules.ReleaseFact(
                row.id,
                names[row.project_id],
                row.version,
                utc(row.created_at),
                pins,
                children,
                row.channel,
            )
        )
    mine = {row.id for row in release_rows}
    # Chosen by a release outside the chunk that stays: of a project without a policy, of a
    # chunk not planned yet (it may stay), or planned and kept.
    elsewhere = {
        child
        for child in mine
        if any(p not in mine and p not in gone for p in choices.parents_of.get(child, ()))
    }
    environments = {
        row_id: loaded.name_of("environments", row_id) or f"#{row_id}"
        for row_id in {row.environment_id for row in deployment_rows}
    }
    deployments = [
        rules.DeploymentFact(
            row.id,
            row.release_id,
            names[row.project_id],
            environments[row.environment_id],
            utc(row.created_at),
            row.state in FINISHED,  # finished
            row.parent_id,
            row.task_id,
            row.task_id is not None and row.log_removed_at is None,  # has_log
            row.state == "success",  # succeeded
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
        lifecycles={name: lifecycles[name] for name in chunk},
        releases=releases,
        deployments=deployments,
        current_deployments=frozenset(current_deployments),
        current_releases=frozenset(current_releases),
        pinned_releases=frozenset(int(i) for i in pinned if int(i) in mine),
        channel_lifecycles={at: lc for at, lc in channel_lifecycles.items() if at[0] in set(chunk)},
        kept_elsewhere=frozenset(elsewhere),
    )


async def _package_facts(
    services: Services,
    loaded: Loaded,
    now: datetime,
    scope: tuple[dict[str, Lifecycle], dict[tuple[str, str], Lifecycle]],
    gone: set[int],
) -> rules.Facts:
    """The feed, who uses each package, and the versions pinned by the releases that stay."""
    users = _steps_using(loaded)
    r, p = t.releases.c, t.packages.c
    async with services.read() as session:
        release_rows = (await session.execute(select(r.id, r.project_id, r.packages))).all()
        package_rows = (
            await session.execute(select(p.id, p.package_id, p.version, p.created_at, p.size))
        ).all()
    pins: set[tuple[str, str]] = set()
    for row in release_rows:
        owner = loaded.name_of("projects", row.project_id) or ""
        for package, version in dict(row.packages or {}).items():
            users.setdefault(package_key(str(package)), set()).add(owner)
            if row.id not in gone:
                pins.add((str(package), str(version)))
    utc = partial(datetime.replace, tzinfo=UTC) if services.is_sqlite else _same
    return rules.Facts(
        now=now,
        lifecycles=scope[0],
        channel_lifecycles=scope[1],
        packages=[
            rules.PackageFact(row.id, row.package_id, row.version, utc(row.created_at), row.size)
            for row in package_rows
            if package_key(row.package_id) in users  # a package no project uses is kept
        ],
        package_users={name: frozenset(projects) for name, projects in users.items()},
        other_pins=frozenset(pins),
    )


async def plans(services: Services) -> AsyncIterator[rules.Plan]:
    """What the policies would delete now: a chunk of ``CHUNK`` projects at a time (their
    releases, deployments and logs), then the feed's package versions. Lazy: the job applies
    each part before the next is read, so one chunk's history is in memory at a time. Only
    the projects with a policy are read: the others keep everything forever."""
    loaded = await load(services)
    now = services.clock()
    scope = governed(loaded)
    if not scope[0]:
        return
    choices = await _choices(services, loaded)
    gone: set[int] = set()
    # The rules are pure Python, ~100 ms a chunk on a long history never pruned yet: in a
    # thread, so that the event loop serves other requests meanwhile.
    for chunk in _chunks(sorted(scope[0]), choices.edges):
        facts = await _chunk_facts(services, loaded, now, scope, chunk, choices, gone)
        plan = await asyncio.to_thread(rules.plan, facts)
        gone.update(x.id for x in plan.releases)
        yield plan
    facts = await _package_facts(services, loaded, now, scope, gone)
    yield await asyncio.to_thread(rules.plan, facts)


async def current_plan(services: Services) -> rules.Plan:
    """What the policies would delete now, whole (no permission: for the services)."""
    parts = [part async for part in plans(services)]

    def whole(kind: str) -> tuple[rules.Removal, ...]:
        return tuple(sorted((x for part in parts for x in getattr(part, kind)), key=_by_id))

    return rules.Plan(
        whole("releases"), whole("deployments"), whole("task_logs"), whole("packages")
    )


def _by_id(removal: rules.Removal) -> int:
    return removal.id


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


def _policy(policy: RetentionPolicy | None, noun: str, source: str = "") -> dict[str, Any] | None:
    if policy is None:
        return None
    shown = {"keep": policy.keep, "unit": str(policy.unit), "text": describe(policy, noun)}
    # A phase's: "own", the earlier phase it takes its policy from, or "lifecycle".
    return {**shown, "from": source} if source else shown


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
                        "releases": _policy(
                            rules.release_policy(lc, ph),
                            "releases",
                            rules.policy_source(lc, ph, "release_retention"),
                        ),
                        "task_logs": _policy(
                            rules.task_log_policy(lc, ph),
                            "deployments",
                            rules.policy_source(lc, ph, "task_log_retention"),
                        ),
                    }
                    for ph in lc.phases
                ],
                "projects": sorted(
                    p.name
                    for p in loaded.model.projects
                    if key(lc.name) in {key(n) for n in ch.lifecycles_of(p)}
                ),
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
    now = services.clock()
    plan = await current_plan(services)
    return Shown(plan, policies(await load(services)), await last_run(services), now)
