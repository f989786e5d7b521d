"""Webhook sources and the projects' release-on-push setting (docs/webhooks.md).

A source is a Git host (or any sender) allowed to call ``/api/v1/hooks/<provider>``: its shared
secret, kept encrypted with the master key and shown only once, when Conveyor makes it; the
repository and branches it speaks for; the local clone change detection reads; and the service
account its pushes act as. Sources are managed through the API, not config as code: a secret
shared with a Git host is a credential, made and rotated like an API key, and a configuration
file (exported, reviewed, committed) is the wrong place for it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from conveyor.domain import hooks
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import Project, slugify
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from conveyor.services.access import find_user
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.services.documents import resolve
from conveyor.store import tables as t

P = perms.Permission
RECENT_DELIVERIES = 200


@dataclass(frozen=True)
class Source:
    id: int
    name: str
    provider: str
    repository: str
    branches: tuple[str, ...]
    repo_path: str
    run_as: str
    created_at: str | None
    created_by: str
    secret_cipher: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "url": f"/api/v1/hooks/{self.provider}?source={self.name}",
            "repository": self.repository,
            "branches": list(self.branches),
            "repo_path": self.repo_path,
            "run_as": self.run_as,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


def _source(row: Any) -> Source:
    return Source(
        row.id,
        row.name,
        row.provider,
        row.repository,
        tuple(row.branches or ()),
        row.repo_path,
        row.run_as,
        iso(row.created_at),
        row.created_by,
        row.secret,
    )


def _administer(caller: Caller) -> None:
    """Reading sources and deliveries: administrators only (a refused read is not audited)."""
    decision = perms.authorize(caller.principal, P.AdministerSystem)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(P.AdministerSystem))


async def add_source(
    services: Services, caller: Caller, data: dict[str, Any]
) -> tuple[Source, str | None]:
    """Add a source; returns it and the secret when Conveyor made it (shown this once)."""
    async with services.tx(caller) as tx:
        tx.require(P.AdministerSystem)
        spec = hooks.check_source(data)
        user = await find_user(tx.session, spec.run_as)
        if user is None or not user.service_account:
            raise ValidationFailed(
                f'run_as: "{spec.run_as}" is not a service account: create one '
                f"(conveyor admin user add {spec.run_as} --service-account) and give its team "
                "the Build Server role"
            )
        given = data.get("secret")
        secret = given if isinstance(given, str) else secrets.token_urlsafe(32)
        try:
            row = (
                await tx.session.execute(
                    t.hook_sources.insert()
                    .values(
                        name=spec.name,
                        slug=slugify(spec.name),
                        provider=spec.provider,
                        secret=services.box.encrypt(secret),
                        repository=spec.repository,
                        branches=list(spec.branches),
                        repo_path=spec.repo_path,
                        run_as=user.username,
                        created_at=tx.now,
                        created_by=caller.username,
                    )
                    .returning(t.hook_sources)
                )
            ).one()
        except IntegrityError:
            raise Conflict(f'a webhook source named "{spec.name}" exists already') from None
        source = _source(row)
        await tx.audit(
            Category.WEBHOOK_SOURCE_CHANGED,
            f"{caller.username} added the {spec.provider} webhook source {spec.name}",
            details={"added": source.as_dict()},
        )
    return source, None if isinstance(given, str) else secret


async def list_sources(services: Services, caller: Caller) -> list[Source]:
    _administer(caller)
    async with services.read() as session:
        rows = await session.execute(select(t.hook_sources).order_by(t.hook_sources.c.slug))
        return [_source(r) for r in rows]


async def sources_for(services: Services, provider: str, name: str | None) -> list[Source]:
    """The sources a delivery to ``/hooks/<provider>`` may come from (``?source=`` narrows)."""
    query = select(t.hook_sources).where(t.hook_sources.c.provider == provider)
    if name:
        query = query.where(t.hook_sources.c.slug == slugify(name))
    async with services.read() as session:
        return [_source(r) for r in await session.execute(query)]


async def remove_source(services: Services, caller: Caller, name: str) -> None:
    async with services.tx(caller) as tx:
        tx.require(P.AdministerSystem)
        gone = (
            await tx.session.execute(
                delete(t.hook_sources)
                .where(t.hook_sources.c.slug == slugify(name))
                .returning(t.hook_sources.c.name, t.hook_sources.c.provider)
            )
        ).first()
        if gone is None:
            raise NotFound(f'there is no webhook source "{name}"')
        await tx.audit(
            Category.WEBHOOK_SOURCE_CHANGED,
            f"{caller.username} removed the {gone.provider} webhook source {gone.name}",
            details={"removed": gone.name},
        )


async def list_deliveries(
    services: Services, caller: Caller, source: str | None = None
) -> list[dict[str, Any]]:
    """The newest deliveries accepted (newest first), of one source or all."""
    _administer(caller)
    d, s = t.hook_deliveries.c, t.hook_sources.c
    query = (
        select(t.hook_deliveries, s.name.label("source"))
        .join(t.hook_sources, s.id == d.source_id)
        .order_by(d.id.desc())
        .limit(RECENT_DELIVERIES)
    )
    if source:
        query = query.where(s.slug == slugify(source))
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    return [
        {
            "source": r.source,
            "delivery": r.delivery_id,
            "received_at": iso(r.received_at),
            "event": r.event,
            "outcome": r.outcome,
            "branch": r.branch,
            "before": r.before,
            "after": r.after,
            "commits": r.commits,
            "releases": r.releases,
            "notes": r.notes,
        }
        for r in rows
    ]


# ---------------------------------------------------------------- the project setting


async def release_on_push(services: Services, project_ids: list[int]) -> set[int]:
    """Which of the projects allow a push to create their releases."""
    if not project_ids:
        return set()
    c = t.project_hook_settings.c
    async with services.read() as session:
        rows = await session.execute(
            select(c.project_id).where(c.project_id.in_(project_ids), c.release_on_push)
        )
        return {r.project_id for r in rows}


async def get_project_setting(
    services: Services, caller: Caller, project_ref: str
) -> dict[str, Any]:
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    assert isinstance(project, Project)
    decision = perms.authorize(
        caller.principal, P.ProjectView, project=perms.ProjectRef(project.name, project.group)
    )
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(P.ProjectView))
    project_id = loaded.id_of("projects", project.name)
    allowed = project_id is not None and project_id in await release_on_push(services, [project_id])
    return {"project": project.name, "release_on_push": allowed}


async def set_project_setting(
    services: Services, caller: Caller, project_ref: str, release: bool
) -> dict[str, Any]:
    """Turn release-on-push on or off for a project (ProjectEdit on it)."""
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    assert isinstance(project, Project)
    project_id = loaded.id_of("projects", project.name)
    assert project_id is not None
    async with services.tx(caller) as tx:
        tx.require(
            P.ProjectEdit,
            project=perms.ProjectRef(project.name, project.group),
            documents=[public_id("projects", project_id)],
            project_id=project_id,
        )
        c = t.project_hook_settings.c
        was = (
            await tx.session.execute(
                select(c.release_on_push).where(c.project_id == project_id).with_for_update()
            )
        ).first()
        values = {"release_on_push": release, "updated_at": tx.now, "updated_by": caller.username}
        if was is None:
            await tx.session.execute(
                t.project_hook_settings.insert().values(project_id=project_id, **values)
            )
        else:
            await tx.session.execute(
                t.project_hook_settings.update().where(c.project_id == project_id).values(**values)
            )
        if was is None or bool(was.release_on_push) != release:
            await tx.audit(
                Category.WEBHOOK_SOURCE_CHANGED,
                f"{caller.username} turned release on push {'on' if release else 'off'} for "
                f"{project.name}",
                documents=[public_id("projects", project_id)],
                details={"project": project.name, "release_on_push": release},
                project_id=project_id,
            )
    return {"project": project.name, "release_on_push": release}
