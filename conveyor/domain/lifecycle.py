"""Where a release may be deployed now, and where it goes automatically (Octopus's rules).

Phases are walked in order. A phase is complete when enough of its environments have a
successful deployment of the release (``minimum_environments``; 0 means all of them). A phase is
open (deployable) when every earlier non-optional phase is complete, so the first phase is always
open and an optional phase never holds back the ones after it. Redeploying to an environment the
release already went to is always allowed. Environment names match case-insensitively (``key``).

Reasons are written without the project and release, which the caller knows and may prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from conveyor.domain.documents import Lifecycle, Phase, key


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    # Queued, executing and waiting deployments: they neither complete a phase nor fail it.
    RUNNING = "running"


@dataclass(frozen=True)
class Attempt:
    """One deployment of the release in question."""

    environment: str
    outcome: Outcome


@dataclass(frozen=True)
class LifecycleDecision:
    allowed: bool
    reason: str


class PhaseState(StrEnum):
    COMPLETE = "complete"
    CURRENT = "current"
    PENDING = "pending"


@dataclass(frozen=True)
class PhaseProgress:
    name: str
    state: PhaseState
    optional: bool
    environments: tuple[str, ...]
    succeeded: tuple[str, ...]
    # How many must succeed to complete the phase; an optional phase counts too but never blocks.
    required: int


@dataclass(frozen=True)
class _Step:
    phase: Phase
    progress: PhaseProgress
    open: bool


def _environments(phase: Phase) -> tuple[str, ...]:
    """The phase's environments; an automatic one belongs to it even if not listed again."""
    seen: set[str] = set()
    out: list[str] = []
    for env in (*phase.environments, *phase.automatic):
        if key(env) not in seen:
            seen.add(key(env))
            out.append(env)
    return tuple(out)


def _walk(lifecycle: Lifecycle, history: Sequence[Attempt]) -> list[_Step]:
    done = {key(a.environment) for a in history if a.outcome is Outcome.SUCCESS}
    steps: list[_Step] = []
    blocked = False
    for phase in lifecycle.phases:
        envs = _environments(phase)
        succeeded = tuple(env for env in envs if key(env) in done)
        minimum = phase.minimum_environments
        required = len(envs) if minimum <= 0 else min(minimum, len(envs))
        complete = len(succeeded) >= required
        if complete:
            state = PhaseState.COMPLETE
        else:
            state = PhaseState.PENDING if blocked else PhaseState.CURRENT
        progress = PhaseProgress(phase.name, state, phase.optional, envs, succeeded, required)
        steps.append(_Step(phase, progress, not blocked))
        blocked = blocked or (not complete and not phase.optional)
    return steps


def progression(lifecycle: Lifecycle, history: Sequence[Attempt]) -> list[PhaseProgress]:
    """Each phase with its state: complete, current (open, not complete) or pending."""
    return [step.progress for step in _walk(lifecycle, history)]


def can_deploy(
    lifecycle: Lifecycle, history: Sequence[Attempt], environment: str
) -> LifecycleDecision:
    wanted = key(environment)
    steps = _walk(lifecycle, history)
    homes = [s for s in steps if any(key(env) == wanted for env in s.progress.environments)]
    if not homes:
        return LifecycleDecision(False, f"{environment} is not part of lifecycle {lifecycle.name}")
    name = next(env for env in homes[0].progress.environments if key(env) == wanted)
    if any(key(a.environment) == wanted for a in history):
        return LifecycleDecision(True, f"{name} was deployed to before; redeploying is allowed")
    for step in homes:
        if step.open:
            return LifecycleDecision(True, f'{name} is in phase "{step.phase.name}", which is open')
    # Not open means some earlier required phase is incomplete; the first one is what blocks.
    blocker = next(
        s.progress
        for s in steps
        if s.progress.state is not PhaseState.COMPLETE and not s.phase.optional
    )
    return LifecycleDecision(
        False,
        f'{name} is not allowed yet: phase "{blocker.name}" must be complete first'
        f" ({_needs(blocker)}).",
    )


def _needs(progress: PhaseProgress) -> str:
    envs, required = progress.environments, progress.required
    listed = ", ".join(envs)
    if len(envs) == 1:
        need = f"needs a successful deployment to {listed}"
    elif required == len(envs):
        need = f"needs successful deployments to all of {listed}"
    elif required == 1:
        need = f"needs a successful deployment to one of {listed}"
    else:
        need = f"needs successful deployments to {required} of {listed}"
    have = ", ".join(progress.succeeded)
    return f"{need}; so far only {have}" if have else f"{need}; none yet"


def allowed_environments(lifecycle: Lifecycle, history: Sequence[Attempt]) -> list[str]:
    """Every environment the release may go to now, in phase order."""
    seen: set[str] = set()
    out: list[str] = []
    for phase in lifecycle.phases:
        for env in _environments(phase):
            if key(env) not in seen and can_deploy(lifecycle, history, env).allowed:
                out.append(env)
            seen.add(key(env))
    return out


def automatic_on_creation(lifecycle: Lifecycle) -> list[str]:
    """Where a new release deploys by itself: the automatic environments of the open phases.

    That is the first phase, plus any that an optional or empty first phase leaves open.
    Automatic deployments are not evaluated for optional phases (as in Octopus).
    """
    return _automatic(_walk(lifecycle, ()), already_open=set(), reached=set())


def automatic_after_success(
    lifecycle: Lifecycle, history: Sequence[Attempt], environment: str
) -> list[str]:
    """Where the release deploys by itself now that it succeeded in ``environment``.

    ``history`` includes that success. Only phases this success opened count, so a redeploy
    triggers nothing again; environments the release already went to are left out.
    """
    before = _without_last_success(history, environment)
    if before is None:
        return []
    was_open = {i for i, s in enumerate(_walk(lifecycle, before)) if s.open}
    reached = {key(a.environment) for a in history}
    return _automatic(_walk(lifecycle, history), already_open=was_open, reached=reached)


def _automatic(steps: list[_Step], already_open: set[int], reached: set[str]) -> list[str]:
    out: list[str] = []
    for i, step in enumerate(steps):
        if not step.open or step.phase.optional or i in already_open:
            continue
        for env in step.phase.automatic:
            if key(env) not in reached:
                reached.add(key(env))
                out.append(env)
    return out


def _without_last_success(history: Sequence[Attempt], environment: str) -> list[Attempt] | None:
    for i in range(len(history) - 1, -1, -1):
        attempt = history[i]
        if attempt.outcome is Outcome.SUCCESS and key(attempt.environment) == key(environment):
            return [*history[:i], *history[i + 1 :]]
    return None


def outcome_of(task_state: str) -> Outcome:
    """A deployment's task state as the lifecycle counts it: only a success completes a phase;
    queued, executing and waiting are still running; failed, canceled and timed out are not."""
    if task_state == "success":
        return Outcome.SUCCESS
    if task_state in ("queued", "executing", "waiting"):
        return Outcome.RUNNING
    return Outcome.FAILED
