"""The run of a deployment task: its states, and the moves between them.

A task and its steps move only through the functions here; each returns the new value or
refuses an impossible move with `InvalidTransition` (a step that already ended is never ended
again, a task that ended never starts, waits or ends again). The store writes what they decide
(`conveyor.store.runs`); the engine decides which move to make. Also here: the dashboard's
projection rule (which deployment a project x environment cell shows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from conveyor.domain.errors import InvalidTransition


class TaskState(StrEnum):
    """A server task's state (the names are fixed by the CLI and the API)."""

    QUEUED = "queued"
    EXECUTING = "executing"
    WAITING = "waiting"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"

    @property
    def ended(self) -> bool:
        return self in TASK_ENDED


TASK_ENDED = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELED, TaskState.TIMED_OUT}
)


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"

    @property
    def ended(self) -> bool:
        return self in STEP_ENDED

    @property
    def failed(self) -> bool:
        """A failure later steps' run conditions see (a timeout is one)."""
        return self in (StepState.FAILED, StepState.TIMED_OUT)


STEP_ENDED = frozenset(
    {
        StepState.SUCCESS,
        StepState.FAILED,
        StepState.SKIPPED,
        StepState.CANCELED,
        StepState.TIMED_OUT,
    }
)


class WaitingOn(StrEnum):
    """What a suspended task waits for; a person's answer to a blocking step holds its slot."""

    INTERRUPTION = "interruption"
    BLOCK = "block"
    CHILD = "child"

    @property
    def task_state(self) -> TaskState:
        # A parent waiting for its child shows the child's progress (rolled up), not "waiting".
        return TaskState.EXECUTING if self is WaitingOn.CHILD else TaskState.WAITING

    @property
    def holds_pair(self) -> bool:
        """Whether a task waiting for this still holds its project and environment (no other
        deployment of them starts): a child it waits for, or a step that blocks deployments,
        does; an ordinary question to a person does not."""
        return self is not WaitingOn.INTERRUPTION


def most_urgent(waits: Sequence[WaitingOn]) -> WaitingOn:
    """Several steps of one batch wait: a blocking question first, then a person, then a child."""
    for candidate in (WaitingOn.BLOCK, WaitingOn.INTERRUPTION, WaitingOn.CHILD):
        if candidate in waits:
            return candidate
    raise InvalidTransition("nothing is waiting")


# ---------------------------------------------------------------- outcomes


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"


_STEP_STATE = {
    OutcomeKind.SUCCEEDED: StepState.SUCCESS,
    OutcomeKind.FAILED: StepState.FAILED,
    OutcomeKind.SKIPPED: StepState.SKIPPED,
    OutcomeKind.CANCELED: StepState.CANCELED,
    OutcomeKind.TIMED_OUT: StepState.TIMED_OUT,
}


@dataclass(frozen=True)
class Outcome:
    """How a step ended: a kind, why, and the output variables it set."""

    kind: OutcomeKind
    reason: str = ""
    outputs: Mapping[str, Any] = field(default_factory=dict)
    # A step on several targets: the ones that failed or never started after a failure (a
    # guided failure asks about these, and its retry runs only these).
    targets_failed: tuple[str, ...] = ()

    @classmethod
    def succeeded(cls, reason: str = "", outputs: Mapping[str, Any] | None = None) -> Outcome:
        return cls(OutcomeKind.SUCCEEDED, reason, outputs or {})

    @classmethod
    def failed(cls, reason: str, outputs: Mapping[str, Any] | None = None) -> Outcome:
        return cls(OutcomeKind.FAILED, reason, outputs or {})

    @classmethod
    def skipped(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.SKIPPED, reason)

    @classmethod
    def canceled(cls, reason: str = "canceled") -> Outcome:
        return cls(OutcomeKind.CANCELED, reason)

    @classmethod
    def timed_out(cls, reason: str, outputs: Mapping[str, Any] | None = None) -> Outcome:
        return cls(OutcomeKind.TIMED_OUT, reason, outputs or {})

    @property
    def step_state(self) -> StepState:
        return _STEP_STATE[self.kind]

    @property
    def is_failure(self) -> bool:
        return self.kind in (OutcomeKind.FAILED, OutcomeKind.TIMED_OUT)


# ---------------------------------------------------------------- steps


@dataclass(frozen=True)
class StepRun:
    idx: int
    name: str
    state: StepState = StepState.PENDING
    reason: str | None = None
    attempt: int = 0
    child_task_id: int | None = None
    interruption_id: int | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)


def _refuse(step: StepRun, move: str) -> InvalidTransition:
    return InvalidTransition(f'step "{step.name}" is {step.state.value}: it cannot {move}')


def begin_step(step: StepRun) -> StepRun:
    """pending -> running, as a new attempt."""
    if step.state is not StepState.PENDING:
        raise _refuse(step, "start")
    return replace(step, state=StepState.RUNNING, reason=None, attempt=step.attempt + 1)


