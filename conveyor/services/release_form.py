"""What a new release of a project would be, for the form that creates one: the suggested
version, each package step's versions in the feed and each ``deploy_release`` child's releases,
the highest of each preselected (what ``create_release`` picks when nothing is chosen)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from conveyor.domain import channels as ch
from conveyor.domain import permissions as perms
from conveyor.domain.documents import DeployReleaseAction, PackageAction, Project
from conveyor.domain.errors import PermissionDenied, PolicyViolation
from conveyor.domain.packages import package_key
from conveyor.domain.release_choices import Choice, choice
from conveyor.domain.versions import highest
from conveyor.services.config import load
from conveyor.services.core import Caller, Services
from conveyor.services.documents import resolve
from conveyor.services.releases import suggested_version
from conveyor.store import tables as t

P = perms.Permission


@dataclass(frozen=True)
class ReleaseForm:
    project: str
    version: str  # suggested
    latest: str | None  # the project's highest release so far
    packages: tuple[Choice, ...]
    children: tuple[Choice, ...]
    # A project with channels: their names, the default first (the form offers a choice, and
    # "the highest the channel allows" for every version); empty for the implicit default.
    channels: tuple[str, ...] = ()


async def release_form(services: Services, caller: Caller, project_ref: str) -> ReleaseForm:
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    assert isinstance(project, Project)
    decision = perms.authorize(
        caller.principal,
        P.ReleaseCreate,
        project=perms.ProjectRef(project.name, project.group),
    )
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=P.ReleaseCreate.value)
    if project.disabled:
        raise PolicyViolation(f'project "{project.name}" is disabled: enable it to release')
    steps = project.process.steps
    packages = [
        (s.name, s.action.package)
        for s in steps
        if isinstance(s.action, PackageAction) and not s.disabled
    ]
    children = [
        (s.name, s.action.project) for s in steps if isinstance(s.action, DeployReleaseAction)
    ]
    R = t.releases.c
    async with services.read() as session:

        async def releases_of(name: str) -> list[str]:
            project_id = loaded.id_of("projects", name)
            query = select(R.version).where(R.project_id == project_id)
            return list((await session.execute(query)).scalars())

        async def feed(package: str) -> list[str]:
            query = select(t.packages.c.version).where(
                t.packages.c.package_key == package_key(package)
            )
            return list((await session.execute(query)).scalars())

        own = await releases_of(project.name)
        package_choices = [choice(step, pkg, await feed(pkg)) for step, pkg in packages]
        child_choices = [choice(step, child, await releases_of(child)) for step, child in children]
    return ReleaseForm(
        project=project.name,
        version=suggested_version(own),
        latest=highest(own),
        packages=tuple(package_choices),
        children=tuple(child_choices),
        channels=tuple(c.name for c in ch.in_order(project)) if project.channels else (),
    )
