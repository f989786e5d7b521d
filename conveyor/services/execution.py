"""The state changes a running task makes, each one transaction with its audit event.

The engine does the work (processes, files, waiting); every durable change it makes goes
through here: step states, interruptions, child deployments, suspension, finishing. Claiming,
renewing and recovering tasks is the queue's (`conveyor.services.queue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from conveyor.domain import lifecycle as lc
from conveyor.domain.audit import Category
from conveyor.domain.documents import Environment, Project, Step, User
from conveyor.domain.errors import ConveyorError
from conveyor.domain.masking import Masker
from conveyor.services.access import caller_for_user, find_user
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, Tx, system_caller
from conveyor.services.deployments import (
    TERMINAL,
    Target,
    env_names,
    history,
    project_dashboard,
    queue_deployment,
)
from conveyor.services.releases import Snapshot, read_snapshot
from conveyor.store import tables as t

FINISHED_STEPS = ("success", "failed", "skipped", "canceled")


@dataclass
class StepState:
    idx: int
    name: str
    state: str
    reason: str | None
    attempt: int
    child_task_id: int | None
    interruption_id: int | None
    outputs: dict[str, Any]


@dataclass
class Run:
    """Everything the executor needs to run (or resume) one deployment task."""

    task_id: int
    deployment_id: int
    state: str
    cancel_requested: bool
    project: Project
    project_id: int
    environment: Environment
    environment_id: int
    release: Any
    snapshot: Snapshot
    deployment: Any
    creator: str
    creator_user: User | None
    steps: list[StepState]
    parent_task_id: int | None
    children_current: dict[str, str | None] = field(default_factory=dict)
    # The deployment's sensitive values (the executor sets it): every text written about this
    # run (reasons, errors, instructions, outputs) passes it first, so nothing stored holds one.
    masker: Masker = field(default_factory=lambda: Masker(()))

    @property
    def label(self) -> str:
        return f"{self.project.name} {self.release.version} to {self.environment.name}"

    @property
    def target(self) -> Target:
        return Target(
            self.project,
            self.project_id,
            self.environment,
            self.environment_id,
            None,
            self.release,
        )

    def documents(self) -> list[str]:
        return [
            public_id("projects", self.project_id),
            public_id("environments", self.environment_id),
            public_id("releases", self.release.id),
            public_id("deployments", self.deployment_id),
            public_id("tasks", self.task_id),
        ]


def engine_caller(creator: str) -> Caller:
    """The engine acts as the system, on behalf of the person who started the deployment."""
    return system_caller(on_behalf_of=creator)


# ---------------------------------------------------------------- loading a run


async def load_run(services: Services, task_id: int) -> Run:
    loaded = await load(services)
    async with services.read() as session:
        task = (await session.execute(select(t.tasks).where(t.tasks.c.id == task_id))).one()
        dep = (
            await session.execute(
                select(t.deployments).where(t.deployments.c.id == task.deployment_id)
            )
        ).one()
        release = (
            await session.execute(select(t.releases).where(t.releases.c.id == dep.release_id))
        ).one()
        step_rows = (
            await session.execute(
                select(t.task_steps)
                .where(t.task_steps.c.task_id == task_id)
                .order_by(t.task_steps.c.idx)
            )
        ).all()
        current_rows = (
            await session.execute(
                select(t.dashboard.c.project_id, t.dashboard.c.success_version).where(
                    t.dashboard.c.environment_id == dep.environment_id
                )
            )
        ).all()
    project_name = loaded.name_of("projects", dep.project_id)
    env_name = loaded.name_of("environments", dep.environment_id)
    if project_name is None or env_name is None:
        raise ConveyorError("the project or environment of this deployment no longer exists")
    project = loaded.model.get("projects", project_name)
    env = loaded.model.get("environments", env_name)
    current: dict[str, str | None] = {}
    for row in current_rows:
        name = loaded.name_of("projects", row.project_id)
        if name is not None:
            current[name] = row.success_version
    return Run(
        task_id=task_id,
        deployment_id=dep.id,
        state=task.state,
        cancel_requested=bool(task.cancel_requested),
        project=project,
        project_id=dep.project_id,
        environment=env,
        environment_id=dep.environment_id,
        release=release,
        snapshot=read_snapshot(services, release.snapshot),
        deployment=dep,
        creator=dep.created_by,
        creator_user=loaded.model.get("users", dep.created_by),
        steps=[
            StepState(
                idx=r.idx,
                name=r.name,
                state=r.state,
                reason=r.reason,
                attempt=r.attempt,
                child_task_id=r.child_task_id,
                interruption_id=r.interruption_id,
                outputs=dict(r.outputs or {}),
            )
            for r in step_rows
        ],
        parent_task_id=task.parent_task_id,
        children_current=current,
    )


# ---------------------------------------------------------------- steps


async def set_step(
    services: Services,
    run: Run,
    idx: int,
    state: str,
    *,
    reason: str | None = None,
    outputs: dict[str, Any] | None = None,
    started: bool = False,
    child_task_id: int | None = None,
    interruption_id: int | None = None,
) -> None:
    now = services.clock()
    values: dict[str, Any] = {"state": state}
    if reason is not None:
        reason = run.masker(reason)
        values["reason"] = reason
    if outputs is not None:
        outputs = seal_outputs(services, run.masker, outputs)
        values["outputs"] = outputs
    if started:
        values["started_at"] = now
        values["attempt"] = t.task_steps.c.attempt + 1
        values["completed_at"] = None
    if state in FINISHED_STEPS:
        values["completed_at"] = now
    if child_task_id is not None:
        values["child_task_id"] = child_task_id
    if interruption_id is not None:
        values["interruption_id"] = interruption_id
    async with services.write() as session:
        await session.execute(
            update(t.task_steps)
            .where(t.task_steps.c.task_id == run.task_id, t.task_steps.c.idx == idx)
            .values(values)
        )
    step = run.steps[idx]
    step.state = state
    if reason is not None:
        step.reason = reason
    if outputs is not None:
        step.outputs = outputs
    if child_task_id is not None:
        step.child_task_id = child_task_id
    if interruption_id is not None:
        step.interruption_id = interruption_id


def seal_outputs(services: Services, masker: Masker, outputs: dict[str, Any]) -> dict[str, Any]:
    """Output variables that hold a sensitive value are stored encrypted, like sensitive
    variables passed to a child deployment; later steps still get the real value."""
    return {
        name: (
            {"sensitive": True, "cipher": services.box.encrypt(value)}
            if isinstance(value, str) and masker.reveals(value)
            else value
        )
        for name, value in outputs.items()
    }


def output_value(services: Services, value: Any) -> str:
    """An output variable as a later step sees it (decrypted when it was sealed)."""
    if isinstance(value, dict) and value.get("sensitive"):
        return services.box.decrypt(value["cipher"])
    return str(value)


async def step_skipped(services: Services, run: Run, step: Step, idx: int, reason: str) -> None:
    reason = run.masker(reason)
    await set_step(services, run, idx, "skipped", reason=reason)
    async with services.tx(engine_caller(run.creator)) as tx:
        await tx.audit(
            Category.STEP_SKIPPED,
            f'Step "{step.name}" of {run.label} was skipped: {reason}',
            documents=run.documents(),
            details={"step": step.name, "reason": reason},
            project_id=run.project_id,
            environment_id=run.environment_id,
        )


async def write_logs(services: Services, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    async with services.write() as session:
        await session.execute(t.task_logs.insert(), rows)


# ---------------------------------------------------------------- the task's own state


async def _set_task(tx: Tx, run: Run, state: str, **values: Any) -> None:
    await tx.session.execute(
        update(t.tasks).where(t.tasks.c.id == run.task_id).values(state=state, **values)
    )
    dep_values: dict[str, Any] = {"state": state}
    if state == "executing" and run.deployment.started_at is None:
        dep_values["started_at"] = tx.now
    if state in TERMINAL:
        dep_values["completed_at"] = tx.now
    await tx.session.execute(
        update(t.deployments).where(t.deployments.c.id == run.deployment_id).values(dep_values)
    )
    await project_dashboard(
        tx,
        run.target,
        run.deployment_id,
        run.task_id,
        state,
        tx.now if state in TERMINAL else None,
    )
    run.state = state
    if run.parent_task_id is not None:
        await _roll_up(tx, run.parent_task_id, state)


async def _roll_up(tx: Tx, parent_task_id: int, child_state: str) -> None:
    """A child's state shows on its parent: waiting, and the end that wakes the parent."""
    parent = (
        await tx.session.execute(select(t.tasks).where(t.tasks.c.id == parent_task_id))
    ).first()
    if parent is None or parent.state in TERMINAL or parent.waiting_on != "child":
        return
    if child_state in TERMINAL:
        values: dict[str, Any] = {"wake": True, "state": "executing"}
        await tx.wake()
    else:
        values = {"state": "waiting" if child_state == "waiting" else "executing"}
    if values["state"] != parent.state or values.get("wake"):
        await tx.session.execute(update(t.tasks).where(t.tasks.c.id == parent.id).values(values))
        await tx.session.execute(
            update(t.deployments)
            .where(t.deployments.c.id == parent.deployment_id)
            .values(state=values["state"])
        )
        await tx.session.execute(
            update(t.dashboard)
            .where(t.dashboard.c.deployment_id == parent.deployment_id)
            .values(state=values["state"])
        )
        if parent.parent_task_id is not None:
            await _roll_up(tx, parent.parent_task_id, values["state"])


