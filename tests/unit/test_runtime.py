"""The run of a task: every move the rules allow, and every one they refuse (no database)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conveyor.domain import runtime as rt
from conveyor.domain.errors import InvalidTransition
from conveyor.domain.runtime import (
    Cell,
    DeploymentState,
    Outcome,
    StepRun,
    StepState,
    TaskRun,
    TaskState,
    WaitingOn,
)

ENDED_STEPS = [s for s in StepState if s.ended]
ENDED_TASKS = [s for s in TaskState if s.ended]


def step(state: StepState = StepState.PENDING, **kw: object) -> StepRun:
    return StepRun(0, "Migrate", state, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- steps


def test_a_step_runs_and_ends_with_its_outcome() -> None:
    running = rt.begin_step(step())
    assert (running.state, running.attempt) == (StepState.RUNNING, 1)
    done = rt.finish_step(running, Outcome.succeeded("ok", {"X": "1"}))
    assert (done.state, done.reason, dict(done.outputs)) == (StepState.SUCCESS, "ok", {"X": "1"})


def test_a_timeout_is_its_own_outcome_not_a_reason_prefix() -> None:
    timed = rt.finish_step(rt.begin_step(step()), Outcome.timed_out("took too long"))
    assert timed.state is StepState.TIMED_OUT
    assert timed.state.failed
    # A failure whose reason merely reads like a timeout is a failure.
    failed = rt.finish_step(rt.begin_step(step()), Outcome.failed("timed out after 1 s"))
    assert rt.outcome_of_steps([failed])[0] is TaskState.FAILED
    assert rt.outcome_of_steps([timed])[0] is TaskState.TIMED_OUT


@pytest.mark.parametrize("state", [s for s in StepState if s is not StepState.PENDING])
def test_only_a_pending_step_starts(state: StepState) -> None:
    with pytest.raises(InvalidTransition, match="cannot start"):
        rt.begin_step(step(state))


@pytest.mark.parametrize("state", ENDED_STEPS)
@pytest.mark.parametrize("outcome", [Outcome.succeeded(), Outcome.failed("x"), Outcome.canceled()])
def test_an_ended_step_never_ends_again(state: StepState, outcome: Outcome) -> None:
    with pytest.raises(InvalidTransition, match="end again"):
        rt.finish_step(step(state), outcome)


def test_a_waiting_step_is_never_skipped() -> None:
    with pytest.raises(InvalidTransition, match="skipped while it waits"):
        rt.finish_step(step(StepState.WAITING, child_task_id=3), Outcome.skipped("no"))
    # A running step may find there is nothing to do (a notification with nobody to tell).
    assert rt.finish_step(step(StepState.RUNNING), Outcome.skipped("no")).state is StepState.SKIPPED


@pytest.mark.parametrize("outcome", [Outcome.succeeded(), Outcome.timed_out("t")])
def test_a_pending_step_cannot_succeed_or_time_out(outcome: Outcome) -> None:
    with pytest.raises(InvalidTransition, match="before it started"):
        rt.finish_step(step(), outcome)


def test_a_pending_step_may_be_skipped_canceled_or_fail_its_condition() -> None:
    assert rt.finish_step(step(), Outcome.skipped("env")).state is StepState.SKIPPED
    assert rt.finish_step(step(), Outcome.canceled()).state is StepState.CANCELED
    assert rt.finish_step(step(), Outcome.failed("bad expr")).state is StepState.FAILED


def test_a_running_step_waits_for_a_person_or_a_child() -> None:
    running = rt.begin_step(step())
    person = rt.await_person(running, 7, "it failed")
    assert (person.state, person.interruption_id, person.reason) == (
        StepState.WAITING,
        7,
        "it failed",
    )
    child = rt.await_child(running, 9)
    assert (child.state, child.child_task_id) == (StepState.WAITING, 9)
    assert rt.finish_step(child, Outcome.succeeded()).state is StepState.SUCCESS


@pytest.mark.parametrize("state", [s for s in StepState if s is not StepState.RUNNING])
def test_only_a_running_step_waits(state: StepState) -> None:
    with pytest.raises(InvalidTransition, match="wait for a person"):
        rt.await_person(step(state), 1)
    with pytest.raises(InvalidTransition, match="wait for a child"):
        rt.await_child(step(state), 1)


def test_a_failed_child_asks_for_guidance_but_a_question_is_asked_once() -> None:
    on_child = rt.await_child(rt.begin_step(step()), 5)
    asked = rt.await_person(on_child, 8, "the child failed")
    assert (asked.state, asked.interruption_id) == (StepState.WAITING, 8)
    with pytest.raises(InvalidTransition, match="second person"):
        rt.await_person(asked, 9)
    assert rt.retry_step(asked).child_task_id is None


def test_retry_puts_a_step_waiting_on_guidance_back_to_pending() -> None:
    waiting = rt.await_person(rt.begin_step(step()), 3, "boom")
    again = rt.retry_step(waiting)
    assert (again.state, again.interruption_id, again.reason) == (StepState.PENDING, None, None)
    assert rt.begin_step(again).attempt == 2


@pytest.mark.parametrize("state", list(StepState))
def test_retry_refuses_anything_but_a_step_waiting_on_a_person(state: StepState) -> None:
    with pytest.raises(InvalidTransition, match="retried"):
        rt.retry_step(step(state, child_task_id=4))


# ---------------------------------------------------------------- the task


def test_a_task_starts_waits_resumes_and_ends() -> None:
    task = rt.start(TaskRun(TaskState.QUEUED))
    assert task.state is TaskState.EXECUTING
    person = rt.suspend(task, WaitingOn.INTERRUPTION)
    assert (person.state, person.waiting_on) == (TaskState.WAITING, WaitingOn.INTERRUPTION)
    child = rt.suspend(task, WaitingOn.CHILD)
    assert (child.state, child.waiting_on) == (TaskState.EXECUTING, WaitingOn.CHILD)
    back = rt.resume(person)
    assert (back.state, back.waiting_on) == (TaskState.EXECUTING, None)
    done = rt.finish(replace(back, steps=(step(StepState.SUCCESS),)))
    assert (done.state, done.error) == (TaskState.SUCCESS, None)


@pytest.mark.parametrize("state", [*ENDED_TASKS, TaskState.WAITING])
def test_only_a_queued_or_claimed_task_starts(state: TaskState) -> None:
    with pytest.raises(InvalidTransition, match="cannot start"):
        rt.start(TaskRun(state))


@pytest.mark.parametrize("state", [*ENDED_TASKS, TaskState.QUEUED])
def test_an_ended_or_unclaimed_task_neither_waits_nor_resumes(state: TaskState) -> None:
    with pytest.raises(InvalidTransition, match="cannot wait"):
        rt.suspend(TaskRun(state), WaitingOn.CHILD)
    with pytest.raises(InvalidTransition, match="cannot resume"):
        rt.resume(TaskRun(state))


@pytest.mark.parametrize("state", ENDED_TASKS)
def test_an_ended_task_never_ends_again(state: TaskState) -> None:
    ended = TaskRun(state, (step(StepState.SUCCESS),))
    for move in (rt.finish, rt.cancel, lambda t: rt.fail_internally(t, "x")):
        with pytest.raises(InvalidTransition):
            move(ended)
    with pytest.raises(InvalidTransition, match="cannot time out"):
        rt.time_out(TaskRun(state, (step(StepState.RUNNING),)), 0, "t")


def test_a_task_does_not_end_while_a_step_has_not() -> None:
    task = TaskRun(TaskState.EXECUTING, (step(StepState.SUCCESS), StepRun(1, "Wait")))
    with pytest.raises(InvalidTransition, match="Wait"):
        rt.finish(task)


def test_the_first_failed_step_decides_the_end() -> None:
    steps = (
        step(StepState.SUCCESS),
        StepRun(1, "Slow", StepState.TIMED_OUT, "timed out after 1 s"),
        StepRun(2, "Broken", StepState.FAILED, "exit 3"),
    )
    ended = rt.finish(TaskRun(TaskState.EXECUTING, steps))
    assert ended.state is TaskState.TIMED_OUT
    assert ended.error == 'step "Slow" failed: timed out after 1 s'


def test_time_out_ends_the_step_and_the_task_and_cancels_the_rest() -> None:
    steps = (StepRun(0, "Slow", StepState.RUNNING), StepRun(1, "Next"))
    ended = rt.time_out(TaskRun(TaskState.EXECUTING, steps), 0, "timed out after 5 s")
    assert ended.state is TaskState.TIMED_OUT
    assert [s.state for s in ended.steps] == [StepState.TIMED_OUT, StepState.CANCELED]


def test_cancel_ends_every_unfinished_step() -> None:
    steps = (
        step(StepState.SUCCESS),
        StepRun(1, "Ask", StepState.WAITING, interruption_id=2),
        StepRun(2, "Later"),
    )
    ended = rt.cancel(TaskRun(TaskState.WAITING, steps, WaitingOn.INTERRUPTION))
    assert ended.state is TaskState.CANCELED
    assert [s.state for s in ended.steps] == [
        StepState.SUCCESS,
        StepState.CANCELED,
        StepState.CANCELED,
    ]


def test_most_urgent_wait() -> None:
    assert rt.most_urgent([WaitingOn.CHILD, WaitingOn.BLOCK]) is WaitingOn.BLOCK
    assert rt.most_urgent([WaitingOn.CHILD, WaitingOn.INTERRUPTION]) is WaitingOn.INTERRUPTION
    with pytest.raises(InvalidTransition):
        rt.most_urgent([])


# ---------------------------------------------------------------- rolling up


def test_a_child_shows_on_its_waiting_parent_and_its_end_wakes_it() -> None:
    parent = TaskRun(TaskState.EXECUTING, waiting_on=WaitingOn.CHILD)
    assert rt.roll_up(parent, TaskState.WAITING) == rt.RollUp(TaskState.WAITING, wake=False)
    assert rt.roll_up(parent, TaskState.EXECUTING) is None  # nothing changes
    waiting = replace(parent, state=TaskState.WAITING)
    assert rt.roll_up(waiting, TaskState.EXECUTING) == rt.RollUp(TaskState.EXECUTING, False)
    for end in ENDED_TASKS:
        assert rt.roll_up(waiting, end) == rt.RollUp(TaskState.EXECUTING, wake=True)


@pytest.mark.parametrize("state", ENDED_TASKS)
def test_nothing_rolls_up_to_an_ended_parent(state: TaskState) -> None:
    assert rt.roll_up(TaskRun(state, waiting_on=WaitingOn.CHILD), TaskState.FAILED) is None


def test_nothing_rolls_up_to_a_parent_not_waiting_for_a_child() -> None:
    parent = TaskRun(TaskState.WAITING, waiting_on=WaitingOn.INTERRUPTION)
    assert rt.roll_up(parent, TaskState.SUCCESS) is None


# ---------------------------------------------------------------- the dashboard


def change(dep: int, state: TaskState, version: str = "1.0") -> DeploymentState:
    return DeploymentState(dep, dep * 10, version, dep * 100, state)


def test_a_queued_deployment_becomes_current_and_the_old_one_previous() -> None:
    first = rt.project(None, change(1, TaskState.QUEUED), new=True)
    assert (first.deployment_id, first.previous_deployment_id) == (1, None)
    done = rt.project(first, change(1, TaskState.SUCCESS), new=False)
    assert (done.state, done.success_version) == (TaskState.SUCCESS, "1.0")
    second = rt.project(done, change(2, TaskState.QUEUED, "2.0"), new=True)
    assert (second.deployment_id, second.previous_deployment_id) == (2, 1)
    assert (second.state, second.success_version) == (TaskState.QUEUED, "1.0")


def test_an_older_deployment_ending_later_shows_only_as_a_success() -> None:
    cell = Cell(2, 20, "2.0", TaskState.EXECUTING, 200, 1, 10, "1.0")
    failed = rt.project(cell, change(1, TaskState.FAILED), new=False)
    assert failed == cell
    older = rt.project(cell, change(3, TaskState.SUCCESS, "0.9"), new=False)
    assert (older.deployment_id, older.state) == (2, TaskState.EXECUTING)
    assert older.success_version == "0.9"


def test_a_failure_of_the_current_deployment_keeps_the_last_success() -> None:
    cell = Cell(2, 20, "2.0", TaskState.EXECUTING, 200, 1, 10, "1.0")
    failed = rt.project(cell, change(2, TaskState.FAILED, "2.0"), new=False)
    assert (failed.state, failed.success_version, failed.previous_deployment_id) == (
        TaskState.FAILED,
        "1.0",
        1,
    )


# ---------------------------------------------------------------- leases


def test_a_write_under_a_stale_lease_is_refused() -> None:
    rt.fenced(rt.Lease(7, 3), 3)
    with pytest.raises(rt.LeaseLost, match="task 7: another node took it over"):
        rt.fenced(rt.Lease(7, 3), 4)
    with pytest.raises(rt.LeaseLost):
        rt.fenced(rt.Lease(7, 3), None)  # the task is gone


def test_renewing_finds_the_leases_another_node_moved_past() -> None:
    held = [rt.Lease(1, 1), rt.Lease(2, 5), rt.Lease(3, 2)]
    assert rt.lost(held, {1: 1, 2: 6, 3: 2}) == {2}
    assert rt.lost(held, {1: 1, 2: 5}) == {3}


def test_a_question_to_a_person_frees_the_pair_a_child_or_a_blocking_step_does_not() -> None:
    assert not rt.WaitingOn.INTERRUPTION.holds_pair
    assert rt.WaitingOn.CHILD.holds_pair and rt.WaitingOn.BLOCK.holds_pair
