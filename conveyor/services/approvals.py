"""Approvals given ahead of time: for a release (for an orchestrator, its whole train as pinned
in the release) and an environment, before any deployment exists.

Who may give one, and when it counts, are the rules of ``conveyor.domain.governance``: a member
of a team the environment's approval check names, with the permission to answer approvals there,
not the release's creator nor an author of its commits (when the check blocks them). An approval
counts until it expires (``approval_hours``), is revoked, or the release changes (its digest).
Giving or revoking one looks at the held deployments of the environment at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from conveyor.domain import channels as ch
from conveyor.domain import governance as gov
from conveyor.domain import inputs
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import InputField, key
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied, PolicyViolation
from conveyor.services import gates
from conveyor.services.config import load, public_id, require_public_id
from conveyor.services.core import Caller, PendingEvent, Services, Tx, iso
from conveyor.services.deployments import Target, resolve_target
from conveyor.store import runs
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
MAX_NOTES = 4000


def fields_asked(checks: tuple[Any, ...]) -> tuple[InputField, ...]:
    """The questions the environment's approval checks ask, each once."""
    out: dict[str, InputField] = {}
    for check in gov.approval_checks(checks):
        for f in check.fields:
            out.setdefault(key(f.name), f)
    return tuple(out.values())


def _facts(target: Target) -> gates.Facts:
    return gates.Facts(
        project=target.project,
        project_id=target.project_id,
        environment=target.environment,
        environment_id=target.environment_id,
        release=target.release,
    )


def _refused(tx: Tx, target: Target, reason: str) -> PermissionDenied:
    tx.refusals.append(
        PendingEvent(
            Category.ACCESS_DENIED,
            f"{tx.caller.username} was refused to approve {target.project.name} "
            f"{target.release.version} for {target.environment.name}: {reason}",
            [public_id("releases", target.release.id)],
            {"reason": reason, "environment": target.environment.name},
            target.project_id,
            target.environment_id,
        )
    )
    return PermissionDenied(reason, permission="InterruptionSubmit")