async def started(services: Services, run: Run) -> None:
    """First claim of a deployment: audit that it started."""
    async with services.tx(engine_caller(run.creator)) as tx:
        await _set_task(tx, run, "executing")
        await tx.audit(
            Category.DEPLOYMENT_STARTED,
            f"The deployment of {run.label} started",
            documents=run.documents(),
            project_id=run.project_id,
            environment_id=run.environment_id,
        )


async def suspend(services: Services, run: Run, waiting_on: str) -> None:
    """Release the slot: the task waits for a person or a child, holding no lease."""
    state = "waiting" if waiting_on in ("interruption", "block") else "executing"
    async with services.tx(engine_caller(run.creator)) as tx:
        await _set_task(tx, run, state, waiting_on=waiting_on, node=None, lease_expires_at=None)
        canceled = (
            await tx.session.execute(
                select(t.tasks.c.cancel_requested).where(t.tasks.c.id == run.task_id)
            )
        ).scalar_one()
        if canceled:
            # A cancel that arrived while the batch ran: come back at once to honour it.
            await tx.session.execute(
                update(t.tasks).where(t.tasks.c.id == run.task_id).values(wake=True)
            )
            await tx.wake()
            return
        if waiting_on == "child":
            # The child may have finished while this task was still running its batch.
            child_ids = [
                s.child_task_id for s in run.steps if s.state == "waiting" and s.child_task_id
            ]
            if child_ids:
                done = (
                    await tx.session.execute(
                        select(t.tasks.c.id).where(
                            t.tasks.c.id.in_(child_ids), t.tasks.c.state.in_(TERMINAL)
                        )
                    )
                ).first()
                if done is not None:
                    await tx.session.execute(
                        update(t.tasks).where(t.tasks.c.id == run.task_id).values(wake=True)
                    )
                    await tx.wake()


