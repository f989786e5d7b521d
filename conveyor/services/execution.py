"""The state changes a running task makes, each one transaction with its audit event.

The engine does the work (processes, files, waiting); every durable change it makes goes
through here, as a move of `conveyor.domain.runtime` written by `conveyor.store.runs`: step
states, interruptions, child deployments, suspension, finishing. One engine event is one
transaction: a child is queued together with the step that waits for it, an interruption is
raised together with the step's waiting state, a cancel ends the steps, the children and the
task at once. Claiming, renewing and recovering tasks is the queue's (`conveyor.services.queue`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from conveyor.domain import channels as ch
from conveyor.domain import lifecycle as lc
from conveyor.domain import runtime as rt
from conveyor.domain.audit import Category
from conveyor.domain.documents import Environment, Project, User
from conveyor.domain.errors import ConveyorError, InvalidTransition
from conveyor.domain.masking import Masker
from conveyor.domain.runtime import (
    Lease,
    Outcome,
    OutcomeKind,
    StepRun,
    TaskRun,
    TaskState,
    WaitingOn,
)
from conveyor.services import gates
from conveyor.services.access import caller_for_user, find_user
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, Tx, system_caller
from conveyor.services.deployments import (
    Target,
    env_names,
    history,
    queue_deployment,
    resolve_target,
)
from conveyor.services.releases import Snapshot, read_snapshot
from conveyor.services.tasks import cancel_children_in
from conveyor.store import runs
from conveyor.store import tables as t
from conveyor.store.logs import insert_lines
from conveyor.store.runs import DeploymentRecord, InterruptionRecord, ReleaseRecord


@dataclass
class Run:
    """Everything the executor needs to run (or resume) one deployment task: the engine's
    working copy, updated as each move is written."""

    task_id: int
    # The claim this node runs it under: every write below is refused once it is stale.
    lease: Lease
    deployment_id: int
    state: TaskState
    waiting_on: WaitingOn | None
    cancel_requested: bool
    project: Project
    project_id: int
    environment: Environment
    environment_id: int
    release: ReleaseRecord
    snapshot: Snapshot
    deployment: DeploymentRecord
    creator: str
    creator_user: User | None
    steps: list[StepRun]
    parent_task_id: int | None
    children_current: dict[str, str | None] = field(default_factory=dict)
    # Conveyor.Approval.*: the answers of the approvals given ahead of time (gates.py).
    approval_variables: dict[str, str] = field(default_factory=dict)
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

    @property
    def key(self) -> runs.RunKey:
        return runs.RunKey(
            self.task_id,
            self.deployment_id,
            self.project_id,
            self.environment_id,
            self.release.id,
            self.release.version,
            self.release.channel,
            self.parent_task_id,
        )

    @property
    def task(self) -> TaskRun:
        return TaskRun(self.state, tuple(self.steps), self.waiting_on, self.cancel_requested)

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


@asynccontextmanager
async def _event(
    services: Services, run: Run, *, rolls_up: bool = False, caller: Caller | None = None
) -> AsyncIterator[Tx]:
    """One engine event: one transaction, refused (`LeaseLost`) if this node no longer holds
    the task. ``rolls_up``: it changes the task's own state, which shows on its parent."""
    async with services.tx(caller or engine_caller(run.creator)) as tx:
        parent = run.parent_task_id if rolls_up else None
        await runs.fence(tx.session, run.lease, parent_task_id=parent)
        yield tx


# ---------------------------------------------------------------- loading a run


