"""Evidence for one release: everything an auditor attaches to a change ticket, in one answer.

Who created it and from which build, what it ships and what changed since the release before
it, every deployment of it (and their child deployments) with outcome and times, every approval
with who answered, their teams, when and with what notes, and the audit events concerning all
of these with their hashes. Each part shows only what the reader may view.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from conveyor.domain import permissions as perms
from conveyor.domain.documents import Variable
from conveyor.domain.errors import PermissionDenied
from conveyor.domain.versions import Version
from conveyor.services.approvals import list_approvals
from conveyor.services.audit import PROJECT_GROUP, Filters, conditions, event_json, names_of
from conveyor.services.config import public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.services.releases import get_release, read_snapshot
from conveyor.store import tables as t

P = perms.Permission
# A release's events are few (tens per deployment); this bounds a pathological one.
MAX_EVENTS = 10_000
# A variable's identity in a release: its name and the environments it is scoped to.
Scoped = tuple[str, tuple[str, ...]]


def _diff(before: dict[str, str], after: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for name in sorted(set(before) | set(after), key=str.lower):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        change = "added" if old is None else "removed" if new is None else "changed"
        out.append({"name": name, "before": old, "after": new, "change": change})
    return out


def _scoped(services: Services, snapshot: dict[str, Any] | None) -> dict[Scoped, Variable]:
    """(name, environments) -> the variable (a sensitive value decrypted in memory only)."""
    if snapshot is None:
        return {}
    return {(v.name, v.environments): v for v in read_snapshot(services, snapshot).variables}


def variable_changes(
    services: Services, before: dict[str, Any] | None, after: dict[str, Any]
) -> list[dict[str, Any]]:
    """The variables added, removed or changed between two release snapshots (``before`` None:
    every variable is added), by name and scope. Values are compared in memory; a sensitive
    variable's value is never returned, on either side, only that it changed."""
    old, new = _scoped(services, before), _scoped(services, after)
    out = []
    for ident in sorted(set(old) | set(new)):
        was, now = old.get(ident), new.get(ident)
        if was is not None and now is not None and was.value == now.value:
            continue
        sensitive = any(v is not None and v.sensitive for v in (was, now))
        out.append(
            {
                "name": ident[0],
                "scope": list(ident[1]),
                "change": "added" if was is None else "removed" if now is None else "changed",
                "sensitive": sensitive,
                "before": None if sensitive or was is None else was.value,
                "after": None if sensitive or now is None else now.value,
            }
        )
    return out


def _changes(services: Services, release: Any, previous: Any | None) -> dict[str, Any]:
    children = {c["project"]: c["version"] for c in release.children}
    if previous is None:
        return {
            "previous": None,
            "packages": _diff({}, dict(release.packages)),
            "children": _diff({}, children),
            "process_changed": None,
            "variables": [],
        }
    labelled = (
        {"name": f"{c['name']} [{', '.join(c['scope']) or 'all'}]", "change": c["change"]}
        for c in variable_changes(services, previous.snapshot, release.snapshot)
    )
    variables = sorted(labelled, key=lambda c: c["name"])
    return {
        "previous": previous.version,
        "packages": _diff(dict(previous.packages), dict(release.packages)),
        "children": _diff({c["project"]: c["version"] for c in previous.children}, children),
        "process_changed": previous.snapshot.get("process") != release.snapshot.get("process"),
        "variables": variables,
    }


async def _rows(session: Any, release_id: int) -> tuple[Any, Any | None]:
    """This release's row and the one before it by version."""
    row = (await session.execute(select(t.releases).where(t.releases.c.id == release_id))).one()
    others = (
        await session.execute(
            select(t.releases).where(
                t.releases.c.project_id == row.project_id, t.releases.c.id != row.id
            )
        )
    ).all()
    mine = Version(row.version)
    earlier = [r for r in others if Version(r.version) < mine]
    previous = max(earlier, key=lambda r: (Version(r.version), r.id)) if earlier else None
    return row, previous


async def _deployments(session: Any, release_id: int) -> list[Any]:
    """Deployments of the release, then their children, grandchildren…, in id order."""
    d = t.deployments.c
    query = (
        select(t.deployments, t.releases.c.version, t.tasks.c.error)
        .join(t.releases, t.releases.c.id == d.release_id)
        .outerjoin(t.tasks, t.tasks.c.id == d.task_id)
    )
    found = list((await session.execute(query.where(d.release_id == release_id))).all())
    parents = [r.id for r in found]
    while parents:
        children = (await session.execute(query.where(d.parent_id.in_(parents)))).all()
        found += children
        parents = [r.id for r in children]
    return sorted(found, key=lambda r: r.id)


