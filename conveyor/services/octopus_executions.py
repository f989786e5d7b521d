"""Creating releases and deployments the way the Octopus clients ask for them (the Executions
API's ``releases/create/v1`` and ``deployments/create/untenanted/v1``), through the same services
as Conveyor's own API: ``releases.create_release`` (and its automatic deployments) and
``deployments.queue_deployment``, so permissions, lifecycles, environment checks and the audit
log apply exactly as they do there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from conveyor.domain import channels as ch
from conveyor.domain import octopus
from conveyor.domain import permissions as perms
from conveyor.domain.documents import PackageAction, Project, key
from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.domain.packages import package_key
from conveyor.domain.versions import Version
from conveyor.services import build_information, deployments
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services
from conveyor.services.documents import resolve
from conveyor.services.releases import find_release
from conveyor.store import tables as t

P = perms.Permission


@dataclass(frozen=True)
class ReleaseCommand:
    project: str
    version: str | None = None
    channel: str | None = None
    # ``ChannelId`` (``Channels-3-hotfix``), sent by clients that look the channel up first.
    channel_id: str | None = None
    package_version: str | None = None
    packages: tuple[str, ...] = ()
    notes: str = ""
    ignore_if_exists: bool = False
    git_commit: str | None = None
    # Options Conveyor has no equivalent for: refused once the caller is authorised.
    unsupported: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class CreatedRelease:
    release_id: int
    version: str
    created: bool


async def _may(
    services: Services,
    caller: Caller,
    permission: P,
    project: Project,
    environment: str | None = None,
    *,
    project_id: int | None = None,
    environment_id: int | None = None,
) -> None:
    """Refuse before looking at the request any further; the refusal is audited (the unit of
    work writes it) exactly as the service that would do the work writes it."""
    ref = perms.ProjectRef(project.name, project.group)
    decision = perms.authorize(caller.principal, permission, project=ref, environment=environment)
    if not decision.allowed:
        async with services.tx(caller) as tx:
            tx.require(
                permission,
                project=ref,
                environment=environment,
                documents=[
                    public_id(kind, row)
                    for kind, row in (("projects", project_id), ("environments", environment_id))
                    if row is not None
                ],
                project_id=project_id,
                environment_id=environment_id,
            )


def _package_steps(project: Project) -> list[tuple[str, str]]:
    return [
        (s.name, s.action.package)
        for s in project.process.steps
        if isinstance(s.action, PackageAction) and not s.disabled
    ]


async def create_release(
    services: Services, caller: Caller, command: ReleaseCommand
) -> CreatedRelease:
    """A release of ``command.project``: its version given or allocated, its packages chosen
    from ``PackageVersion`` and ``Packages`` (the feed's highest for the rest), its build
    information taken from what was pushed for those packages, then its automatic deployments."""
    loaded = await load(services)
    project = resolve(loaded, "projects", command.project)
    assert isinstance(project, Project)
    project_id = loaded.id_of("projects", project.name)
    assert project_id is not None
    await _may(services, caller, P.ReleaseCreate, project, project_id=project_id)
    if command.unsupported:
        raise ValidationFailed(list(command.unsupported))
    channel = _channel(project, project_id, command.channel)
    by_id = _channel(project, project_id, command.channel_id, "ChannelId")
    if channel is not None and by_id is not None and key(channel) != key(by_id):
        raise ValidationFailed(
            Problem(
                ("ChannelId",),
                f'names channel "{by_id}" but ChannelName names "{channel}": give one of them',
            )
        )
    channel = channel or by_id
    if command.version and command.ignore_if_exists:
        existing = await find_release(services, project_id, command.version)
        if existing is not None:
            return CreatedRelease(int(existing.id), existing.version, created=False)
    steps = _package_steps(project)
    chosen = octopus.select_packages(steps, command.package_version, command.packages)
    chosen |= await _channel_highest(services, project, steps, chosen, channel)
    build = await _build_of(services, chosen)
    if command.git_commit:
        build = {**build, **octopus.conveyor_build({"VcsCommitNumber": command.git_commit})}
    release, _automatic = await deployments.create_release(
        services,
        caller,
        project.name,
        version=command.version or None,
        packages=chosen,
        notes=command.notes,
        build=build,
        channel=channel,
    )
    return CreatedRelease(release.id, release.version, created=True)


def _channel(
    project: Project, project_id: int, given: str | None, field: str = "ChannelName"
) -> str | None:
    """``ChannelName`` or ``ChannelId``: one of the project's channels by name or by the id the
    Octopus API shows for it (``Channels-3`` also names the default channel of a project with
    no channel called "Default"); None: the first whose rules the versions satisfy."""
    if not given:
        return None
    found = ch.find_channel(project, given)
    by_id = octopus.split_channel_id(given)
    if found is None and by_id is not None and by_id[0] == project_id:
        found = ch.find_channel(project, by_id[1])
        if found is None and by_id[1] == key(octopus.DEFAULT_CHANNEL):
            found = ch.default_channel(project)
    if found is None:
        names = ", ".join(
            f'"{c.name}" ({octopus.channel_id(project_id, c.name)})'
            for c in ch.channels_of(project)
        )
        raise ValidationFailed(
            Problem(
                (field,),
                f'channel "{given}" does not exist: {project.name} has {names} '
                f"(or leave {field} out to pick by the version rules)",
            )
        )
    return found.name


async def _channel_highest(
    services: Services,
    project: Project,
    steps: list[tuple[str, str]],
    chosen: dict[str, str],
    channel: str | None,
) -> dict[str, str]:
    """The packages not given: the highest the channel allows (the build information is taken
    from them). When no channel fits, nothing: creating the release then says why."""
    names: dict[str, list[str]] = {}
    for step, package in steps:
        names.setdefault(package, []).append(step)
    subjects = []
    async with services.read() as session:
        for package, its_steps in names.items():
            if package in chosen:
                subject = ch.Subject(package, tuple(its_steps), (chosen[package],), pinned=True)
            else:
                query = select(t.packages.c.version).where(
                    t.packages.c.package_key == package_key(package)
                )
                found = (await session.execute(query)).scalars().all()
                versions = tuple(sorted(found, key=Version, reverse=True))
                subject = ch.Subject(package, tuple(its_steps), versions)
            subjects.append(subject)
    try:
        fit = ch.choose(project, subjects, channel)
    except ValidationFailed:
        return {}
    return {s.name: fit.version_of(s) for s in subjects if not s.pinned and s.versions}


async def _build_of(services: Services, packages: dict[str, str]) -> dict[str, Any]:
    """One build for the release from its packages' build information: the first package's
    commit, branch and build link, and the commits of all of them (each once)."""
    async with services.read() as session:
        return await build_information.release_build(session, packages)


async def deploy(
    services: Services,
    caller: Caller,
    project_ref: str,
    version: str,
    environments: Sequence[str],
    *,
    skip: Sequence[str] = (),
    guided_failure: bool | None = None,
    start_at: datetime | None = None,
    freeze_override: str | None = None,
    unsupported: Sequence[Problem] = (),
) -> list[deployments.Queued]:
    """Deploy a release to each environment, all or none: every deployment is queued in one
    transaction, each authorised and checked against the lifecycle as Conveyor's own deploy is.
    ``unsupported`` options are refused once the caller may deploy to every environment."""
    names: list[str] = []
    for name in environments:
        if key(name) not in {key(n) for n in names}:
            names.append(name)
    if not names:
        raise ValidationFailed(
            Problem(("EnvironmentNames",), "name at least one environment to deploy to")
        )
    loaded = await load(services)
    targets = [
        await deployments.resolve_target(services, loaded, project_ref, version, env)
        for env in names
    ]
    for target in targets:
        await _may(
            services,
            caller,
            P.DeploymentCreate,
            target.project,
            target.environment.name,
            project_id=target.project_id,
            environment_id=target.environment_id,
        )
    if unsupported:
        raise ValidationFailed(list(unsupported))
    queued = []
    async with services.tx(caller) as tx:
        for target in targets:
            queued.append(
                await deployments.queue_deployment(
                    tx,
                    loaded,
                    target,
                    skip=list(skip),
                    guided_failure=guided_failure,
                    start_at=start_at,
                    freeze_override=freeze_override,
                )
            )
    return queued