async def load_run(services: Services, lease: Lease) -> Run:
    task_id = lease.task_id
    loaded = await load(services)
    async with services.read() as session:
        task = await runs.task(session, task_id)
        assert task.deployment_id is not None, "a deployment task has a deployment"
        dep = await runs.deployment(session, task.deployment_id)
        release = await runs.release(session, dep.release_id)
        steps = await runs.steps(session, task_id)
        current_rows = await runs.success_versions(session, dep.environment_id)
        parent_release = None
        if dep.parent_id is not None:
            parent = await runs.deployment(session, dep.parent_id)
            parent_release = await runs.release(session, parent.release_id)
        approved = await gates.approval_variables(
            session, release, parent_release, dep.environment_id, services.clock()
        )
    project_name = loaded.name_of("projects", dep.project_id)
    env_name = loaded.name_of("environments", dep.environment_id)
    if project_name is None or env_name is None:
        raise ConveyorError("the project or environment of this deployment no longer exists")
    project = loaded.model.get("projects", project_name)
    env = loaded.model.get("environments", env_name)
    assert project is not None and env is not None
    current: dict[str, str | None] = {}
    for project_id, version in current_rows.items():
        name = loaded.name_of("projects", project_id)
        if name is not None:
            current[name] = version
    return Run(
        task_id=task_id,
        lease=lease,
        deployment_id=dep.id,
        state=task.state,
        waiting_on=task.waiting_on,
        cancel_requested=task.cancel_requested,
        project=project,
        project_id=dep.project_id,
        environment=env,
        environment_id=dep.environment_id,
        release=release,
        snapshot=read_snapshot(services, dict(release.snapshot)),
        deployment=dep,
        creator=dep.created_by,
        creator_user=loaded.model.get("users", dep.created_by),
        steps=list(steps),
        parent_task_id=task.parent_task_id,
        children_current=current,
        approval_variables=approved,
    )


# ---------------------------------------------------------------- steps


async def _write_step(tx: Tx, run: Run, step: StepRun, *, started: bool = False) -> None:
    await runs.write_step(tx.session, tx.now, run.task_id, step, started=started)


async def begin_step(services: Services, run: Run, idx: int) -> None:
    step = rt.begin_step(run.steps[idx])
    async with _event(services, run) as tx:
        await _write_step(tx, run, step, started=True)
    run.steps[idx] = step


def _sealed(services: Services, run: Run, outcome: Outcome) -> Outcome:
    """What is stored of an outcome: its reason masked, its secret outputs encrypted."""
    return Outcome(
        outcome.kind,
        run.masker(outcome.reason),
        seal_outputs(services, run.masker, outcome.outputs),
    )


async def end_step(services: Services, run: Run, idx: int, outcome: Outcome) -> None:
    """A step ends with its outcome; a skip is audited in the same transaction."""
    outcome = _sealed(services, run, outcome)
    step = rt.finish_step(run.steps[idx], outcome)
    async with _event(services, run) as tx:
        await _write_step(tx, run, step)
        if outcome.kind is OutcomeKind.SKIPPED:
            await tx.audit(
                Category.STEP_SKIPPED,
                f'Step "{step.name}" of {run.label} was skipped: {outcome.reason}',
                documents=run.documents(),
                details={"step": step.name, "reason": outcome.reason},
                project_id=run.project_id,
                environment_id=run.environment_id,
            )
    run.steps[idx] = step


async def retry_step(services: Services, run: Run, idx: int) -> None:
    """Guided failure's retry: the step runs again from the start."""
    step = rt.retry_step(run.steps[idx])
    async with _event(services, run) as tx:
        await _write_step(tx, run, step)
    run.steps[idx] = step


def seal_outputs(services: Services, masker: Masker, outputs: Mapping[str, Any]) -> dict[str, Any]:
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
        return str(services.box.decrypt(value["cipher"]))
    return str(value)


async def write_logs(services: Services, rows: list[dict[str, Any]]) -> int:
    """One round of a node's log writer (`engine/logs.py`): all its lines in one statement,
    less those of runs whose lease another node has taken over; how many were dropped."""
    if not rows:
        return 0
    async with services.write() as session:
        fenced = [row["task_id"] for row in rows if row.get("epoch") is not None]
        current = await runs.current_epochs(session, fenced) if fenced else {}
        kept = [
            row
            for row in rows
            if row.get("epoch") is None or current.get(row["task_id"]) == row["epoch"]
        ]
        await insert_lines(session, kept)
    return len(rows) - len(kept)


# ---------------------------------------------------------------- the task's own state


async def _write_task(
    tx: Tx, run: Run, task: TaskRun, *, first_start: bool = False, release_slot: bool = False
) -> None:
    woke = await runs.write_task(
        tx.session,
        tx.now,
        run.key,
        task,
        first_start=first_start,
        release_slot=release_slot,
        sqlite=tx.services.is_sqlite,
    )
    if woke:
        await tx.wake()
    run.state, run.waiting_on = task.state, task.waiting_on


