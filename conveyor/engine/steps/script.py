"""The script step: once on the server, or once on every target with one of its roles."""

from __future__ import annotations

from conveyor.domain.documents import ScriptAction
from conveyor.domain.runtime import Outcome, OutcomeKind
from conveyor.engine.steps.base import StepContext, StepResult
from conveyor.engine.steps.runners import ScriptJob


class ScriptStep:
    async def run(self, ctx: StepContext) -> StepResult:
        action = ctx.step.action
        assert isinstance(action, ScriptAction)
        if not action.target_roles:
            ctx.say("Running the script on the server")
            job = ScriptJob(
                action.body,
                action.syntax,
                ctx.work / "cwd",
                ctx.values | {"Conveyor.Target.Name": "the server"},
            )
            return await ctx.runner_for(None).run_script(ctx, job)
        outputs: dict[str, str] = {}
        for target in ctx.targets_with(action.target_roles):
            ctx.say(f"Running the script on {target.name}")
            folder = ctx.target_dir(target)
            job = ScriptJob(
                action.body,
                action.syntax,
                folder,
                ctx.values | {"Conveyor.Target.Name": target.name},
                target_dir=folder,
            )
            outcome = await ctx.runner_for(target).run_script(ctx, job)
            outputs.update(outcome.outputs)
            if outcome.kind is not OutcomeKind.SUCCEEDED:
                return outcome
        return Outcome.succeeded("", outputs)
