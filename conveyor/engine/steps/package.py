"""The package step: the version the release pinned, extracted on every target with one of
its roles, then its post-deploy script run there."""

from __future__ import annotations

from conveyor.domain.documents import PackageAction
from conveyor.domain.errors import ConveyorError
from conveyor.domain.runtime import Outcome, OutcomeKind
from conveyor.engine.steps.base import StepContext, StepResult
from conveyor.engine.steps.runners import ScriptJob
from conveyor.services.packages import package_path


class PackageStep:
    async def run(self, ctx: StepContext) -> StepResult:
        action = ctx.step.action
        assert isinstance(action, PackageAction)
        version = ctx.run.release.packages.get(action.package)
        if version is None:
            raise ConveyorError(f"release {ctx.run.release.version} pinned no {action.package}")
        archive = await package_path(ctx.services, action.package, version)
        outputs: dict[str, str] = {}
        for target in ctx.targets_with(action.target_roles):
            runner = ctx.runner_for(target)
            folder = await runner.install_package(ctx, target, archive, action.package, version)
            ctx.say(f"{action.package} {version} extracted on {target.name} to {folder}")
            outputs["InstallationDirectoryPath"] = str(folder)
            if not action.post_deploy_script.strip():
                continue
            job = ScriptJob(
                action.post_deploy_script,
                action.post_deploy_syntax,
                folder,
                ctx.values
                | {
                    "Conveyor.Target.Name": target.name,
                    "Conveyor.Action.Package.PackageId": action.package,
                    "Conveyor.Action.Package.PackageVersion": version,
                },
                target_dir=ctx.target_dir(target),
                installed=folder,
            )
            outcome = await runner.run_script(ctx, job)
            outputs.update(outcome.outputs)
            if outcome.kind is not OutcomeKind.SUCCEEDED:
                return outcome
        return Outcome.succeeded(f"{action.package} {version}", outputs)
