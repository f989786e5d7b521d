"""Who can deploy where, and who can approve: the report, for those who may read teams and roles.

Reading it takes TeamView and UserRoleView (the Auditor role holds both): it tells who holds
which role where. Its rows are only those of projects the reader may view (ProjectView).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conveyor.domain import access_report as domain
from conveyor.domain import permissions as perms
from conveyor.domain.documents import Project, User, key
from conveyor.domain.errors import PermissionDenied
from conveyor.services import model_cache
from conveyor.services.core import Caller, Services
from conveyor.services.documents import resolve

P = perms.Permission
NEEDS = (P.TeamView, P.UserRoleView)


@dataclass(frozen=True)
class Report:
    rows: list[domain.Row]
    # What the reader may filter by: the projects they may view, every environment.
    projects: list[str]
    environments: list[str]


def may_read(caller: Caller) -> bool:
    return all(perms.allows(caller.principal, p) for p in NEEDS)


def _authorise(caller: Caller) -> None:
    for permission in NEEDS:
        decision = perms.authorize(caller.principal, permission)
        if not decision.allowed:
            raise PermissionDenied(
                f"who may deploy where is read with TeamView and UserRoleView: {decision.reason}",
                permission=str(permission),
            )


async def report(
    services: Services,
    caller: Caller,
    *,
    project: str | None = None,
    environment: str | None = None,
) -> Report:
    """Every visible project (or ``project``) by the environments of its lifecycles (or only
    ``environment``): who may deploy, who may approve, through which team and role."""
    _authorise(caller)
    snapshot = await model_cache.snapshot(services)
    loaded = snapshot.loaded
    model = loaded.model

    def visible(p: Project) -> bool:
        ref = perms.ProjectRef(p.name, p.group)
        return perms.allows(caller.principal, P.ProjectView, project=ref)

    shown = [p for p in model.projects if visible(p)]
    projects = shown
    if project:
        one: Project = resolve(loaded, "projects", project)
        if not visible(one):
            reason = perms.authorize(
                caller.principal, P.ProjectView, project=perms.ProjectRef(one.name, one.group)
            ).reason
            raise PermissionDenied(reason, permission=str(P.ProjectView))
        projects = [one]
    environments = None
    if environment:
        environments = [resolve(loaded, "environments", environment).name]
    # The principals as every request builds them (cached per user and revision), here on the
    # event loop; the evaluation, CPU only, in a thread so the server answers others meanwhile.
    principals = {key(u.username): snapshot.principal(u.username, u.active) for u in model.users}

    def principal_of(user: User) -> perms.Principal:
        return principals[key(user.username)]

    rows = await asyncio.to_thread(
        domain.report,
        model,
        projects=projects,
        environments=environments,
        principal_of=principal_of,
    )
    return Report(rows, [p.name for p in shown], model.environment_names())


def as_json(rows: Iterable[domain.Row]) -> list[dict[str, Any]]:
    return [domain.as_dict(r) for r in rows]


def as_csv(rows: Iterable[domain.Row]) -> str:
    """One line per (project, environment, duty, user, team, role, via), with a header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(domain.CSV_COLUMNS)
    writer.writerows(domain.csv_rows(rows))
    return buffer.getvalue()
