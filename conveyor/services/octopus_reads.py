"""Reading releases, deployments and tasks by their ids, as the Octopus clients ask for them
(``ids=ServerTasks-1,ServerTasks-2``): one query for the lot, each row checked with the same
permission Conveyor's own API checks (``TaskView``, ``DeploymentView``, ``ReleaseView``, for
the row's project and environment). A list leaves out what the caller may not see, as it
leaves out ids that name nothing; asked for one by id, a refusal is a PermissionDenied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from conveyor.domain import channels as ch
from conveyor.domain import octopus
from conveyor.domain import permissions as perms
from conveyor.domain.codec import decode_process
from conveyor.domain.documents import Lifecycle, PackageAction, Project, key
from conveyor.domain.errors import NotFound, PermissionDenied, Problem
from conveyor.domain.model import Kind, doc_name
from conveyor.services import packages
from conveyor.services.access import UserRow, find_user
from conveyor.services.config import load, load_outline, parse_public_id, public_id
from conveyor.services.core import Caller, Services
from conveyor.services.documents import may_view
from conveyor.services.packages import PackageInfo
from conveyor.services.releases import ReleaseView, view
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
# Without ids, a list looks at this many of the newest rows at most.
RECENT = 1000


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Names:
    project: str | None
    project_id: int | None
    environment: str | None
    environment_id: int | None


@dataclass(frozen=True)
class TaskFacts:
    id: int
    description: str
    state: str
    cancel_requested: bool
    held: bool
    waiting_on: str | None
    error: str | None
    created_at: datetime
    start_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    deployment_id: int | None
    names: Names

    @property
    def public_id(self) -> str:
        return public_id("tasks", self.id)


@dataclass(frozen=True)
class DeploymentFacts:
    id: int
    release_id: int
    release_version: str
    task_id: int | None
    state: str
    created_at: datetime
    created_by: str
    names: Names
    channel: str = ch.DEFAULT_CHANNEL


def _names(loaded: Loaded, project_id: int | None, environment_id: int | None) -> Names:
    project = loaded.name_of("projects", project_id) if project_id else None
    env = loaded.name_of("environments", environment_id) if environment_id else None
    return Names(project, project_id, env, environment_id)


def _decision(loaded: Loaded, caller: Caller, permission: P, names: Names) -> perms.Decision:
    doc = loaded.model.get("projects", names.project) if names.project else None
    ref = perms.ProjectRef(doc.name, doc.group) if doc is not None else None
    return perms.authorize(caller.principal, permission, project=ref, environment=names.environment)


def _numbers(kind: str, ids: Sequence[str]) -> list[int]:
    numbers = [parse_public_id(kind, ref) for ref in ids]
    return sorted({n for n in numbers if n is not None})


def _task_query() -> Any:
    """Tasks with their deployment's start time (a scheduled deployment's queue time)."""
    return select(t.tasks, t.deployments.c.start_at).outerjoin(
        t.deployments, t.deployments.c.id == t.tasks.c.deployment_id
    )


def _task(loaded: Loaded, row: Any) -> TaskFacts:
    return TaskFacts(
        id=int(row.id),
        description=row.description,
        state=row.state,
        cancel_requested=bool(row.cancel_requested),
        held=bool(row.held),
        waiting_on=row.waiting_on,
        error=row.error,
        created_at=_utc(row.created_at) or datetime.now(UTC),
        start_at=_utc(row.start_at),
        started_at=_utc(row.started_at),
        completed_at=_utc(row.completed_at),
        deployment_id=row.deployment_id,
        names=_names(loaded, row.project_id, row.environment_id),
    )


async def tasks(
    services: Services,
    caller: Caller,
    ids: Sequence[str] = (),
    *,
    states: Sequence[str] = (),
) -> list[TaskFacts]:
    """The tasks named (any order, unknown and unseen ones left out), or without ids the newest
    the caller may view; newest first."""
    loaded = await load_outline(services)
    query = _task_query()
    if ids:
        query = query.where(t.tasks.c.id.in_(_numbers("tasks", ids)))
    else:
        query = query.order_by(t.tasks.c.id.desc()).limit(RECENT)
    if states:
        query = query.where(t.tasks.c.state.in_(list(states)))
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    found = [_task(loaded, r) for r in rows]
    visible = [f for f in found if _decision(loaded, caller, P.TaskView, f.names).allowed]
    return sorted(visible, key=lambda f: f.id, reverse=True)


async def task(services: Services, caller: Caller, ref: str) -> TaskFacts:
    """One task by id (TaskView); NotFound or PermissionDenied."""
    number = parse_public_id("tasks", ref)
    loaded = await load_outline(services)
    row = None
    if number is not None:
        async with services.read() as session:
            row = (await session.execute(_task_query().where(t.tasks.c.id == number))).first()
    if row is None:
        raise NotFound(f"task {ref} does not exist (task ids look like ServerTasks-12)")
    found = _task(loaded, row)
    decision = _decision(loaded, caller, P.TaskView, found.names)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(P.TaskView))
    return found


def _deployment(loaded: Loaded, row: Any) -> DeploymentFacts:
    return DeploymentFacts(
        id=int(row.id),
        release_id=int(row.release_id),
        release_version=row.version,
        task_id=row.task_id,
        state=row.state,
        created_at=_utc(row.created_at) or datetime.now(UTC),
        created_by=row.created_by,
        names=_names(loaded, row.project_id, row.environment_id),
        channel=row.channel or ch.DEFAULT_CHANNEL,
    )


async def _deployment_rows(
    services: Services,
    loaded: Loaded,
    ids: Sequence[str],
    projects: Sequence[str],
    environments: Sequence[str],
    states: Sequence[str],
) -> list[DeploymentFacts]:
    d = t.deployments.c
    query = select(t.deployments, t.releases.c.version, t.releases.c.channel).join(
        t.releases, t.releases.c.id == d.release_id
    )
    if ids:
        query = query.where(d.id.in_(_numbers("deployments", ids)))
    if projects:
        query = query.where(d.project_id.in_(_numbers("projects", projects)))
    if environments:
        query = query.where(d.environment_id.in_(_numbers("environments", environments)))
    if states:
        query = query.where(d.state.in_(list(states)))
    if not ids:
        query = query.order_by(d.id.desc()).limit(RECENT)
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    return [_deployment(loaded, r) for r in rows]


async def deployments(
    services: Services,
    caller: Caller,
    ids: Sequence[str] = (),
    *,
    projects: Sequence[str] = (),
    environments: Sequence[str] = (),
    states: Sequence[str] = (),
    channel_ids: Sequence[str] = (),
) -> list[DeploymentFacts]:
    """The deployments named, or the newest; filtered by project, environment and channel ids
    (a deployment's channel: its release's) and by state; only those the caller may view
    (DeploymentView); newest first."""
    wanted = None
    if channel_ids:
        named = await channels(services, caller, ids=channel_ids)
        if not named:
            return []
        wanted = {(c.project_id, key(c.channel.name)) for c in named}
        projects = projects or [public_id("projects", c.project_id) for c in named]
    loaded = await load_outline(services)
    found = await _deployment_rows(services, loaded, ids, projects, environments, states)
    if wanted is not None:
        found = [f for f in found if (f.names.project_id, key(f.channel)) in wanted]
    visible = [f for f in found if _decision(loaded, caller, P.DeploymentView, f.names).allowed]
    return sorted(visible, key=lambda f: f.id, reverse=True)


async def deployment(services: Services, caller: Caller, ref: str) -> DeploymentFacts:
    """One deployment by id (DeploymentView); NotFound or PermissionDenied."""
    loaded = await load_outline(services)
    found = (
        await _deployment_rows(services, loaded, [ref], (), (), ())
        if _numbers("deployments", [ref])
        else []
    )
    if not found:
        raise NotFound(f"deployment {ref} does not exist (deployment ids look like Deployments-12)")
    decision = _decision(loaded, caller, P.DeploymentView, found[0].names)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(P.DeploymentView))
    return found[0]


@dataclass(frozen=True)
class ReleaseFacts:
    view: ReleaseView
    # (step name, package id, version) of each package step.
    selected: list[tuple[str, str, str]]


def _release(row: Any, project: str) -> ReleaseFacts:
    found = view(row, project)
    return ReleaseFacts(found, selected_packages(found, dict(row.snapshot or {})))


async def release(services: Services, caller: Caller, ref: str) -> ReleaseFacts:
    """One release by id (ReleaseView on its project)."""
    number = parse_public_id("releases", ref)
    loaded = await load_outline(services)
    row = None
    if number is not None:
        async with services.read() as session:
            row = (
                await session.execute(select(t.releases).where(t.releases.c.id == number))
            ).first()
    if row is None:
        raise NotFound(f"release {ref} does not exist (release ids look like Releases-12)")
    names = _names(loaded, row.project_id, None)
    decision = _decision(loaded, caller, P.ReleaseView, names)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(P.ReleaseView))
    return _release(row, names.project or "")


async def releases(
    services: Services, caller: Caller, project_id: int | None = None
) -> list[ReleaseFacts]:
    """Releases the caller may view (of one project, or of all), newest first."""
    loaded = await load_outline(services)
    query = select(t.releases).order_by(t.releases.c.id.desc()).limit(RECENT)
    if project_id is not None:
        query = query.where(t.releases.c.project_id == project_id)
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    out = []
    for row in rows:
        names = _names(loaded, row.project_id, None)
        if _decision(loaded, caller, P.ReleaseView, names).allowed:
            out.append(_release(row, names.project or ""))
    return out


# ---------------------------------------------------------------- configuration look-ups


@dataclass(frozen=True)
class Found:
    """A configuration document the caller may view, with its id and the ids of the documents
    it names (a project's group and lifecycle, a lifecycle's environments)."""

    id: str
    doc: Any
    refs: dict[str, str]
    position: int


async def documents(
    services: Services,
    caller: Caller,
    kind: Kind,
    *,
    partial: str | None = None,
    ids: Sequence[str] = (),
) -> list[Found]:
    """Documents of ``kind`` the caller may view (the same rule as ``GET /api/v1/{kind}``),
    filtered by ``partialName`` (a case-insensitive part of the name) and by ids."""
    loaded = await load(services)
    wanted = set(_numbers(kind, ids)) if ids else None
    out = []
    for position, doc in enumerate(loaded.model.docs(kind)):
        name = doc_name(doc)
        row_id = loaded.id_of(kind, name)
        if wanted is not None and row_id not in wanted:
            continue
        if not octopus.matches_partial(name, partial):
            continue
        if not may_view(caller, loaded.model, kind, doc):
            continue
        out.append(Found(public_id(kind, row_id), doc, _refs(loaded, kind, doc), position))
    return out


def _refs(loaded: Loaded, kind: Kind, doc: Any) -> dict[str, str]:
    def id_of(of: str, name: str) -> str:
        return public_id(of, loaded.id_of(of, name))

    if isinstance(doc, Project):
        return {
            "ProjectGroupId": id_of("project_groups", doc.group),
            "LifecycleId": id_of("lifecycles", doc.lifecycle),
        }
    if isinstance(doc, Lifecycle):
        return {
            env: id_of("environments", env) for phase in doc.phases for env in phase.environments
        }
    return {}


@dataclass(frozen=True)
class ChannelFacts:
    """One channel of a project the caller may view (a project without channels has one,
    "Default"), with the ids the Octopus shapes name."""

    id: str
    project_id: int
    project: Project
    channel: ch.Channel
    default: bool
    # None: the project's lifecycle (Octopus: inherited).
    lifecycle_id: str | None


async def channels(
    services: Services,
    caller: Caller,
    *,
    project_id: int | None = None,
    partial: str | None = None,
    ids: Sequence[str] = (),
) -> list[ChannelFacts]:
    """The channels of the projects the caller may view (ProjectView: channels are part of
    the project), of one project or of all, in the projects' order, each project's as listed;
    filtered by ``partialName`` and by ids."""
    loaded = await load(services)
    wanted = {i.casefold() for i in ids}
    out = []
    for project in loaded.model.projects:
        number = loaded.id_of("projects", project.name)
        if number is None or (project_id is not None and number != project_id):
            continue
        if not may_view(caller, loaded.model, "projects", project):
            continue
        first = ch.default_channel(project)
        # Before channels, a project's one channel was Channels-<number>: still its default's.
        named_default = ch.find_channel(project, octopus.DEFAULT_CHANNEL) is not None
        for channel in ch.channels_of(project):
            ident = octopus.channel_id(number, channel.name)
            aliases = {ident.casefold()}
            if channel is first and not named_default:
                aliases.add(octopus.channel_id(number).casefold())
            if wanted and not aliases & wanted:
                continue
            if not octopus.matches_partial(channel.name, partial):
                continue
            lifecycle = loaded.id_of("lifecycles", channel.lifecycle) if channel.lifecycle else None
            out.append(
                ChannelFacts(
                    ident,
                    number,
                    project,
                    channel,
                    channel is first,
                    public_id("lifecycles", lifecycle) if lifecycle is not None else None,
                )
            )
    return out


async def channel_releases(services: Services, caller: Caller, ref: str) -> list[ReleaseFacts]:
    """The releases of one channel (by its id), newest first; NotFound for an unknown id."""
    found = await channels(services, caller, ids=[ref])
    if not found:
        raise NotFound(
            f"channel {ref} does not exist, or you may not view it (channel ids look like "
            "Channels-3 for a project's Default channel, Channels-3-hotfix for another)"
        )
    mine = key(found[0].channel.name)
    every = await releases(services, caller, found[0].project_id)
    return [r for r in every if key(r.view.channel) == mine]


async def visible_project(services: Services, caller: Caller, ref: str) -> int:
    """The number of a project by its id (``Projects-3``) that the caller may view, or
    NotFound (as the look-ups say it)."""
    found = await documents(services, caller, "projects", ids=[ref])
    number = parse_public_id("projects", found[0].id) if found else None
    if number is None:
        raise NotFound(f"project {ref} does not exist, or you may not view it")
    return number


async def me(services: Services, caller: Caller) -> UserRow:
    """The caller's own user (anyone may read themselves)."""
    async with services.read() as session:
        user = await find_user(session, caller.username)
    if user is None:
        raise NotFound(f'user "{caller.username}" does not exist')
    return user