async def finish(services: Services, run: Run, state: str, error: str | None) -> None:
    category = {
        "success": Category.DEPLOYMENT_SUCCEEDED,
        "canceled": Category.DEPLOYMENT_CANCELED,
    }.get(state, Category.DEPLOYMENT_FAILED)
    verb = {"success": "succeeded", "canceled": "was canceled", "timed_out": "timed out"}.get(
        state, "failed"
    )
    error = run.masker(error) if error is not None else None
    async with services.tx(engine_caller(run.creator)) as tx:
        await _set_task(
            tx,
            run,
            state,
            completed_at=tx.now,
            error=error,
            node=None,
            lease_expires_at=None,
            waiting_on=None,
            wake=False,
        )
        await tx.audit(
            category,
            f"The deployment of {run.label} {verb}" + (f": {error}" if error else ""),
            documents=run.documents(),
            details={"state": state, "error": error},
            project_id=run.project_id,
            environment_id=run.environment_id,
        )


async def next_automatic(services: Services, run: Run) -> list[str]:
    """Environments of the next phase that a success makes this release go to by itself."""
    loaded = await load(services)
    lifecycle = loaded.model.get("lifecycles", run.project.lifecycle)
    if lifecycle is None:
        return []
    async with services.read() as session:
        attempts = await history(session, run.release.id, env_names(loaded))
    return lc.automatic_after_success(lifecycle, attempts, run.environment.name)


