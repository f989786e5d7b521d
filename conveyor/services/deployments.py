"""Deployments: a release sent to an environment, as a queued task; and the plan preview."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from conveyor.domain import channels as ch
from conveyor.domain import lifecycle as lc
from conveyor.domain import permissions as perms
from conveyor.domain import planning
from conveyor.domain.audit import Category
from conveyor.domain.documents import (
    Environment,
    Lifecycle,
    Project,
    key,
)
from conveyor.domain.errors import NotFound, PolicyViolation, ValidationFailed
from conveyor.domain.holds import Pin, is_rollback
from conveyor.domain.runtime import TaskState
from conveyor.services import gates, pins, release_blocks
from conveyor.services.buildinfo import plan_changes
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, Tx, iso
from conveyor.services.documents import resolve
from conveyor.services.offload import off_loop
from conveyor.services.releases import find_release, read_snapshot
from conveyor.store import runs
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
ACTIVE = tuple(s.value for s in TaskState if not s.ended)
TERMINAL = tuple(s.value for s in TaskState if s.ended)


outcome = lc.outcome_of


@dataclass(frozen=True)
class Target:
    """Where a deployment goes, resolved from names: project, release, environment."""

    project: Project
    project_id: int
    environment: Environment
    environment_id: int
    lifecycle: Lifecycle | None
    release: Any

    @property
    def ref(self) -> perms.ProjectRef:
        return perms.ProjectRef(self.project.name, self.project.group)


async def resolve_target(
    services: Services, loaded: Loaded, project_ref: str, version: str, environment: str
) -> Target:
    project = resolve(loaded, "projects", project_ref)
    env = resolve(loaded, "environments", environment)
    project_id = loaded.id_of("projects", project.name)
    env_id = loaded.id_of("environments", env.name)
    assert project_id is not None and env_id is not None
    release = await find_release(services, project_id, version)
    if release is None:
        raise NotFound(f"{project.name} has no release {version}")
    # A release follows its channel's lifecycle (by default the project's).
    lifecycle = loaded.model.get("lifecycles", ch.lifecycle_of(project, release.channel))
    return Target(project, project_id, env, env_id, lifecycle, release)


async def history(tx_session: Any, release_id: int, env_names: dict[int, str]) -> list[lc.Attempt]:
    rows = await tx_session.execute(
        select(t.deployments.c.environment_id, t.deployments.c.state).where(
            t.deployments.c.release_id == release_id
        )
    )
    return [lc.Attempt(env_names.get(r.environment_id, "?"), outcome(r.state)) for r in rows]


def env_names(loaded: Loaded) -> dict[int, str]:
    out = {}
    for env in loaded.model.environments:
        env_id = loaded.id_of("environments", env.name)
        if env_id is not None:
            out[env_id] = env.name
    return out


async def current_versions(session: Any, environment_id: int) -> dict[int, str | None]:
    """Project id -> the version last deployed successfully to the environment."""
    return await runs.success_versions(session, environment_id)


@dataclass(frozen=True)
class Queued:
    deployment_id: int
    task_id: int
    state: str
    # Waiting for its environment's checks: each one, passed or pending, and why.
    checks: tuple[dict[str, str], ...] = ()
    held: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment": public_id("deployments", self.deployment_id),
            "task": public_id("tasks", self.task_id),
            "state": self.state,
            "held": self.held,
            "checks": list(self.checks),
        }


async def queue_deployment(
    tx: Tx,
    loaded: Loaded,
    target: Target,
    *,
    skip: list[str] | None = None,
    guided_failure: bool | None = None,
    parent_id: int | None = None,
    parent_task_id: int | None = None,
    variables: list[dict[str, Any]] | None = None,
    start_at: datetime | None = None,
    freeze_override: str | None = None,
) -> Queued:
    """Authorise, check the lifecycle and the environment's checks, and queue: the one path
    for every deployment."""
    caller = tx.caller
    project, env = target.project, target.environment
    docs = [
        public_id("projects", target.project_id),
        public_id("environments", target.environment_id),
        public_id("releases", target.release.id),
    ]
    tx.require(
        P.DeploymentCreate,
        project=target.ref,
        environment=env.name,
        documents=docs,
        project_id=target.project_id,
        environment_id=target.environment_id,
    )
    if project.disabled:
        raise PolicyViolation(f'project "{project.name}" is disabled: enable it to deploy')
    attempts = await history(tx.session, target.release.id, env_names(loaded))
    if target.lifecycle is None:
        raise PolicyViolation(f'project "{project.name}" has no lifecycle')
    decision = lc.can_deploy(target.lifecycle, attempts, env.name)
    label = f"{project.name} {target.release.version}"
    if not decision.allowed:
        raise PolicyViolation(f"{label} cannot be deployed: {decision.reason}")
    refused = await release_blocks.deployment_refusal(
        tx.session,
        project.name,
        target.project_id,
        env.name,
        target.environment_id,
        target.release,
        attempts,
    )
    if refused:
        raise PolicyViolation(f"{label} cannot be deployed to {env.name}: {refused}")
    snapshot = read_snapshot(tx.services, target.release.snapshot)
    skip = skip or []
    problems = planning.unskippable(snapshot.process.steps, skip, env.name)
    if problems:
        raise ValidationFailed("; ".join(problems))
    created_by = caller.on_behalf_of or caller.username
    parent_release = None
    if parent_id is not None:
        parent = await runs.deployment(tx.session, parent_id)
        parent_release = await runs.release(tx.session, parent.release_id)
    facts = gates.Facts(
        project=project,
        project_id=target.project_id,
        environment=env,
        environment_id=target.environment_id,
        release=target.release,
        parent_release=parent_release,
        created_by=created_by,
        start_at=start_at,
    )
    gate = await gates.at_queue(tx, loaded, facts, freeze_override)
    checks = gates.as_json(gate.evaluation)
    new = runs.NewRun(
        release_id=target.release.id,
        release_version=target.release.version,
        release_channel=target.release.channel,
        project_id=target.project_id,
        environment_id=target.environment_id,
        description=deploy_description(label, env.name),
        created_by_id=caller.user_id,
        created_by=created_by,
        skip=skip,
        guided_failure=planning.uses_guided_failure(project, env, guided_failure),
        variables=variables or [],
        steps=[(step.name, step.type.value) for step in snapshot.process.steps],
        parent_id=parent_id,
        parent_task_id=parent_task_id,
        held=gate.held,
        checks=checks,
        start_at=start_at,
        freeze_override=gate.override,
    )
    deployment_id, task_id = await runs.queue(tx.session, tx.now, new, sqlite=tx.services.is_sqlite)
    docs += [public_id("deployments", deployment_id), public_id("tasks", task_id)]
    await tx.audit(
        Category.DEPLOYMENT_QUEUED,
        f"{_who(caller)} queued the deployment of {label} to {env.name}",
        documents=docs,
        details={
            "skip": skip,
            "parent": public_id("deployments", parent_id) if parent_id else None,
            "start_at": iso(start_at),
            "checks": checks,
        },
        project_id=target.project_id,
        environment_id=target.environment_id,
    )
    await _governed(tx, facts, gate, docs, label, task_id)
    await tx.wake()
    return Queued(deployment_id, task_id, "queued", tuple(checks), gate.held)


async def _governed(
    tx: Tx, facts: gates.Facts, gate: gates.Gate, docs: list[str], label: str, task_id: int
) -> None:
    """What the environment's checks did to a deployment being queued, in the audit log:
    a freeze overridden, the deployment held, older ones superseded."""
    env = facts.environment.name
    if gate.override:
        await tx.audit(
            Category.FREEZE_OVERRIDDEN,
            f"{facts.created_by} deployed {label} to {env} during a freeze: {gate.override}",
            documents=docs,
            details={"reason": gate.override, "checks": gates.as_json(gate.evaluation)},
            project_id=facts.project_id,
            environment_id=facts.environment_id,
        )
    if gate.held and gate.evaluation is not None:
        await tx.audit(
            Category.DEPLOYMENT_HELD,
            f"The deployment of {label} to {env} waits: {gate.evaluation.waiting_for()}",
            documents=docs,
            details={"checks": gates.as_json(gate.evaluation)},
            project_id=facts.project_id,
            environment_id=facts.environment_id,
        )
    await gates.supersede(tx, facts, task_id, f"{label} to {env}")


def _who(caller: Caller) -> str:
    if caller.on_behalf_of:
        return f"{caller.username} (for {caller.on_behalf_of})"
    return caller.username


async def deploy(
    services: Services,
    caller: Caller,
    project_ref: str,
    version: str,
    environment: str,
    *,
    skip: list[str] | None = None,
    guided_failure: bool | None = None,
    start_at: datetime | None = None,
    freeze_override: str | None = None,
) -> Queued:
    loaded = await load(services)
    target = await resolve_target(services, loaded, project_ref, version, environment)
    async with services.tx(caller) as tx:
        return await queue_deployment(
            tx,
            loaded,
            target,
            skip=skip,
            guided_failure=guided_failure,
            start_at=start_at,
            freeze_override=freeze_override,
        )


async def promote(
    services: Services,
    caller: Caller,
    project_ref: str,
    source: str,
    destination: str,
    *,
    guided_failure: bool | None = None,
    start_at: datetime | None = None,
    freeze_override: str | None = None,
) -> Queued:
    """Deploy the release current (last successful) in ``source`` to ``destination``."""
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    env = resolve(loaded, "environments", source)
    project_id = loaded.id_of("projects", project.name)
    env_id = loaded.id_of("environments", env.name)
    async with services.read() as session:
        row = (
            await session.execute(
                select(t.dashboard.c.success_version).where(
                    t.dashboard.c.project_id == project_id,
                    t.dashboard.c.environment_id == env_id,
                )
            )
        ).first()
    if row is None or row.success_version is None:
        raise NotFound(f"{project.name} has no successful deployment in {env.name} to promote")
    return await deploy(
        services,
        caller,
        project.name,
        row.success_version,
        destination,
        guided_failure=guided_failure,
        start_at=start_at,
        freeze_override=freeze_override,
    )


def deploy_description(label: str, environment: str) -> str:
    """A task's description: "Deploy Web 1.2 to Test"; "Deploy All 1.0.1 to Staging", never
    "Deploy Deploy All …" for a project whose name says it already."""
    verb = "" if label.lower().startswith("deploy ") else "Deploy "
    return f"{verb}{label} to {environment}"


async def plan(
    services: Services,
    caller: Caller,
    project_ref: str,
    version: str,
    environment: str,
    *,
    skip: list[str] | None = None,
) -> dict[str, Any]:
    """What a deployment would do now: each step run or skip, and why."""
    loaded = await load(services)
    target = await resolve_target(services, loaded, project_ref, version, environment)
    decision = perms.authorize(caller.principal, P.ReleaseView, project=target.ref)
    if not decision.allowed:
        from conveyor.domain.errors import PermissionDenied

        raise PermissionDenied(decision.reason, permission="ReleaseView")
    snapshot = read_snapshot(services, target.release.snapshot)
    async with services.read() as session:
        current = await current_versions(session, target.environment_id)
        attempts = await history(session, target.release.id, env_names(loaded))
        holds = await _plan_holds(session, loaded, target, attempts)
    names = {loaded.id_of("projects", p.name): p.name for p in loaded.model.projects}
    situation = planning.Situation(
        environment=target.environment.name,
        skip=frozenset(key(s) for s in skip or []),
        current={key(names[pid]): v for pid, v in current.items() if pid in names},
        children={
            key(c["step"]): planning.ChildChoice(c["project"], c["version"])
            for c in target.release.children
        },
        variables=builtin_preview(target),
        limit=services.settings.max_substitution_bytes,
        rollback=is_rollback(target.release.version, current.get(target.project_id)),
        pinned=holds.pinned,
    )
    # Run conditions are the caller's expressions: evaluated off the event loop, with a timeout.
    steps = await off_loop(
        services.settings.expression_timeout_seconds,
        "the run conditions of the plan",
        planning.plan,
        snapshot.process.steps,
        situation,
    )
    assert target.lifecycle is not None
    allowed = lc.can_deploy(target.lifecycle, attempts, target.environment.name)
    deployable = perms.authorize(
        caller.principal,
        P.DeploymentCreate,
        project=target.ref,
        environment=target.environment.name,
    )
    # What this deployment brings: the release itself, then each child, against what is current.
    entries = [(target.project_id, target.project.name, target.release.version)]
    entries += [(c["project_id"], c["project"], c["version"]) for c in target.release.children]
    changes = await plan_changes(services, caller, loaded, entries, current)
    # The environment's checks, as they stand now for a deployment this caller would queue.
    facts = gates.Facts(
        project=target.project,
        project_id=target.project_id,
        environment=target.environment,
        environment_id=target.environment_id,
        release=target.release,
        created_by=caller.username,
    )
    evaluation = await gates.evaluate(services, loaded, facts, services.clock())
    return {
        "project": target.project.name,
        "release": target.release.version,
        "channel": target.release.channel,
        "environment": target.environment.name,
        "lifecycle": {"allowed": allowed.allowed, "reason": allowed.reason},
        "may_deploy": {"allowed": deployable.allowed, "reason": deployable.reason},
        # A block or a pin that refuses this deployment; the release's own pin there; rollback.
        "refused": holds.refused_here,
        "pinned": _pin_json(holds.pinned.get(key(target.project.name))),
        "rollback": situation.rollback,
        "steps": [
            {
                "name": s.name,
                "type": s.type,
                "action": s.decision.action.value,
                "reason": s.decision.reason,
                "rollback": s.decision.rollback,
                "pinned": s.decision.pinned,
                "refused": holds.refused.get(key(s.name)) if s.decision.runs else None,
                "parallel_with_previous": s.parallel_with_previous,
                "required": s.required,
                "child": (
                    {
                        "project": s.decision.child.project,
                        "version": s.decision.child.version,
                        "current": s.decision.child.current,
                    }
                    if s.decision.child
                    else None
                ),
            }
            for s in steps
        ],
        "changes": changes,
        "checks": gates.as_json(evaluation),
    }


@dataclass(frozen=True)
class PlanHolds:
    """What pins and blocks mean for a plan: why the deployment itself is refused, the pins
    in the environment (by project key), and the child deployments a block will refuse."""

    refused_here: str | None
    pinned: dict[str, Pin]
    refused: dict[str, str]


async def _plan_holds(
    session: Any, loaded: Loaded, target: Target, attempts: list[lc.Attempt]
) -> PlanHolds:
    refused = await release_blocks.deployment_refusal(
        session,
        target.project.name,
        target.project_id,
        target.environment.name,
        target.environment_id,
        target.release,
        attempts,
    )
    return PlanHolds(
        refused_here=refused,
        pinned=await pins.pins_in(session, target.environment_id, loaded),
        refused=await release_blocks.child_refusals(
            session, target.release.children, target.environment_id
        ),
    )


def _pin_json(pin: Pin | None) -> dict[str, str] | None:
    if pin is None:
        return None
    return {"version": pin.version, "reason": pin.reason, "pinned_by": pin.by}


def builtin_preview(target: Target) -> dict[str, str]:
    return {
        "Conveyor.Project.Name": target.project.name,
        "Conveyor.Release.Number": target.release.version,
        "Conveyor.Environment.Name": target.environment.name,
    }


async def create_release(
    services: Services, caller: Caller, project_ref: str, **options: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """Create a release, then send it to its first phase's automatic environments.

    The automatic deployments run as the person who created the release, so their permissions
    decide (a build server may deploy to Development); a refusal is reported, not raised."""
    from conveyor.domain.errors import ConveyorError
    from conveyor.services.releases import create_release as create

    release = await create(services, caller, project_ref, **options)
    loaded = await load(services)
    project = loaded.model.get("projects", release.project)
    lifecycle = (
        loaded.model.get("lifecycles", ch.lifecycle_of(project, release.channel))
        if project
        else None
    )
    started: list[dict[str, Any]] = []
    for env in lc.automatic_on_creation(lifecycle) if lifecycle else []:
        pinned = await pins.automatic_refusal(services, release.project, release.version, env)
        if pinned:  # a pin keeps the release there: automatic deployments leave it alone
            started.append({"environment": env, "skipped": pinned})
            continue
        try:
            queued = await deploy(services, caller, release.project, release.version, env)
            started.append({"environment": env, **queued.as_dict()})
        except ConveyorError as exc:
            started.append({"environment": env, "error": exc.message})
    return release, started