async def give(
    services: Services,
    caller: Caller,
    project_ref: str,
    version: str,
    environment: str,
    *,
    notes: str = "",
    fields: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Approve a release for an environment ahead of time; returns the approval as listed,
    with the deployments it let go."""
    loaded = await load(services)
    target = await resolve_target(services, loaded, project_ref, version, environment)
    checks = _facts(target).checks
    label = f"{target.project.name} {target.release.version}"
    if not gov.approval_checks(checks):
        raise PolicyViolation(
            f"{target.environment.name} asks for no approval of {target.project.name} (its "
            "environment checks name no approvers): nothing to approve"
        )
    verdict, digest = await _verdict(services, caller, loaded, target)
    async with services.tx(caller) as tx:
        if not verdict.allowed:
            raise _refused(tx, target, verdict.reason)
        answers = inputs.check_answers(fields_asked(checks), dict(fields or {}))
        notes = notes.strip()
        if len(notes) > MAX_NOTES:
            raise PolicyViolation(f"notes are longer than {MAX_NOTES} characters")
        await _not_twice(tx, target, caller, digest)
        expires = tx.now + timedelta(hours=services.settings.approval_hours)
        created = await tx.session.execute(
            t.approvals.insert()
            .values(
                release_id=target.release.id,
                project_id=target.project_id,
                environment_id=target.environment_id,
                user_id=caller.user_id,
                username=caller.username,
                teams=list(verdict.teams),
                notes=notes,
                fields=answers,
                digest=digest,
                given_at=tx.now,
                expires_at=expires,
            )
            .returning(t.approvals.c.id)
        )
        approval_id = int(created.scalar_one())
        await tx.audit(
            Category.APPROVAL_GIVEN,
            f"{caller.username} approved {label} for {target.environment.name} "
            f"(as {', '.join(verdict.teams)})",
            documents=[
                public_id("approvals", approval_id),
                public_id("releases", target.release.id),
                public_id("projects", target.project_id),
                public_id("environments", target.environment_id),
            ],
            details={
                "release": target.release.version,
                "environment": target.environment.name,
                "teams": list(verdict.teams),
                "notes": notes,
                "fields": answers,
                "expires": iso(expires),
                "children": {c["project"]: c["version"] for c in target.release.children or ()},
            },
            project_id=target.project_id,
            environment_id=target.environment_id,
        )
    released = await gates.reevaluate(services, caller, target.environment_id)
    found = await list_approvals(services, caller, approval_id=approval_id)
    return {**found[0], "released": released}


async def _verdict(
    services: Services, caller: Caller, loaded: Loaded, target: Target
) -> tuple[gov.Verdict, str]:
    """May the caller approve the target (the same rule for the form and the approval), and
    the release's digest they would approve."""
    facts = _facts(target)
    authors = await gates.commit_authors(services, loaded, facts)
    digest = gates.release_digest(target.release)
    subject = gates.subject_of(facts, digest, authors)
    users, _ = gates.people(loaded)
    teams = [tm.name for tm in loaded.model.teams_of(caller.username)]
    checks = gov.approval_checks(facts.checks)
    verdict = gov.may_approve(
        caller.principal, teams, checks, subject, users.get(key(caller.username))
    )
    return verdict, digest


async def form(
    services: Services, caller: Caller, project_ref: str, version: str, environment: str
) -> dict[str, Any]:
    """What the approval form of a release and environment needs: the questions asked,
    whether the caller may approve (and why not), the approvals already given there."""
    loaded = await load(services)
    target = await resolve_target(services, loaded, project_ref, version, environment)
    checks = _facts(target).checks
    asked = fields_asked(checks)
    if gov.approval_checks(checks):
        verdict, _ = await _verdict(services, caller, loaded, target)
    else:
        verdict = gov.Verdict(False, f"{target.environment.name} asks for no approval of it")
    given = await list_approvals(
        services,
        caller,
        project_ref=target.project.name,
        version=target.release.version,
        environment=target.environment.name,
    )
    mine = [a for a in given if a["state"] == "valid" and key(a["user"]) == key(caller.username)]
    if mine:
        verdict = gov.Verdict(False, f"you approved it already ({mine[0]['id']})")
    return {
        "environment": target.environment.name,
        "asks": bool(gov.approval_checks(checks)),
        "fields": [
            {
                "name": f.name,
                "label": f.label or f.name,
                "pattern": f.pattern,
                "choices": list(f.choices),
                "required": f.required,
                "description": f.description,
            }
            for f in asked
        ],
        "may": {"allowed": verdict.allowed, "reason": verdict.reason},
        "approvals": given,
    }


async def release_panel(
    services: Services, caller: Caller, project_ref: str, version: str
) -> dict[str, Any]:
    """For the release page: the environments of the release's lifecycle (its channel's, by
    default the project's) whose checks ask for approvals, and the approvals given for it."""
    from conveyor.services.documents import resolve
    from conveyor.services.releases import find_release

    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    given = await list_approvals(services, caller, project_ref=project.name, version=version)
    release = await find_release(services, loaded.id_of("projects", project.name) or 0, version)
    channel = release.channel if release is not None else ""
    asking = [
        name
        for name in loaded.model.lifecycle_environments(ch.lifecycle_of(project, channel))
        if (env := loaded.model.get("environments", name)) is not None
        and gov.approval_checks(gov.applicable(env, project.group))
    ]
    return {"environments": asking, "approvals": given}


async def wanted(services: Services, caller: Caller, *, limit: int = 50) -> list[dict[str, Any]]:
    """Held deployments that wait for an approval the caller may give (and has not): what the
    "Waiting for me" page lists beside the interruptions. A train's children are left out:
    approving the orchestrator covers them."""
    loaded = await load(services)
    users, _ = gates.people(loaded)
    teams = [tm.name for tm in loaded.model.teams_of(caller.username)]
    if not teams:
        return []

    def pending(row: Any) -> list[dict[str, Any]]:
        return [c for c in row.checks or () if c["kind"] == "approval" and c["state"] != "passed"]

    # Every page's navigation counts these: only the held deployments whose stored evaluation
    # waits for an approval are read further, all in one read.
    async with services.read() as session:
        held = await runs.held_tasks(session)
        rows = [r for r in held if r.parent_id is None and pending(r)]
        found = []
        for row in rows:
            fact = await gates.facts_of(services, loaded, session, row)
            if fact is not None:
                found.append((row, fact, await gates.given(session, fact)))
    now = services.clock()
    out: list[dict[str, Any]] = []
    for row, fact, approvals_given in found:
        checks = gov.approval_checks(fact.checks)
        subject = gates.subject_of(fact, gates.release_digest(fact.release), ())
        verdict = gov.may_approve(
            caller.principal, teams, checks, subject, users.get(key(caller.username))
        )
        if not verdict.allowed or any(
            key(a.username) == key(caller.username)
            and not a.revoked
            and a.digest == subject.digest
            and a.expires_at > now
            for a in approvals_given
        ):
            continue
        out.append(
            {
                "project": fact.project.name,
                "slug": key(fact.project.name),
                "version": fact.release.version,
                "environment": fact.environment.name,
                "task": public_id("tasks", row.task_id),
                "queued_by": row.created_by,
                "as": list(verdict.teams),
                "reason": pending(row)[0]["reason"],
            }
        )
        if len(out) >= limit:
            break
    return out


async def _not_twice(tx: Tx, target: Target, caller: Caller, digest: str) -> None:
    rows = await tx.session.execute(
        select(t.approvals.c.id, t.approvals.c.given_at).where(
            t.approvals.c.release_id == target.release.id,
            t.approvals.c.environment_id == target.environment_id,
            t.approvals.c.username == caller.username,
            t.approvals.c.digest == digest,
            t.approvals.c.revoked_at.is_(None),
            t.approvals.c.expires_at > tx.now,
        )
    )
    row = rows.first()
    if row is not None:
        raise Conflict(
            f"you approved {target.project.name} {target.release.version} for "
            f"{target.environment.name} already ({public_id('approvals', row.id)}); another "
            "person's approval is what is missing, if anything"
        )


async def revoke(services: Services, caller: Caller, ident: str) -> dict[str, Any]:
    """Withdraw an approval: its approver, or someone who may edit the environment (who owns
    its checks). Deployments it let go that have not started are held again."""
    approval_id = require_public_id("approvals", ident, "approval")
    loaded = await load(services)
    async with services.tx(caller) as tx:
        row = (
            await tx.session.execute(
                select(t.approvals).where(t.approvals.c.id == approval_id).with_for_update()
            )
        ).first()
        if row is None or not _may_view(caller, loaded, row):
            raise NotFound(f"approval {public_id('approvals', approval_id)} does not exist")
        env_name = loaded.name_of("environments", row.environment_id) or "?"
        if key(row.username) != key(caller.username):
            tx.require(
                P.EnvironmentEdit,
                environment=env_name,
                documents=[public_id("approvals", approval_id)],
                environment_id=row.environment_id,
            )
        if row.revoked_at is not None:
            raise Conflict(
                f"{public_id('approvals', approval_id)} was revoked already by {row.revoked_by}"
            )
        await tx.session.execute(
            update(t.approvals)
            .where(t.approvals.c.id == approval_id)
            .values(revoked_at=tx.now, revoked_by=caller.username)
        )
        held = await _hold_again(tx, row.environment_id)
        project_name = loaded.name_of("projects", row.project_id) or "?"
        await tx.audit(
            Category.APPROVAL_REVOKED,
            f"{caller.username} revoked {row.username}'s approval of {project_name} for "
            f"{env_name} ({public_id('approvals', approval_id)})",
            documents=[
                public_id("approvals", approval_id),
                public_id("releases", row.release_id),
            ],
            details={"approver": row.username, "held_again": held},
            project_id=row.project_id,
            environment_id=row.environment_id,
        )
    await gates.reevaluate(services, caller, row.environment_id)
    found = await list_approvals(services, caller, approval_id=approval_id)
    return found[0]


async def _hold_again(tx: Tx, environment_id: int) -> int:
    """Deployments to the environment let go by the checks but not started yet are held again,
    to be looked at anew (those the revoked approval was not needed for are let go at once)."""
    return await runs.hold_unstarted(tx.session, environment_id)


def _may_view(caller: Caller, loaded: Loaded, row: Any) -> bool:
    name = loaded.name_of("projects", row.project_id)
    project = loaded.model.get("projects", name) if name else None
    if project is None:
        return False
    ref = perms.ProjectRef(project.name, project.group)
    return perms.authorize(caller.principal, P.ReleaseView, project=ref).allowed


async def list_approvals(
    services: Services,
    caller: Caller,
    *,
    project_ref: str | None = None,
    version: str | None = None,
    environment: str | None = None,
    approval_id: int | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Approvals the caller may see (ReleaseView on the project), newest first, each with its
    state now: valid, expired, revoked or stale (the release changed since)."""
    from conveyor.services.documents import resolve
    from conveyor.services.releases import find_release

    loaded = await load(services)
    query = (
        select(t.approvals, t.releases.c.version, t.releases.c.snapshot)
        .join(t.releases, t.releases.c.id == t.approvals.c.release_id)
        .order_by(t.approvals.c.id.desc())
        .limit(limit)
    )
    if approval_id is not None:
        query = query.where(t.approvals.c.id == approval_id)
    if project_ref:
        project = resolve(loaded, "projects", project_ref)
        project_id = loaded.id_of("projects", project.name)
        query = query.where(t.approvals.c.project_id == project_id)
        if version:
            release = await find_release(services, int(project_id or 0), version)
            if release is None:
                raise NotFound(f"{project.name} has no release {version}")
            query = query.where(t.approvals.c.release_id == release.id)
    if environment:
        env = resolve(loaded, "environments", environment)
        query = query.where(t.approvals.c.environment_id == loaded.id_of("environments", env.name))
    now = services.clock()
    async with services.read() as session:
        rows = [r for r in (await session.execute(query)).all() if _may_view(caller, loaded, r)]
        digests = await _digests(session, {r.release_id for r in rows})
    return [_view(loaded, r, digests.get(r.release_id, ""), now) for r in rows]


async def _digests(session: Any, release_ids: set[int]) -> dict[int, str]:
    if not release_ids:
        return {}
    rows = await session.execute(select(t.releases).where(t.releases.c.id.in_(release_ids)))
    return {r.id: gates.release_digest(r) for r in rows}


def _view(loaded: Loaded, row: Any, digest: str, now: Any) -> dict[str, Any]:
    if row.revoked_at is not None:
        state = "revoked"
    elif row.digest != digest:
        state = "stale"
    elif gates.aware(row.expires_at) <= now:
        state = "expired"
    else:
        state = "valid"
    return {
        "id": public_id("approvals", row.id),
        "project": loaded.name_of("projects", row.project_id),
        "version": row.version,
        "environment": loaded.name_of("environments", row.environment_id),
        "user": row.username,
        "teams": list(row.teams or ()),
        "notes": row.notes,
        "fields": dict(row.fields or {}),
        "given": iso(row.given_at),
        "expires": iso(row.expires_at),
        "state": state,
        "revoked_by": row.revoked_by,
        "revoked": iso(row.revoked_at),
    }
