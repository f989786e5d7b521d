"""What every step handler gets and returns: one protocol, one context.

A handler runs one step of one deployment and returns its `Outcome`, or says what the step now
waits for (a person, a child deployment) once it has recorded that through the context. It
never reaches into the executor: what it needs (variables, the log, targets, runners, the
moves that make a step wait) comes through `StepContext`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.domain.documents import Step, Target, UnhealthyTargets, key, slugify
from conveyor.domain.errors import ConveyorError
from conveyor.domain.runtime import Outcome, WaitingOn
from conveyor.domain.targets import HealthState, serves
from conveyor.domain.variables import Resolved
from conveyor.engine.logs import TaskLog
from conveyor.engine.steps.workers import Workers
from conveyor.services import execution as ex
from conveyor.services.config import public_id
from conveyor.services.core import Services
from conveyor.services.targets import health_states

if TYPE_CHECKING:
    from conveyor.engine.steps.runners import Runner

StepResult = Outcome | WaitingOn


@dataclass
class StepContext:
    """One step of one run, with everything a handler may use."""

    services: Services
    run: ex.Run
    idx: int
    step: Step
    values: dict[str, str]  # the variables as this step sees them now
    variables: Resolved  # the deployment's own (which of them are sensitive)
    log: TaskLog
    cancel: asyncio.Event
    targets: tuple[Target, ...]
    runners: Mapping[str, Runner]
    data_dir: Path
    work: Path  # this attempt's private work folder (scripts' own files)
    # Who runs steps that name no target roles (this node's count of each worker's load).
    workers: Workers = field(default_factory=lambda: Workers(builtin=True))
    # The target this context works on, when the step runs on several (its log lines say so).
    target: str | None = None
    # A guided failure's retry: only the targets that failed run again (None: all of them).
    only_targets: frozenset[str] | None = None

    def say(self, text: str, level: str = "info") -> None:
        self.log.line(text, step=self.idx, level=level, target=self.target)

    def on(self, target: Target) -> StepContext:
        """This context for the part of the step that runs on ``target``: its log lines name the
        target, and its scripts' files go to a work folder of their own (targets run at once)."""
        return replace(self, target=target.name, work=self.work / slugify(target.name))

    def runner_for(self, target: Target | None) -> Runner:
        """Who runs commands on ``target`` (None: on the server itself), chosen by its kind."""
        kind = target.kind if target is not None else "local"
        runner = self.runners.get(kind)
        if runner is None:
            raise ConveyorError(f'targets of kind "{kind}" cannot run steps on this server')
        return runner

    def targets_with(self, roles: Sequence[str]) -> list[Target]:
        found = targets_in(self.targets, self.run.environment.name, roles)
        if not found:
            raise ConveyorError(
                f"no target in {self.run.environment.name} has role {', '.join(roles)}"
            )
        return found

    async def deployment_targets(
        self, roles: Sequence[str], unhealthy: UnhealthyTargets
    ) -> list[Target]:
        """The targets this step runs on: those with one of ``roles`` in this environment.
        One found unhealthy by its last check fails the step, or is left out (``skip``)."""
        found = self.targets_with(roles)
        if self.only_targets is not None:
            found = [t for t in found if key(t.name) in self.only_targets]
            self.say(f"Retrying on {', '.join(t.name for t in found)} only")
        health = await health_states(self.services)
        sick = [t for t in found if health.get(slugify(t.name)) is HealthState.UNHEALTHY]
        if not sick:
            return found
        names = ", ".join(t.name for t in sick)
        if unhealthy is UnhealthyTargets.FAIL:
            raise ConveyorError(
                f"unhealthy target: {names} (see `conveyor target list`; set "
                "unhealthy_targets: skip on the step to deploy to the healthy ones)"
            )
        healthy = [t for t in found if t not in sick]
        if not healthy:
            raise ConveyorError(f"every target of this step is unhealthy: {names}")
        self.say(f"Leaving out unhealthy targets: {names}", level="warn")
        return healthy

    @contextlib.asynccontextmanager
    async def worker(self, pool: str) -> AsyncIterator[Target | None]:
        """A worker of ``pool`` for as long as the step runs on it (None: the server)."""
        health = await health_states(self.services)
        picked = self.workers.pick(self.targets, pool, health)
        async with self.workers.using(picked) as worker:
            yield worker

    def target_dir(self, target: Target) -> Path:
        """The folder of this project on ``target`` in this environment."""
        return (
            self.data_dir
            / "targets"
            / slugify(target.name)
            / slugify(self.run.environment.name)
            / slugify(self.run.project.name)
        )

    async def ask(
        self,
        *,
        kind: str,
        title: str,
        instructions: str,
        responsible_teams: Sequence[str],
        settings: dict[str, Any],
        blocks: bool = False,
    ) -> WaitingOn:
        """Raise an interruption; the step waits for its answer (one transaction)."""
        await ex.raise_interruption(
            self.services,
            self.run,
            self.idx,
            kind=kind,
            title=title,
            instructions=instructions,
            responsible_teams=responsible_teams,
            settings=settings,
        )
        return WaitingOn.BLOCK if blocks else WaitingOn.INTERRUPTION

    async def deploy_child(
        self, choice: Mapping[str, Any], variables: list[dict[str, Any]]
    ) -> WaitingOn:
        """Queue a child deployment; the step waits for it (one transaction)."""
        child = await ex.start_child(self.services, self.run, self.idx, choice, variables)
        self.say(
            f"Deploying {choice['project']} {choice['version']} as {public_id('tasks', child)}"
        )
        return WaitingOn.CHILD


def targets_in(targets: Sequence[Target], environment: str, roles: Sequence[str]) -> list[Target]:
    """The enabled deployment targets of ``environment`` with one of ``roles``."""
    return [t for t in targets if not t.disabled and serves(t, environment, roles)]


class StepHandler(Protocol):
    """Runs one type of step."""

    async def run(self, ctx: StepContext) -> StepResult: ...