async def creator_caller(services: Services, username: str) -> Caller:
    """The person who started a deployment, with their permissions as they are now."""
    async with services.read() as session:
        user = await find_user(session, username)
        if user is None:
            raise ConveyorError(f'user "{username}", who started this deployment, no longer exists')
        caller = await caller_for_user(session, user)
    return Caller(
        user_id=caller.user_id,
        username="system",
        principal=caller.principal,
        on_behalf_of=user.username,
    )


async def start_child(
    services: Services,
    run: Run,
    choice: dict[str, Any],
    variables: list[dict[str, Any]],
) -> int:
    """Queue a child deployment as the parent's creator (their permissions, checked again)."""
    from conveyor.services.deployments import resolve_target

    caller = await creator_caller(services, run.creator)
    loaded = await load(services)
    target = await resolve_target(
        services, loaded, choice["project"], choice["version"], run.environment.name
    )
    async with services.tx(caller) as tx:
        queued = await queue_deployment(
            tx,
            loaded,
            target,
            guided_failure=bool(run.deployment.guided_failure),
            parent_id=run.deployment_id,
            parent_task_id=run.task_id,
            variables=variables,
        )
    return queued.task_id


async def task_state(services: Services, task_id: int) -> Any:
    async with services.read() as session:
        return (await session.execute(select(t.tasks).where(t.tasks.c.id == task_id))).one()


def now_plus(services: Services, seconds: float) -> datetime:
    return services.clock() + timedelta(seconds=seconds)


async def raise_interruption(
    services: Services,
    run: Run,
    idx: int,
    *,
    kind: str,
    title: str,
    instructions: str,
    responsible_teams: Sequence[str],
    settings: dict[str, Any],
) -> int:
    """Ask a person; the task then waits for the answer, holding no slot."""
    caller = engine_caller(run.creator)
    # Instructions are substituted, so they may quote a sensitive value: masked before they are
    # stored, audited or mailed, so no reader (API, web, evidence, export) can get it back.
    title, instructions = run.masker(title), run.masker(instructions)
    settings = {
        **settings,
        "deployed_by": run.creator,
        "release_created_by": run.release.created_by,
    }
    async with services.tx(caller) as tx:
        result = await tx.session.execute(
            t.interruptions.insert()
            .values(
                task_id=run.task_id,
                deployment_id=run.deployment_id,
                project_id=run.project_id,
                environment_id=run.environment_id,
                step_idx=idx,
                step_name=run.steps[idx].name,
                kind=kind,
                title=title[:400],  # the column's width
                instructions=instructions,
                responsible_teams=list(responsible_teams),
                settings=settings,
                state="pending",
                created_at=tx.now,
                answers=[],
            )
            .returning(t.interruptions.c.id)
        )
        interruption_id = int(result.scalar_one())
        await tx.audit(
            Category.INTERRUPTION_RAISED,
            f"{title} is waiting"
            + (f" for {', '.join(responsible_teams)}" if responsible_teams else ""),
            documents=[*run.documents(), public_id("interruptions", interruption_id)],
            details={
                "kind": kind,
                "step": run.steps[idx].name,
                "responsible_teams": list(responsible_teams),
                "instructions": instructions,
            },
            project_id=run.project_id,
            environment_id=run.environment_id,
        )
    await set_step(services, run, idx, "waiting", interruption_id=interruption_id)
    return interruption_id


async def interruption(services: Services, interruption_id: int) -> Any:
    async with services.read() as session:
        return (
            await session.execute(
                select(t.interruptions).where(t.interruptions.c.id == interruption_id)
            )
        ).one()


async def reset_step(services: Services, run: Run, idx: int) -> None:
    """Guided failure's retry: the step runs again from the start."""
    async with services.write() as session:
        await session.execute(
            update(t.task_steps)
            .where(t.task_steps.c.task_id == run.task_id, t.task_steps.c.idx == idx)
            .values(state="pending", interruption_id=None, child_task_id=None, reason=None)
        )
    step = run.steps[idx]
    step.state, step.interruption_id, step.child_task_id, step.reason = "pending", None, None, None
