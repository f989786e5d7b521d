"""The package step: the version the release pinned, extracted on every target with one of
its roles, then its post-deploy script run there."""

from __future__ import annotations

from dataclasses import replace

from conveyor.domain.documents import PackageAction, Target
from conveyor.domain.errors import ConveyorError
from conveyor.domain.runtime import Outcome, OutcomeKind
from conveyor.engine.steps.base import StepContext, StepResult
from conveyor.engine.steps.fanout import on_each_target
from conveyor.engine.steps.runners import ScriptJob
from conveyor.services.packages import feed_file


class PackageStep:
    async def run(self, ctx: StepContext) -> StepResult:
        action = ctx.step.action
        assert isinstance(action, PackageAction)
        version = ctx.run.release.packages.get(action.package)
        if version is None:
            raise ConveyorError(f"release {ctx.run.release.version} pinned no {action.package}")
        file = await feed_file(ctx.services, action.package, version)

        async def on(here: StepContext, target: Target) -> Outcome:
            runner = here.runner_for(target)
            folder = await runner.install_package(here, target, file)
            here.say(f"{action.package} {version} extracted on {target.name} to {folder}")
            installed = {"InstallationDirectoryPath": str(folder)}
            if not action.post_deploy_script.strip():
                return Outcome.succeeded("", installed)
            job = ScriptJob(
                action.post_deploy_script,
                action.post_deploy_syntax,
                here.values
                | {
                    "Conveyor.Target.Name": target.name,
                    "Conveyor.Action.Package.PackageId": action.package,
                    "Conveyor.Action.Package.PackageVersion": version,
                },
                machine=target,
                on_target=True,
                installed=folder,
            )
            outcome = await runner.run_script(here, job)
            return replace(outcome, outputs={**installed, **outcome.outputs})

        targets = await ctx.deployment_targets(action.target_roles, action.unhealthy_targets)
        done = await on_each_target(ctx, targets, action.window, on)
        if done.kind is not OutcomeKind.SUCCEEDED:
            return done
        return Outcome.succeeded(f"{action.package} {version}", done.outputs)
