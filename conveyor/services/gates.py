"""Environment checks at work: a deployment is held while its environment's checks do not pass.

The rules are ``conveyor.domain.governance``; this module gathers what they need (approvals
given ahead of time, the release's digest, the authors of the commits it brings, who queued
it) and acts on the answer. Checks are evaluated when a deployment is queued
(``services.deployments.queue_deployment``), whenever an approval is given or revoked, every
few seconds by each node (windows opening, start times and freezes passing, approvals
expiring), and once more just before the deployment starts (``engine.executor``), so an
approval revoked or a window closed in between still holds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from conveyor.domain import governance as gov
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import Environment, Project, User, key
from conveyor.domain.errors import PolicyViolation, ValidationFailed
from conveyor.services.buildinfo import plan_changes
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, Tx, system_caller
from conveyor.store import runs
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

log = logging.getLogger(__name__)
P = perms.Permission


def release_digest(release: Any) -> str:
    """What an approval approves: the release's snapshot, packages and pinned children. Any
    change to them (``release update-variables``) makes earlier approvals stale."""
    children = sorted(
        (str(c.get("step", "")), str(c.get("project", "")), str(c.get("version", "")))
        for c in release.children or ()
    )
    body = json.dumps(
        {"snapshot": release.snapshot, "packages": release.packages, "children": children},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def aware(value: datetime) -> datetime:
    """SQLite gives times back without their zone; they are all UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def people(loaded: Loaded) -> tuple[dict[str, User], dict[str, set[str]]]:
    """Users by key, and the keys of the teams each user (key) is in now."""
    users = {key(u.username): u for u in loaded.model.users}
    teams_of: dict[str, set[str]] = {}
    for team in loaded.model.teams:
        for member in team.members:
            teams_of.setdefault(key(member), set()).add(key(team.name))
    return users, teams_of


@dataclass(frozen=True)
class Facts:
    """One deployment (or a would-be one) as the checks need it."""

    project: Project
    project_id: int
    environment: Environment
    environment_id: int
    release: Any
    # The train's release when this is a child deployment: approvals of it count too.
    parent_release: Any | None = None
    created_by: str = ""
    start_at: datetime | None = None
    freeze_override: str = ""

    @property
    def checks(self) -> tuple[Any, ...]:
        return gov.applicable(self.environment, self.project.group)


async def commit_authors(services: Services, loaded: Loaded, facts: Facts) -> tuple[str, ...]:
    """The authors of the commits the release (and its children) brings to the environment."""
    async with services.read() as session:
        current = await runs.success_versions(session, facts.environment_id)
    release = facts.release
    entries = [(facts.project_id, facts.project.name, release.version)]
    entries += [(c["project_id"], c["project"], c["version"]) for c in release.children or ()]
    brought = await plan_changes(services, system_caller(), loaded, entries, current)
    return tuple(sorted({c.get("author", "") for b in brought for c in b["commits"]} - {""}))


async def given(session: Any, facts: Facts) -> list[gov.Approval]:
    """Approvals of the release (or of its train) for the environment. One given for a
    release whose digest has changed since is marked stale, whatever release it was for."""
    releases = {facts.release.id: facts.release}
    if facts.parent_release is not None:
        releases[facts.parent_release.id] = facts.parent_release
    digests = {rid: release_digest(r) for rid, r in releases.items()}
    subject = digests[facts.release.id]
    rows = await session.execute(
        select(t.approvals).where(
            t.approvals.c.release_id.in_(list(releases)),
            t.approvals.c.environment_id == facts.environment_id,
        )
    )
    return [
        gov.Approval(
            id=int(r.id),
            username=r.username,
            given_at=aware(r.given_at),
            expires_at=aware(r.expires_at),
            digest=subject if r.digest == digests[r.release_id] else f"stale:{r.digest}",
            revoked=r.revoked_at is not None,
            fields=dict(r.fields or {}),
        )
        for r in rows
    ]


async def approval_variables(
    session: Any, release: Any, parent_release: Any | None, environment_id: int, now: datetime
) -> dict[str, str]:
    """What later steps read of the approvals given ahead of time for this deployment (or its
    train): ``Conveyor.Approval.<Field>`` (the latest valid answer) and
    ``Conveyor.Approval.ApprovedBy`` (who approved, comma-separated)."""
    releases = {release.id: release}
    if parent_release is not None:
        releases[parent_release.id] = parent_release
    digests = {rid: release_digest(r) for rid, r in releases.items()}
    rows = await session.execute(
        select(t.approvals)
        .where(
            t.approvals.c.release_id.in_(list(releases)),
            t.approvals.c.environment_id == environment_id,
            t.approvals.c.revoked_at.is_(None),
        )
        .order_by(t.approvals.c.given_at, t.approvals.c.id)
    )
    values: dict[str, str] = {}
    approvers: list[str] = []
    for r in rows:
        if r.digest != digests[r.release_id] or aware(r.expires_at) <= now:
            continue
        if r.username not in approvers:
            approvers.append(r.username)
        for name, value in (r.fields or {}).items():
            values[f"Conveyor.Approval.{name}"] = str(value)
    if approvers:
        values["Conveyor.Approval.ApprovedBy"] = ", ".join(approvers)
    return values