async def recheck(services: Services, run: Run) -> str | None:
    """The environment's checks once more, just before the first step (an approval revoked,
    a window closed since the deployment was let go): None when they pass; otherwise why it
    waits again, back in the queue and held (canceled instead if its window closed)."""
    loaded = await load(services)
    async with services.read() as session:
        row = (
            await session.execute(
                select(t.deployments).where(t.deployments.c.id == run.deployment_id)
            )
        ).one()
        facts = await gates.facts_of(services, loaded, session, row)
    if facts is None:
        return None
    evaluation = await gates.evaluate(services, loaded, facts, services.clock())
    if evaluation is None or evaluation.passed:
        return None
    checks = gates.as_json(evaluation)
    async with _event(services, run, rolls_up=True, caller=system_caller(run.creator)) as tx:
        await runs.hold_again(tx.session, run.lease, run.deployment_id)
        await runs.set_checks(tx.session, run.deployment_id, checks)
        why = evaluation.expired or evaluation.waiting_for()
        if evaluation.expired:
            woke = await runs.withdraw(
                tx.session, tx.now, run.task_id, evaluation.expired, sqlite=services.is_sqlite
            )
            if woke:
                await tx.wake()
        await tx.audit(
            Category.DEPLOYMENT_EXPIRED if evaluation.expired else Category.DEPLOYMENT_HELD,
            f"The deployment of {run.label} did not start: {why}",
            documents=run.documents(),
            details={"checks": checks},
            project_id=run.project_id,
            environment_id=run.environment_id,
        )
    return why


async def started(services: Services, run: Run) -> None:
    """First claim of a deployment: audit that it started."""
    task = rt.start(run.task)
    async with _event(services, run, rolls_up=True) as tx:
        await _write_task(tx, run, task, first_start=run.deployment.started_at is None)
        await tx.audit(
            Category.DEPLOYMENT_STARTED,
            f"The deployment of {run.label} started",
            documents=run.documents(),
            project_id=run.project_id,
            environment_id=run.environment_id,
        )


async def resumed(services: Services, run: Run) -> None:
    """A suspended task runs again: it shows executing and holds its project and environment."""
    if run.state is TaskState.EXECUTING and run.waiting_on is None:
        return
    task = rt.resume(run.task)
    async with _event(services, run, rolls_up=True) as tx:
        await _write_task(tx, run, task)


async def suspend(services: Services, run: Run, on: WaitingOn) -> None:
    """Release the slot: the task waits for a person or a child, holding no lease."""
    task = rt.suspend(run.task, on)
    async with _event(services, run, rolls_up=True) as tx:
        await _write_task(tx, run, task, release_slot=True)
        now = await runs.task(tx.session, run.task_id)
        # A cancel that arrived while the batch ran: come back at once to honour it. A child
        # may also have finished while this task was still running its batch.
        children = [s.child_task_id for s in run.steps if s.child_task_id and not s.state.ended]
        if now.cancel_requested or (
            on is WaitingOn.CHILD and await runs.any_ended(tx.session, children)
        ):
            await runs.wake(tx.session, run.task_id)
            await tx.wake()


async def hand_over(services: Services, run: Run) -> None:
    """This node is stopping: the task, between two steps, is left for any node to carry on."""
    task = rt.hand_over(run.task)
    async with _event(services, run, rolls_up=True) as tx:
        await _write_task(tx, run, task, release_slot=True)
        await runs.wake(tx.session, run.task_id)
        await tx.wake()


_ENDED_AUDIT = {
    TaskState.SUCCESS: (Category.DEPLOYMENT_SUCCEEDED, "succeeded"),
    TaskState.CANCELED: (Category.DEPLOYMENT_CANCELED, "was canceled"),
    TaskState.TIMED_OUT: (Category.DEPLOYMENT_FAILED, "timed out"),
    TaskState.FAILED: (Category.DEPLOYMENT_FAILED, "failed"),
}


async def _ended(tx: Tx, run: Run, task: TaskRun) -> None:
    if not task.state.ended:
        raise InvalidTransition(f"the task is {task.state.value}: that is no end")
    error = run.masker(task.error) if task.error is not None else None
    task = TaskRun(task.state, task.steps, None, task.cancel_requested, error)
    await _write_task(tx, run, task)
    category, verb = _ENDED_AUDIT[task.state]
    await tx.audit(
        category,
        f"The deployment of {run.label} {verb}" + (f": {error}" if error else ""),
        documents=run.documents(),
        details={"state": task.state.value, "error": error},
        project_id=run.project_id,
        environment_id=run.environment_id,
    )