def selected_packages(release: ReleaseView, snapshot: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(step name, package id, version) of each package step of the release's process."""
    problems: list[Problem] = []
    process = decode_process(snapshot.get("process", {}), ("release", "process"), problems)
    chosen = {key(p): v for p, v in release.packages.items()}
    out = []
    for step in process.steps:
        if isinstance(step.action, PackageAction) and key(step.action.package) in chosen:
            out.append((step.name, step.action.package, chosen[key(step.action.package)]))
    return out


async def package(services: Services, caller: Caller, ref: str) -> PackageInfo:
    """A built-in feed package by Conveyor's id (``Packages-12``) or Octopus's
    (``packages-Hello.1.0.0``); FeedView, as ``packages.get_package``."""
    number = parse_public_id("packages", ref)
    if number is not None:
        async with services.read() as session:
            row = (
                await session.execute(
                    select(t.packages.c.package_id, t.packages.c.version).where(
                        t.packages.c.id == number
                    )
                )
            ).first()
        if row is not None:
            return await packages.get_package(services, caller, row.package_id, row.version)
    named = octopus.package_reference(ref)
    if named is not None:
        return await packages.get_package(services, caller, *named)
    raise NotFound(
        f"package {ref} is not in the built-in feed (ids look like Packages-12 or "
        "packages-Hello.1.0.0)"
    )
