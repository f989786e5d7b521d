"""What every step handler gets and returns: one protocol, one context.

A handler runs one step of one deployment and returns its `Outcome`, or says what the step now
waits for (a person, a child deployment) once it has recorded that through the context. It
never reaches into the executor: what it needs (variables, the log, targets, runners, the
moves that make a step wait) comes through `StepContext`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.domain.documents import Step, Target, key, slugify
from conveyor.domain.errors import ConveyorError
from conveyor.domain.runtime import Outcome, WaitingOn
from conveyor.domain.variables import Resolved
from conveyor.engine.logs import TaskLog
from conveyor.services import execution as ex
from conveyor.services.config import public_id
from conveyor.services.core import Services

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
    # The target this context works on, when the step runs on several (its log lines say so).
    target: str | None = None

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
        env = key(self.run.environment.name)
        wanted = {key(r) for r in roles}
        found = [
            t
            for t in self.targets
            if env in {key(e) for e in t.environments} and wanted & {key(r) for r in t.roles}
        ]
        if not found:
            raise ConveyorError(
                f"no target in {self.run.environment.name} has role {', '.join(roles)}"
            )
        return found

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


class StepHandler(Protocol):
    """Runs one type of step."""

    async def run(self, ctx: StepContext) -> StepResult: ...
