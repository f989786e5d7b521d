"""The deploy_release step: the child release the parent release chose, as its own deployment
(with the permissions of the person who started the parent, checked again); the step waits."""

from __future__ import annotations

from typing import Any

from conveyor.domain.documents import DeployReleaseAction, key
from conveyor.domain.errors import ConveyorError
from conveyor.domain.variables import substitute
from conveyor.engine.steps.base import StepContext, StepResult


class DeployReleaseStep:
    async def run(self, ctx: StepContext) -> StepResult:
        action, step = ctx.step.action, ctx.step
        assert isinstance(action, DeployReleaseAction)
        choice = next(
            (c for c in ctx.run.release.children if key(c["step"]) == key(step.name)), None
        )
        if choice is None:
            raise ConveyorError(f"this release chose no release of {action.project}")
        passed = [
            _passed(ctx, name, substitute(value, ctx.values, what=f"variable {name}"))
            for name, value in action.variables
        ]
        return await ctx.deploy_child(choice, passed)


def _passed(ctx: StepContext, name: str, value: str) -> dict[str, Any]:
    # A value that holds a secret (a connection string built from a password) is one too.
    if ctx.log.masker.reveals(value):
        return {"name": name, "sensitive": True, "cipher": ctx.services.box.encrypt(value)}
    return {"name": name, "value": value}
