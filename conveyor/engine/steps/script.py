"""The script step: once on the server, or on every target with one of its roles (all at
once, or a window at a time: `fanout`)."""

from __future__ import annotations

from conveyor.domain.documents import ScriptAction, Target
from conveyor.domain.runtime import Outcome
from conveyor.engine.steps.base import StepContext, StepResult
from conveyor.engine.steps.fanout import on_each_target
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

        async def on(here: StepContext, target: Target) -> Outcome:
            here.say(f"Running the script on {target.name}")
            folder = here.target_dir(target)
            job = ScriptJob(
                action.body,
                action.syntax,
                folder,
                here.values | {"Conveyor.Target.Name": target.name},
                target_dir=folder,
            )
            return await here.runner_for(target).run_script(here, job)

        targets = ctx.targets_with(action.target_roles)
        return await on_each_target(ctx, targets, action.window, on)