def finish_step(step: StepRun, outcome: Outcome) -> StepRun:
    """A step ends once: skipped by its condition or by what it finds at run time (never while
    it waits), any other end once it has started."""
    if step.state.ended:
        raise _refuse(step, f"end again ({outcome.kind.value})")
    if outcome.kind is OutcomeKind.SKIPPED and step.state is StepState.WAITING:
        raise _refuse(step, "be skipped while it waits")
    if step.state is StepState.PENDING and outcome.kind not in (
        OutcomeKind.SKIPPED,
        OutcomeKind.CANCELED,
        OutcomeKind.FAILED,  # its run condition could not be evaluated
    ):
        raise _refuse(step, f"end {outcome.kind.value} before it started")
    return replace(
        step, state=outcome.step_state, reason=outcome.reason, outputs=dict(outcome.outputs)
    )


def await_person(step: StepRun, interruption_id: int, reason: str | None = None) -> StepRun:
    """running (or waiting for a child that failed: guided failure asks what to do) -> waiting
    for the answer to an interruption (raised in the same move)."""
    for_child = step.state is StepState.WAITING and step.child_task_id is not None
    if step.state is not StepState.RUNNING and not for_child:
        raise _refuse(step, "wait for a person")
    if step.interruption_id is not None:
        raise _refuse(step, "wait for a second person")
    return replace(
        step,
        state=StepState.WAITING,
        interruption_id=interruption_id,
        reason=reason if reason is not None else step.reason,
    )


def await_child(step: StepRun, child_task_id: int) -> StepRun:
    """running -> waiting for a child deployment (queued in the same move)."""
    if step.state is not StepState.RUNNING:
        raise _refuse(step, "wait for a child deployment")
    return replace(step, state=StepState.WAITING, child_task_id=child_task_id)


def retry_step(step: StepRun) -> StepRun:
    """Guided failure's retry: a step waiting on its failure goes back to pending."""
    if step.state is not StepState.WAITING or step.interruption_id is None:
        raise _refuse(step, "be retried")
    return replace(
        step, state=StepState.PENDING, reason=None, interruption_id=None, child_task_id=None
    )


def cancel_steps(steps: Sequence[StepRun]) -> tuple[StepRun, ...]:
    """Every step that has not ended ends canceled."""
    return tuple(s if s.state.ended else finish_step(s, Outcome.canceled()) for s in steps)


# ---------------------------------------------------------------- the task


@dataclass(frozen=True)
class TaskRun:
    """A deployment task as the rules see it."""

    state: TaskState
    steps: tuple[StepRun, ...] = ()
    waiting_on: WaitingOn | None = None
    cancel_requested: bool = False
    error: str | None = None


def _refuse_task(task: TaskRun, move: str) -> InvalidTransition:
    return InvalidTransition(f"the task is {task.state.value}: it cannot {move}")


def start(task: TaskRun) -> TaskRun:
    """First run of a task a node claimed (the claim may already say executing)."""
    if task.state not in (TaskState.QUEUED, TaskState.EXECUTING):
        raise _refuse_task(task, "start")
    return replace(task, state=TaskState.EXECUTING, waiting_on=None)


def hold(task: TaskRun) -> TaskRun:
    """A claimed task whose environment's checks no longer pass just before it starts (an
    approval revoked, a window closed): it goes back to the queue, held, having run nothing."""
    if task.state not in (TaskState.QUEUED, TaskState.EXECUTING) or any(
        s.state is not StepState.PENDING for s in task.steps
    ):
        raise _refuse_task(task, "be held: it has started")
    return replace(task, state=TaskState.QUEUED, waiting_on=None)


def withdraw(task: TaskRun, reason: str) -> TaskRun:
    """A queued task that never started is canceled with the reason (superseded by a newer
    deployment, its change window closed): every step ends canceled, nothing ran."""
    if task.state is not TaskState.QUEUED:
        raise _refuse_task(task, "be withdrawn: only a queued task can")
    canceled = cancel(task)
    return replace(canceled, error=reason)


def suspend(task: TaskRun, on: WaitingOn) -> TaskRun:
    """Release the slot until a person answers or a child ends."""
    if task.state.ended or task.state is TaskState.QUEUED:
        raise _refuse_task(task, f"wait ({on.value})")
    return replace(task, state=on.task_state, waiting_on=on)


def resume(task: TaskRun) -> TaskRun:
    """A suspended task runs again (woken by an answer, a child's end, or a takeover)."""
    if task.state.ended or task.state is TaskState.QUEUED:
        raise _refuse_task(task, "resume")
    return replace(task, state=TaskState.EXECUTING, waiting_on=None)


def hand_over(task: TaskRun) -> TaskRun:
    """A running task let go between two steps by a node that is stopping: it still holds its
    project and environment, and any node carries on with the next step."""
    if task.state is not TaskState.EXECUTING or task.waiting_on is not None:
        raise _refuse_task(task, "be handed over")
    return task


def outcome_of_steps(steps: Sequence[StepRun]) -> tuple[TaskState, str | None]:
    """The task's end from its steps: the first failure decides (a timeout times it out)."""
    for step in steps:
        if step.state.failed:
            error = f'step "{step.name}" failed: {step.reason}'
            state = TaskState.TIMED_OUT if step.state is StepState.TIMED_OUT else TaskState.FAILED
            return state, error
    return TaskState.SUCCESS, None


