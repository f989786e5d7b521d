"""The script step: on every target with one of its roles (all at once, or a window at a time:
`fanout`), or, when it names no roles, once on a worker of its pool (`workers`)."""

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
            async with ctx.worker(action.worker_pool) as worker:
                where = worker.name if worker is not None else "the server"
                ctx.say(f"Running the script on {where}")
                job = ScriptJob(
                    action.body,
                    action.syntax,
                    ctx.values | {"Conveyor.Target.Name": where},
                    machine=worker,
                )
                return await ctx.runner_for(worker).run_script(ctx, job)

        async def on(here: StepContext, target: Target) -> Outcome:
            here.say(f"Running the script on {target.name}")
            job = ScriptJob(
                action.body,
                action.syntax,
                here.values | {"Conveyor.Target.Name": target.name},
                machine=target,
                on_target=True,
            )
            return await here.runner_for(target).run_script(here, job)

        targets = await ctx.deployment_targets(action.target_roles, action.unhealthy_targets)
        return await on_each_target(ctx, targets, action.window, on)