async def finish(services: Services, run: Run, task: TaskRun) -> None:
    """The task ended as ``task`` says (decided by `runtime.finish` or `fail_internally`)."""
    async with _event(services, run, rolls_up=True) as tx:
        await _ended(tx, run, task)


async def cancel(services: Services, run: Run) -> None:
    """Canceled: the unfinished steps, the children and the task end in one transaction."""
    task = rt.cancel(run.task)
    async with _event(services, run, rolls_up=True) as tx:
        for before, after in zip(run.steps, task.steps, strict=True):
            if after != before:
                await _write_step(tx, run, after)
        await cancel_children_in(tx, run.task_id)
        await _ended(tx, run, task)
    run.steps = list(task.steps)


async def next_automatic(services: Services, run: Run) -> list[str]:
    """Environments of the next phase that a success makes this release go to by itself."""
    loaded = await load(services)
    # The lifecycle of the release's channel (its snapshot names the channel).
    channel = str(run.release.snapshot.get("channel") or ch.DEFAULT_CHANNEL)
    lifecycle = loaded.model.get("lifecycles", ch.lifecycle_of(run.project, channel))
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
        caller = await caller_for_user(session, user, services=services)
    return Caller(
        user_id=caller.user_id,
        username="system",
        principal=caller.principal,
        on_behalf_of=user.username,
    )


# ---------------------------------------------------------------- waiting


async def start_child(
    services: Services,
    run: Run,
    idx: int,
    choice: Mapping[str, Any],
    variables: list[dict[str, Any]],
) -> int:
    """Queue a child deployment as the parent's creator (their permissions, checked again),
    and in the same transaction make the parent's step wait for it: no child without a
    parent step that knows it, whenever the server stops."""
    caller = await creator_caller(services, run.creator)
    loaded = await load(services)
    target = await resolve_target(
        services, loaded, choice["project"], choice["version"], run.environment.name
    )
    async with _event(services, run, caller=caller) as tx:
        queued = await queue_deployment(
            tx,
            loaded,
            target,
            guided_failure=run.deployment.guided_failure,
            parent_id=run.deployment_id,
            parent_task_id=run.task_id,
            variables=variables,
        )
        step = rt.await_child(run.steps[idx], queued.task_id)
        await _write_step(tx, run, step)
    run.steps[idx] = step
    return queued.task_id


async def task_state(services: Services, task_id: int) -> runs.TaskRecord:
    async with services.read() as session:
        return await runs.task(session, task_id)


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
    failure: Outcome | None = None,
) -> int:
    """Ask a person, and in the same transaction make the step wait for the answer (the task
    then waits holding no slot). ``failure``: the outcome a guided failure asks about."""
    # Instructions are substituted, so they may quote a sensitive value: masked before they are
    # stored, audited or mailed, so no reader (API, web, evidence, export) can get it back.
    title, instructions = run.masker(title), run.masker(instructions)
    settings = {
        **settings,
        "deployed_by": run.creator,
        "release_created_by": run.release.created_by,
    }
    reason = None
    if failure is not None:
        reason = run.masker(failure.reason)
        settings["outcome"] = failure.kind.value  # what an abort ends the step as
    async with _event(services, run) as tx:
        interruption_id = await runs.raise_interruption(
            tx.session,
            tx.now,
            runs.NewInterruption(
                task_id=run.task_id,
                deployment_id=run.deployment_id,
                project_id=run.project_id,
                environment_id=run.environment_id,
                step_idx=idx,
                step_name=run.steps[idx].name,
                kind=kind,
                title=title,
                instructions=instructions,
                responsible_teams=responsible_teams,
                settings=settings,
            ),
        )
        step = rt.await_person(run.steps[idx], interruption_id, reason)
        await _write_step(tx, run, step)
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
    run.steps[idx] = step
    return interruption_id


async def interruption(services: Services, interruption_id: int) -> InterruptionRecord:
    async with services.read() as session:
        return await runs.interruption(session, interruption_id)
