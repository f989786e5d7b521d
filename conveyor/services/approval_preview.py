"""What an approver sees before approving a release for an environment, ahead of any deployment.

The release and, for an orchestrator, each child release it pins; against what is current (last
successful) in the environment: whether each child would change, the commits each project
brings (the plan's own `plan_changes`), and the process steps and variables that differ from the
release now there. A sensitive variable only ever shows as added, removed or changed: its value
is decrypted in memory to compare and never returned. Child projects whose releases the caller
may not view are left out, and the answer says so.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from conveyor.domain import governance as gov
from conveyor.domain import permissions as perms
from conveyor.domain.codec import decode_process
from conveyor.domain.diff import step_changes
from conveyor.domain.documents import DeployReleaseAction, Environment, Project, Step, key
from conveyor.domain.errors import PermissionDenied, Problem
from conveyor.domain.versions import Version
from conveyor.services.buildinfo import current_releases, plan_changes
from conveyor.services.config import load
from conveyor.services.core import Caller, Services, iso
from conveyor.services.deployments import resolve_target
from conveyor.services.evidence import variable_changes
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission


def _ref(project: Project) -> perms.ProjectRef:
    return perms.ProjectRef(project.name, project.group)


def _decision(caller: Caller, permission: P, project: Project) -> perms.Decision:
    return perms.authorize(caller.principal, permission, project=_ref(project))


def _steps(snapshot: dict[str, Any] | None) -> tuple[Step, ...]:
    if snapshot is None:
        return ()
    problems: list[Problem] = []  # none: snapshots are written by services/releases.py
    process = decode_process(snapshot["process"], ("release", "process"), problems)
    return process.steps


def process_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Steps added, removed and changed (with the fields that changed) between two release
    snapshots, by name; and the new order when steps present in both moved."""
    steps: list[dict[str, Any]] = []
    order = None
    for change in step_changes(_steps(before), _steps(after)):
        if change.field == "step order":
            order = {"before": change.before, "after": change.after}
            continue
        name = change.field.removeprefix("steps[").removesuffix("]")
        if isinstance(change.after, dict):
            fields = [
                {"field": f, "before": change.before.get(f), "after": change.after.get(f)}
                for f in change.after
            ]
            steps.append({"name": name, "change": "changed", "fields": fields})
        else:
            steps.append({"name": name, "change": str(change.after), "fields": []})
    return {"steps": steps, "order": order}


def _compared(version: str, current: str | None) -> str:
    if current is None:
        return "new"
    ours, theirs = Version(version), Version(current)
    return "same" if ours == theirs else "newer" if ours > theirs else "older"


def approves(loaded: Loaded, caller: Caller, project: Project, environment: Environment) -> bool:
    """Whether the caller is one of the approvers the environment's checks name for the project
    (a member of a named team who may answer approvals there): they see what they approve."""
    checks = gov.approval_checks(gov.applicable(environment, project.group))
    teams = [team.name for team in loaded.model.teams_of(caller.username)]
    verdict = gov.named_approver(caller.principal, teams, checks, _ref(project), environment.name)
    return verdict.allowed


def _variables(
    services: Services,
    caller: Caller,
    project: Project,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    approver: bool = False,
) -> dict[str, Any]:
    """The variable changes; their values (never sensitive ones) only for a caller who may view
    the project's variables, or who approves this deployment (``variable_values`` then None,
    else why not)."""
    changes = variable_changes(services, before, after)
    decision = _decision(caller, P.VariableView, project)
    if decision.allowed or approver:
        return {"variables": changes, "variable_values": None}
    hidden = [{**c, "before": None, "after": None} for c in changes]
    return {"variables": hidden, "variable_values": f"values not shown: {decision.reason}"}


async def _snapshots(services: Services, release_ids: set[int]) -> dict[int, dict[str, Any]]:
    if not release_ids:
        return {}
    async with services.read() as session:
        rows = await session.execute(
            select(t.releases.c.id, t.releases.c.snapshot).where(
                t.releases.c.id.in_(sorted(release_ids))
            )
        )
        return {r.id: r.snapshot for r in rows}


async def preview(
    services: Services, caller: Caller, project_ref: str, version: str, environment: str
) -> dict[str, Any]:
    loaded = await load(services)
    target = await resolve_target(services, loaded, project_ref, version, environment)
    decision = _decision(caller, P.ReleaseView, target.project)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(P.ReleaseView))
    release = target.release
    conditions = {
        key(s.name): s.action.condition.value
        for s in _steps(release.snapshot)
        if isinstance(s.action, DeployReleaseAction)
    }
    # Each child as pinned in the release: (its project now, the pinned child entry).
    children: list[tuple[Project, dict[str, Any]]] = []
    left_out: list[dict[str, Any]] = []
    for child in release.children:
        name = loaded.name_of("projects", child["project_id"])
        project = loaded.model.get("projects", name) if name else None
        if not isinstance(project, Project):
            left_out.append({"project": child["project"], "reason": "it no longer exists"})
            continue
        if _decision(caller, P.ReleaseView, project).allowed:
            children.append((project, child))
        else:
            # Named: the release itself (and its process) already says which children it pins.
            left_out.append(
                {"project": project.name, "reason": "you may not view its releases (ReleaseView)"}
            )
    # The release, then each child shown: (project id, name, version, release id).
    entries = [(target.project_id, target.project.name, release.version, release.id)]
    entries += [(c["project_id"], p.name, c["version"], c["release_id"]) for p, c in children]
    current = await current_releases(services, [e[0] for e in entries], target.environment_id)
    snapshots = await _snapshots(
        services, {e[3] for e in entries} | {rid for rid, _ in current.values()}
    )
    versions_now = {pid: v for pid, (_, v) in current.items()}
    commits = await plan_changes(
        services, caller, loaded, [e[:3] for e in entries], dict(versions_now)
    )
    shown = {target.project.name: target.project} | {p.name: p for p, _ in children}
    # An approver of the release (for a train: of the orchestrator) sees every value it changes.
    approver = approves(loaded, caller, target.project, target.environment)
    projects = []
    for pid, name, ver, rid in entries:
        now = current.get(pid)
        before = snapshots.get(now[0]) if now else None
        projects.append(
            {
                "project": name,
                "release": ver,
                "current": now[1] if now else None,
                "process": process_changes(before, snapshots[rid]),
                **_variables(services, caller, shown[name], before, snapshots[rid], approver),
            }
        )
    return {
        "release": {
            "project": target.project.name,
            "version": release.version,
            "created": iso(release.created_at),
            "created_by": release.created_by,
            "notes": release.notes,
        },
        "environment": target.environment.name,
        "current": versions_now.get(target.project_id),
        "children": [
            {
                "step": c["step"],
                "project": p.name,
                "version": c["version"],
                "current": versions_now.get(c["project_id"]),
                "change": _compared(c["version"], versions_now.get(c["project_id"])),
                "condition": conditions.get(key(c["step"])),
            }
            for p, c in children
        ],
        "left_out": left_out,
        "commits": commits,
        "projects": projects,
    }