def finish(task: TaskRun) -> TaskRun:
    """Every step ended: the task ends as its steps decide."""
    if task.state.ended:
        raise _refuse_task(task, "end again")
    unfinished = [s.name for s in task.steps if not s.state.ended]
    if unfinished:
        raise _refuse_task(task, f"end while steps have not: {', '.join(unfinished)}")
    state, error = outcome_of_steps(task.steps)
    return replace(task, state=state, error=error, waiting_on=None)


def cancel(task: TaskRun) -> TaskRun:
    if task.state.ended:
        raise _refuse_task(task, "be canceled")
    return replace(task, state=TaskState.CANCELED, steps=cancel_steps(task.steps), waiting_on=None)


def time_out(task: TaskRun, step_idx: int, reason: str) -> TaskRun:
    """A step ran past its timeout: it ends timed out, and so does the task."""
    if task.state.ended:
        raise _refuse_task(task, "time out")
    steps = list(task.steps)
    steps[step_idx] = finish_step(steps[step_idx], Outcome.timed_out(reason))
    return finish(replace(task, steps=cancel_steps(steps)))


def refuse_start(task: TaskRun, error: str) -> TaskRun:
    """The deployment cannot start (a target it needs is unhealthy): it fails before any
    step runs, so nothing is half-deployed."""
    if task.state is not TaskState.EXECUTING:
        raise _refuse_task(task, "refuse to start")
    return replace(task, state=TaskState.FAILED, error=error, waiting_on=None)


def fail_internally(task: TaskRun, error: str) -> TaskRun:
    """Conveyor itself failed while running the task: it fails visibly, never stays stuck."""
    if task.state.ended:
        raise _refuse_task(task, "fail")
    return replace(task, state=TaskState.FAILED, error=error, waiting_on=None)


@dataclass(frozen=True)
class RollUp:
    """What a child's new state does to its parent: its state, and whether it wakes."""

    state: TaskState
    wake: bool


def roll_up(parent: TaskRun, child_state: TaskState) -> RollUp | None:
    """A child's state shows on its parent while the parent waits for it; its end wakes the
    parent. None when the parent does not wait for a child (or already ended)."""
    if parent.state.ended or parent.waiting_on is not WaitingOn.CHILD:
        return None
    if child_state.ended:
        return RollUp(TaskState.EXECUTING, wake=True)
    shown = TaskState.WAITING if child_state is TaskState.WAITING else TaskState.EXECUTING
    return None if shown is parent.state else RollUp(shown, wake=False)


# ---------------------------------------------------------------- the dashboard


@dataclass(frozen=True)
class Cell:
    """A project x environment cell: the current deployment, and the last success."""

    deployment_id: int
    release_id: int
    release_version: str
    state: TaskState
    task_id: int | None
    previous_deployment_id: int | None = None
    success_release_id: int | None = None
    success_version: str | None = None


@dataclass(frozen=True)
class DeploymentState:
    deployment_id: int
    release_id: int
    release_version: str
    task_id: int
    state: TaskState


def project(cell: Cell | None, change: DeploymentState, *, new: bool) -> Cell:
    """The cell after a deployment was queued (``new``) or changed state.

    A new deployment becomes the cell's current one (the one before it becomes "previous"). A
    state change of the current deployment shows; one of an older deployment (finishing after a
    newer one was queued) shows only as a success: the last success is what is in the
    environment."""
    succeeded = change.state is TaskState.SUCCESS
    success = (
        (change.release_id, change.release_version)
        if succeeded
        else ((cell.success_release_id, cell.success_version) if cell else (None, None))
    )
    if cell is None or new or cell.deployment_id == change.deployment_id:
        previous = (cell.deployment_id if new else cell.previous_deployment_id) if cell else None
        return Cell(
            change.deployment_id,
            change.release_id,
            change.release_version,
            change.state,
            change.task_id,
            previous,
            *success,
        )
    return replace(cell, success_release_id=success[0], success_version=success[1])


# ---------------------------------------------------------------- leases (several nodes)


@dataclass(frozen=True)
class Lease:
    """A node's hold on one task: the epoch the task had when this node claimed it.

    Every claim and every takeover increments a task's epoch, so exactly one holder's epoch is
    current; a run writes only while its epoch still is (see `fenced`)."""

    task_id: int
    epoch: int


class LeaseLost(Exception):
    """This node no longer holds the task: its lease expired and another node took it over."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id}: another node took it over (this node's lease expired)")
        self.task_id = task_id


def fenced(lease: Lease, current_epoch: int | None) -> None:
    """Refuse a write by a holder whose epoch is no longer the task's (or whose task is gone)."""
    if current_epoch != lease.epoch:
        raise LeaseLost(lease.task_id)


def lost(leases: Sequence[Lease], current: Mapping[int, int]) -> set[int]:
    """The tasks among ``leases`` that another claim or takeover has moved past."""
    return {lease.task_id for lease in leases if current.get(lease.task_id) != lease.epoch}