def subject_of(facts: Facts, digest: str, authors: tuple[str, ...]) -> gov.Subject:
    return gov.Subject(
        project=perms.ProjectRef(facts.project.name, facts.project.group),
        environment=facts.environment.name,
        digest=digest,
        release_created_by=facts.release.created_by,
        deployment_created_by=facts.created_by,
        commit_authors=authors,
        freeze_override=facts.freeze_override,
        start_at=facts.start_at,
    )


async def evaluate(
    services: Services, loaded: Loaded, facts: Facts, now: datetime, session: Any | None = None
) -> gov.Evaluation | None:
    """The checks of the deployment at ``now``; None when no check applies to it."""
    checks = facts.checks
    if not checks and facts.start_at is None:
        return None
    authors: tuple[str, ...] = ()
    if gov.approval_checks(checks):
        authors = await commit_authors(services, loaded, facts)
    if session is None:
        async with services.read() as reading:
            approvals = await given(reading, facts)
    else:
        approvals = await given(session, facts)
    users, teams_of = people(loaded)
    subject = subject_of(facts, release_digest(facts.release), authors)
    return gov.evaluate(checks, subject, approvals, users, teams_of, now)


def as_json(evaluation: gov.Evaluation | None) -> list[dict[str, str]]:
    return [r.as_dict() for r in evaluation.results] if evaluation else []


# ------------------------------------------------------------------ when queued


@dataclass(frozen=True)
class Gate:
    """What queuing decided: held or not, the checks as evaluated, the freeze overridden."""

    evaluation: gov.Evaluation | None
    override: str | None = None

    @property
    def held(self) -> bool:
        return self.evaluation is not None and not self.evaluation.passed


async def at_queue(tx: Tx, loaded: Loaded, facts: Facts, freeze_override: str | None) -> Gate:
    """Evaluate a deployment being queued, in its transaction: refuse what may not be queued
    (a freeze without the permission and a reason, a start time outside the window), and say
    whether it is held."""
    checks = facts.checks
    now = tx.now
    if facts.start_at is not None:
        problem = gov.scheduled_problem(checks, facts.start_at, now)
        if problem:
            raise ValidationFailed(f"--at: {problem}")
    moment = facts.start_at if facts.start_at and facts.start_at > now else now
    frozen = gov.active_freeze([f for c in checks for f in c.freezes], moment)
    override = (freeze_override or "").strip() or None
    if override and frozen is None:
        raise ValidationFailed(
            f"no freeze is in force in {facts.environment.name} then: leave out the override"
        )
    if frozen is not None:
        freeze, end = frozen
        if override is None:
            raise PolicyViolation(
                f"{facts.environment.name} is frozen ({freeze.name}) until {gov.stamp(end)}: "
                "nothing deploys there. Someone with DeploymentFreezeAdminister may override "
                "it, giving a reason (--freeze-override REASON)"
            )
        tx.require(
            P.DeploymentFreezeAdminister,
            project=perms.ProjectRef(facts.project.name, facts.project.group),
            environment=facts.environment.name,
            project_id=facts.project_id,
            environment_id=facts.environment_id,
        )
    evaluated = replace(facts, freeze_override=override or "")
    evaluation = await evaluate(tx.services, loaded, evaluated, now, tx.session)
    return Gate(evaluation, override)


async def supersede(tx: Tx, facts: Facts, task_id: int, label: str) -> list[int]:
    """``run_latest``: the older queued deployments of the project in the environment that
    have not started are canceled, each saying which deployment replaced it."""
    if not gov.runs_latest(facts.checks):
        return []
    canceled = []
    reason = f"superseded by {label} ({public_id('tasks', task_id)}), queued by {facts.created_by}"
    older = await runs.unstarted_in_pair(
        tx.session, facts.project_id, facts.environment_id, before_task=task_id
    )
    for old_task, old_deployment, description in older:
        woke = await runs.withdraw(
            tx.session, tx.now, old_task, reason, sqlite=tx.services.is_sqlite
        )
        if woke is None:
            continue
        if woke:
            await tx.wake()
        canceled.append(old_task)
        await tx.audit(
            Category.DEPLOYMENT_SUPERSEDED,
            f"{description} was canceled: {reason}",
            documents=[
                public_id("deployments", old_deployment),
                public_id("tasks", old_task),
                public_id("tasks", task_id),
            ],
            details={"reason": reason, "by": public_id("tasks", task_id)},
            project_id=facts.project_id,
            environment_id=facts.environment_id,
        )
    return canceled