def _deployment_json(row: Any, project: str | None, environment: str | None) -> dict[str, Any]:
    return {
        "id": public_id("deployments", row.id),
        "project": project,
        "release": row.version,
        "environment": environment,
        "state": row.state,
        "error": row.error,
        "created_by": row.created_by,
        "queued": iso(row.created_at),
        "started": iso(row.started_at),
        "completed": iso(row.completed_at),
        "task": public_id("tasks", row.task_id) if row.task_id else None,
        "parent": public_id("deployments", row.parent_id) if row.parent_id else None,
        "skipped_steps": list(row.skip or ()),
    }


def _approval_json(row: Any, environment: str | None) -> dict[str, Any]:
    return {
        "id": public_id("interruptions", row.id),
        "deployment": public_id("deployments", row.deployment_id) if row.deployment_id else None,
        "environment": environment,
        "step": row.step_name,
        "kind": row.kind,
        "title": row.title,
        "responsible_teams": list(row.responsible_teams or ()),
        "state": row.state,
        "result": row.result,
        "answered_by": row.answered_by,
        "answered_at": iso(row.answered_at),
        "notes": row.notes,
        "answers": [
            {
                "username": a.get("username"),
                "teams": list(a.get("teams", ())),
                "result": a.get("result"),
                "notes": a.get("notes", ""),
                "at": a.get("at"),
                # This person's answers to the step's questions (a change ticket, a choice).
                "fields": dict(a.get("fields") or {}),
            }
            for a in row.answers or ()
        ],
        "fields": dict(row.fields or {}),  # the answers that stand once it was settled
    }


async def release_evidence(
    services: Services, caller: Caller, project: str, version: str
) -> dict[str, Any]:
    view = await get_release(services, caller, project, version)  # checks ReleaseView
    # Approvals given ahead of time for this release, in every environment (with their state).
    ahead = await list_approvals(services, caller, project_ref=view.project, version=view.version)
    async with services.read() as session:
        names = await names_of(session)
        row, previous = await _rows(session, view.id)
        deployments = await _deployments(session, row.id)
        query = select(t.projects.c.name, PROJECT_GROUP.label("grp"))
        groups = {r.name: r.grp or "" for r in await session.execute(query)}

        def visible(permission: P, project_id: int | None, env_id: int | None) -> bool:
            name = names.projects.get(project_id) if project_id else None
            ref = perms.ProjectRef(name, groups.get(name, "")) if name else None
            env = names.environments.get(env_id) if env_id else None
            return perms.authorize(
                caller.principal, permission, project=ref, environment=env
            ).allowed

        shown = [
            r for r in deployments if visible(P.DeploymentView, r.project_id, r.environment_id)
        ]
        ids = [r.id for r in deployments]
        interruptions = (
            await session.execute(
                select(t.interruptions)
                .where(t.interruptions.c.deployment_id.in_(ids))
                .order_by(t.interruptions.c.id)
            )
        ).all()
        approvals = [
            r for r in interruptions if visible(P.InterruptionView, r.project_id, r.environment_id)
        ]
        documents = [public_id("releases", row.id)]
        documents += [public_id("deployments", r.id) for r in deployments]
        documents += [public_id("tasks", r.task_id) for r in deployments if r.task_id]
        documents += [public_id("interruptions", r.id) for r in interruptions]
        documents += [a["id"] for a in ahead]
        events: list[dict[str, Any]] = []
        events_hidden = None
        try:
            where = await conditions(session, caller, Filters(documents=tuple(documents)))
        except PermissionDenied as exc:
            events_hidden = exc.message
        else:
            rows = await session.execute(
                select(t.events).where(*where).order_by(t.events.c.id).limit(MAX_EVENTS)
            )
            events = [event_json(e, names) for e in rows]
    return {
        "release": {
            **view.as_dict(),
            "created_by_id": row.created_by_id,
            "process_version": (row.snapshot or {}).get("process_version"),
        },
        "changes": _changes(services, row, previous),
        "deployments": [
            _deployment_json(
                r, names.projects.get(r.project_id), names.environments.get(r.environment_id)
            )
            for r in shown
        ],
        "approvals": [
            _approval_json(r, names.environments.get(r.environment_id)) for r in approvals
        ],
        "approvals_ahead": ahead,
        "events": events,
        "events_hidden": events_hidden,
        "generated_by": caller.username,
        "generated": iso(services.clock()),
    }
