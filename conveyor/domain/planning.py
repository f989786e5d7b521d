"""The deployment plan: for each step of a release in an environment, run or skip, and why.

The same ``decide`` is used for the preview a person reads before pressing deploy and by the
executor at the moment each step starts, so what the preview promises is what happens (with
the failures and answers of the actual run taken into account). Both know whether the
deployment is a rollback (an older release than the current one: a train then brings back each
child that differs) and which projects are pinned in the environment (a train leaves them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from conveyor.domain.documents import (
    DeploymentCondition,
    DeployReleaseAction,
    Environment,
    GuidedFailureMode,
    Project,
    RunCondition,
    StartTrigger,
    Step,
    key,
)
from conveyor.domain.errors import ValidationFailed
from conveyor.domain.expressions import MAX_OUTPUT, ExpressionLimit
from conveyor.domain.holds import Pin
from conveyor.domain.variables import substitute, truthy
from conveyor.domain.versions import Version


class Action(StrEnum):
    RUN = "run"
    SKIP = "skip"


@dataclass(frozen=True)
class ChildChoice:
    """The child release a parent release chose for a deploy_release step."""

    project: str
    version: str


@dataclass(frozen=True)
class ChildPlan:
    project: str
    version: str
    current: str | None


@dataclass(frozen=True)
class StepDecision:
    action: Action
    reason: str
    child: ChildPlan | None = None
    # A child deployed in a rollback: it replaces a different (usually newer) current release.
    rollback: bool = False
    # The child project is pinned in the environment (the step is skipped for that reason).
    pinned: bool = False

    @property
    def runs(self) -> bool:
        return self.action == Action.RUN


@dataclass(frozen=True)
class Situation:
    """What is known when a step starts (or, for a preview, before anything ran)."""

    environment: str
    skip: frozenset[str] = frozenset()
    failed: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)
    # Child project (key) -> version of its current release in the environment.
    current: Mapping[str, str | None] = field(default_factory=dict)
    # Step name (key) -> the child release chosen by the release.
    children: Mapping[str, ChildChoice] = field(default_factory=dict)
    preview: bool = False
    # Most a run condition may produce (settings.max_substitution_bytes).
    limit: int = MAX_OUTPUT
    # The release deployed is older than the project's current release in the environment
    # (``holds.is_rollback``): deploy_release steps then bring back each child that differs.
    rollback: bool = False
    # Child project (key) -> the release pinned in the environment: a train leaves it there.
    pinned: Mapping[str, Pin] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedStep:
    index: int
    name: str
    type: str
    decision: StepDecision
    parallel_with_previous: bool
    # Cannot be skipped when deploying (Step.is_required): the deploy form offers no "skip".
    required: bool = False


def scope_refusal(step: Step, environment: str) -> str | None:
    """Why ``step`` does not run in ``environment`` by its environment scope; None if it does."""
    env = key(environment)
    if step.environments and env not in {key(e) for e in step.environments}:
        return f"runs only in {', '.join(step.environments)}"
    if env in {key(e) for e in step.excluded_environments}:
        return f"is excluded from {environment}"
    return None


def _condition(step: Step, situation: Situation) -> str | None:
    """None when the run condition lets the step run; otherwise why not."""
    if step.condition == RunCondition.ALWAYS:
        return None
    if step.condition == RunCondition.SUCCESS:
        return (
            "a previous step failed and this step runs only on success"
            if situation.failed
            else None
        )
    if step.condition == RunCondition.FAILURE:
        return None if situation.failed else "runs only after a failure, and nothing has failed"
    values = dict(situation.variables)
    values["Conveyor.Deployment.Error"] = "true" if situation.failed else ""
    what = f'the run condition of step "{step.name}"'
    try:
        rendered = substitute(step.condition_expression, values, what=what, limit=situation.limit)
    except ExpressionLimit:
        raise  # refused unrun, in the preview as at run time
    except ValidationFailed:
        if situation.preview:
            return None  # output variables of earlier steps are known only at run time
        raise
    if truthy(rendered):
        return None
    return f"its condition {step.condition_expression} is false"


def _child(step: Step, action: DeployReleaseAction, situation: Situation) -> StepDecision:
    choice = situation.children.get(key(step.name))
    if choice is None:
        return StepDecision(Action.SKIP, f"this release chose no release of {action.project}")
    current = situation.current.get(key(choice.project))
    plan = ChildPlan(choice.project, choice.version, current)
    env = situation.environment
    label = f"{choice.project} {choice.version}"
    pin = situation.pinned.get(key(choice.project))
    if pin is not None and Version(pin.version) != Version(choice.version):
        return StepDecision(Action.SKIP, pin.describe(env), plan, pinned=True)
    same = current is not None and Version(choice.version) == Version(current)
    # In a rollback, a child that runs replaces what is there: the plan and the log say so.
    rollback = situation.rollback and current is not None and not same
    if action.condition == DeploymentCondition.ALWAYS:
        reason = f"deploys {label} (deployment condition: always)"
        return StepDecision(Action.RUN, reason, plan, rollback=rollback)
    if current is None:
        return StepDecision(Action.RUN, f"{choice.project} has no release in {env} yet", plan)
    if same:
        return StepDecision(Action.SKIP, f"{label} is already the current release in {env}", plan)
    if situation.rollback:
        reason = f"rollback: {label} replaces {current} in {env}"
        return StepDecision(Action.RUN, reason, plan, rollback=True)
    if action.condition == DeploymentCondition.IF_NOT_CURRENT:
        return StepDecision(
            Action.RUN, f"{label} is not the current release in {env} ({current} is)", plan
        )
    if Version(choice.version) > Version(current):
        return StepDecision(Action.RUN, f"{label} is newer than {current}, current in {env}", plan)
    return StepDecision(
        Action.SKIP, f"{label} is older than {current}, the current release in {env}", plan
    )


def decide(step: Step, situation: Situation) -> StepDecision:
    """Run or skip one step, with the reason, in the order a person would ask."""
    if step.disabled:
        return StepDecision(Action.SKIP, "the step is disabled")
    out_of_scope = scope_refusal(step, situation.environment)
    if out_of_scope:
        return StepDecision(Action.SKIP, out_of_scope)
    if key(step.name) in situation.skip:
        return StepDecision(Action.SKIP, "skipped as the deployer asked")
    blocked = _condition(step, situation)
    if blocked:
        return StepDecision(Action.SKIP, blocked)
    if isinstance(step.action, DeployReleaseAction):
        return _child(step, step.action, situation)
    if step.condition == RunCondition.ALWAYS:
        return StepDecision(Action.RUN, "runs always, whatever happened before")
    if step.condition == RunCondition.FAILURE:
        return StepDecision(Action.RUN, "a previous step failed")
    if step.condition == RunCondition.VARIABLE:
        return StepDecision(Action.RUN, f"its condition {step.condition_expression} is true")
    return StepDecision(Action.RUN, "runs in this environment")


def plan(steps: Sequence[Step], situation: Situation) -> list[PlannedStep]:
    """The preview: every step decided as if every step before it succeeded."""
    preview = replace(situation, failed=False, preview=True)
    return [
        PlannedStep(
            index=i,
            name=step.name,
            type=step.type.value,
            decision=decide(step, preview),
            parallel_with_previous=i > 0 and step.start == StartTrigger.WITH_PREVIOUS,
            required=step.is_required,
        )
        for i, step in enumerate(steps)
    ]


def batches(steps: Sequence[Step]) -> list[list[int]]:
    """Step indexes grouped so that each group runs together (a step and those with it)."""
    groups: list[list[int]] = []
    for i, step in enumerate(steps):
        if groups and step.start == StartTrigger.WITH_PREVIOUS:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def unskippable(
    steps: Sequence[Step], skip: Sequence[str], environment: str | None = None
) -> list[str]:
    """Names in ``skip`` that may not be skipped (required steps), or that name no step.

    A required step that would not run in ``environment`` anyway (out of its scope, or
    disabled) may be named: skipping it changes nothing, so there is nothing to refuse."""
    by_key = {key(s.name): s for s in steps}
    problems = []
    for name in skip:
        step = by_key.get(key(name))
        if step is None:
            problems.append(f'there is no step "{name}"')
        elif environment is not None and (step.disabled or scope_refusal(step, environment)):
            continue
        elif step.is_required:
            problems.append(f'step "{step.name}" is required and cannot be skipped')
    return problems


def uses_guided_failure(project: Project, environment: Environment, requested: bool | None) -> bool:
    """Whether a failure asks a person: the deployment's choice, else the project's, else the
    environment's default (Octopus's order)."""
    if requested is not None:
        return requested
    if project.guided_failure == GuidedFailureMode.ON:
        return True
    if project.guided_failure == GuidedFailureMode.OFF:
        return False
    return environment.guided_failure
