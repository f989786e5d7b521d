"""Refreshing a release's variables from its project (Octopus's "update variables").

A release's snapshot is otherwise immutable; this is the one way its variables change, so
approvals given ahead of time (which hold a digest of the snapshot) stop counting when it does.
Variables that did not change keep their stored form byte for byte (a sensitive one keeps its
cipher), so a refresh that changes nothing changes nothing. Needs ReleaseEdit; refused while a
deployment of the release is under way, which reads the snapshot as it goes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import Variable
from conveyor.domain.errors import Conflict, NotFound
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services
from conveyor.services.deployments import ACTIVE
from conveyor.services.documents import resolve
from conveyor.services.releases import find_release
from conveyor.store import tables as t
from conveyor.store.documents import cipher_of, reveal

P = perms.Permission
Plain = tuple[str, bool, tuple[str, ...], str]


def _plain_stored(services: Services, item: dict[str, Any]) -> Plain:
    sensitive = bool(item.get("sensitive"))
    value = services.box.decrypt(item["cipher"]) if sensitive else item.get("value", "")
    return (item["name"], sensitive, tuple(item.get("environments", ())), str(value))


def _plain_now(services: Services, v: Variable) -> Plain:
    value = reveal(services.box, v.value) if v.sensitive else v.value
    return (v.name, v.sensitive, tuple(v.environments), str(value))


def _stored(services: Services, v: Variable) -> dict[str, Any]:
    item: dict[str, Any] = {"name": v.name, "environments": list(v.environments)}
    if v.sensitive:
        item["sensitive"] = True
        item["cipher"] = cipher_of(services.box, v.value)
    else:
        item["value"] = v.value
    return item


def refreshed(
    services: Services, stored: Sequence[dict[str, Any]], now: Sequence[Variable]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The snapshot's new variables, and the names whose values or scopes differ."""
    old = [(_plain_stored(services, item), item) for item in stored]
    unused = list(old)
    items = []
    for v in now:
        plain = _plain_now(services, v)
        same = next((pair for pair in unused if pair[0] == plain), None)
        if same is not None:
            unused.remove(same)
            items.append(same[1])
        else:
            items.append(_stored(services, v))
    before = Counter(p for p, _ in old)
    after = Counter(_plain_now(services, v) for v in now)
    changed = sorted({p[0] for p in (before - after) + (after - before)})
    return items, changed


async def update_variables(
    services: Services, caller: Caller, project_ref: str, version: str
) -> dict[str, Any]:
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    project_id = loaded.id_of("projects", project.name)
    assert project_id is not None
    release = await find_release(services, project_id, version)
    docs = [public_id("projects", project_id)]
    async with services.tx(caller) as tx:
        tx.require(
            P.ReleaseEdit,
            project=perms.ProjectRef(project.name, project.group),
            documents=docs,
            project_id=project_id,
        )
        if release is None:
            raise NotFound(f"{project.name} has no release {version}")
        label = f"{project.name} {release.version}"
        docs.append(public_id("releases", release.id))
        running = (
            await tx.session.execute(
                select(t.deployments.c.task_id).where(
                    t.deployments.c.release_id == release.id, t.deployments.c.state.in_(ACTIVE)
                )
            )
        ).first()
        if running is not None:
            raise Conflict(
                f"a deployment of {label} is under way ({public_id('tasks', running.task_id)}): "
                "refresh its variables once it has ended"
            )
        snapshot = dict(release.snapshot)
        items, changed = refreshed(services, snapshot["variables"], project.variables)
        if changed:
            await tx.session.execute(
                update(t.releases)
                .where(t.releases.c.id == release.id)
                .values(snapshot={**snapshot, "variables": items})
            )
            await tx.audit(
                Category.RELEASE_VARIABLES_UPDATED,
                f"{caller.username} refreshed the variables of {label} from the project: "
                f"{', '.join(changed)} changed",
                documents=docs,
                details={"version": release.version, "changed": changed},
                project_id=project_id,
            )
    return {"project": project.name, "version": release.version, "changed": changed}