# ------------------------------------------------------------------ later


async def facts_of(services: Services, loaded: Loaded, session: Any, row: Any) -> Facts | None:
    """The facts of a stored deployment (a row of ``runs.held_tasks``); None when its project
    or environment is gone."""
    project_name = loaded.name_of("projects", row.project_id)
    env_name = loaded.name_of("environments", row.environment_id)
    project = loaded.model.get("projects", project_name) if project_name else None
    env = loaded.model.get("environments", env_name) if env_name else None
    if project is None or env is None:
        return None
    release = await runs.release(session, row.release_id)
    parent_release = None
    if row.parent_id is not None:
        parent = await runs.deployment(session, row.parent_id)
        parent_release = await runs.release(session, parent.release_id)
    return Facts(
        project=project,
        project_id=row.project_id,
        environment=env,
        environment_id=row.environment_id,
        release=release,
        parent_release=parent_release,
        created_by=row.created_by,
        start_at=aware(row.start_at) if row.start_at is not None else None,
        freeze_override=row.freeze_override or "",
    )


async def reevaluate(
    services: Services, caller: Caller | None = None, environment_id: int | None = None
) -> int:
    """Look at every held deployment again (of one environment, after an approval there):
    release those whose checks pass, cancel scheduled ones whose window closed, and keep the
    evaluation shown for the others current. Returns how many were released or canceled."""
    caller = caller or system_caller()
    loaded = await load(services)
    async with services.read() as session:
        rows = await runs.held_tasks(session, environment_id)
        pending = []
        for row in rows:
            facts = await facts_of(services, loaded, session, row)
            if facts is not None:
                pending.append((row, facts))
    moved = 0
    for row, facts in pending:
        now = services.clock()
        evaluation = await evaluate(services, loaded, facts, now)
        still = evaluation is not None and not evaluation.passed and not evaluation.expired
        if still and as_json(evaluation) == (row.checks or []):
            continue  # nothing changed: no write (each node looks every few seconds)
        async with services.tx(caller) as tx:
            if evaluation is None or evaluation.passed:
                moved += await _release(tx, row, facts, evaluation)
            elif evaluation.expired:
                moved += await _expire(tx, row, facts, evaluation)
            else:
                await runs.set_checks(tx.session, row.deployment_id, as_json(evaluation))
    return moved


def _docs(row: Any) -> list[str]:
    return [public_id("deployments", row.deployment_id), public_id("tasks", row.task_id)]


async def _release(tx: Tx, row: Any, facts: Facts, evaluation: gov.Evaluation | None) -> int:
    if not await runs.release_held(tx.session, row.task_id):
        return 0
    await runs.set_checks(tx.session, row.deployment_id, as_json(evaluation))
    label = f"{facts.project.name} {facts.release.version} to {facts.environment.name}"
    await tx.audit(
        Category.DEPLOYMENT_RELEASED,
        f"The deployment of {label} passed its environment's checks and may start",
        documents=_docs(row),
        details={"checks": as_json(evaluation)},
        project_id=facts.project_id,
        environment_id=facts.environment_id,
    )
    await tx.wake()
    return 1


async def _expire(tx: Tx, row: Any, facts: Facts, evaluation: gov.Evaluation) -> int:
    woke = await runs.withdraw(
        tx.session, tx.now, row.task_id, evaluation.expired, sqlite=tx.services.is_sqlite
    )
    if woke is None:
        return 0
    if woke:
        await tx.wake()
    await runs.set_checks(tx.session, row.deployment_id, as_json(evaluation))
    label = f"{facts.project.name} {facts.release.version} to {facts.environment.name}"
    await tx.audit(
        Category.DEPLOYMENT_EXPIRED,
        f"The deployment of {label} was canceled: {evaluation.expired}",
        documents=_docs(row),
        details={"reason": evaluation.expired, "checks": as_json(evaluation)},
        project_id=facts.project_id,
        environment_id=facts.environment_id,
    )
    return 1


def pending_reasons(checks: Sequence[Mapping[str, Any]] | None) -> str:
    """Why a held deployment waits, from its stored evaluation."""
    return "; ".join(
        f"{c['name']}: {c['reason']}" for c in checks or () if c.get("state") != "passed"
    )
