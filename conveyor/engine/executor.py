"""Runs (or resumes) one deployment task, step by step, from its durable state.

Every claim starts here: finished steps are passed over, a step that waited for a person or a
child deployment picks up the answer, and the rest run in order (steps started with the
previous one run together). When something must wait, the task is suspended and the slot freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.domain import planning
from conveyor.domain.documents import (
    DeployReleaseAction,
    ManualInterventionAction,
    NotificationAction,
    PackageAction,
    ScriptAction,
    ScriptSyntax,
    Step,
    Target,
    key,
    slugify,
)
from conveyor.domain.errors import ConveyorError
from conveyor.domain.interruptions import Kind, Result
from conveyor.domain.masking import Masker
from conveyor.domain.variables import Resolved, environment_name, merge, resolve, substitute
from conveyor.engine import sandbox
from conveyor.engine.logs import TaskLog
from conveyor.engine.runner import Isolation, run_script
from conveyor.engine.sandbox import inside
from conveyor.services import execution as ex
from conveyor.services.config import load, public_id
from conveyor.services.core import Services
from conveyor.services.deployments import TERMINAL
from conveyor.services.offload import off_loop
from conveyor.services.queue import STOPPED

log = logging.getLogger("conveyor.engine")

DONE = "done"
WAIT_PERSON = "interruption"
WAIT_BLOCK = "block"
WAIT_CHILD = "child"


@dataclass
class Context:
    run: ex.Run
    log: TaskLog
    cancel: asyncio.Event
    variables: Resolved
    targets: tuple[Target, ...]


class Executor:
    def __init__(self, services: Services, node: str = "local") -> None:
        self.services = services
        self.data_dir = Path(services.settings.data_dir).resolve()
        # Each node has its own work folders, so one starting cleans only what it left behind.
        self.work_root = self.data_dir / "work"
        self.work = self.work_root / slugify(node)

    def clean_work(self) -> None:
        """Work folders of runs this node was doing when it died (kill -9, power cut)."""
        shutil.rmtree(self.work, ignore_errors=True)
        for legacy in self.work_root.glob("ServerTasks-*"):  # from before per-node folders
            shutil.rmtree(legacy, ignore_errors=True)

    def _clean_task(self, task_id: int) -> None:
        """A task taken over from a dead node: what that node left of its runs goes."""
        for left in self.work_root.glob(f"*/{public_id('tasks', task_id)}"):
            shutil.rmtree(left, ignore_errors=True)

    # ------------------------------------------------------------ the task

    async def run(self, task_id: int, cancel: asyncio.Event) -> None:
        run = await ex.load_run(self.services, task_id)
        variables = self._variables(run)
        run.masker = Masker(variables.secrets())
        task_log = TaskLog(task_id, lambda rows: ex.write_logs(self.services, rows), run.masker)
        model = (await load(self.services)).model
        ctx = Context(run, task_log, cancel, variables, model.targets)
        try:
            if run.deployment.started_at is None:
                await ex.started(self.services, run)
                task_log.line(f"Deploying {run.label}, started by {run.creator}")
            else:
                await asyncio.to_thread(self._clean_task, task_id)
                task_log.line(f"Resuming the deployment of {run.label}")
            await self._steps(ctx)
        except Exception as exc:  # a bug must fail the task visibly, never leave it stuck
            log.exception("task %s failed unexpectedly", task_id)
            task_log.line(f"Conveyor failed while running this task: {exc}", level="error")
            await task_log.flush()
            await ex.finish(self.services, run, "failed", f"internal error: {exc}")
        finally:
            await task_log.close()

    async def _steps(self, ctx: Context) -> None:
        run = ctx.run
        steps = ctx.run.snapshot.process.steps
        if run.cancel_requested or ctx.cancel.is_set():
            await self._canceled(ctx)
            return
        for batch in planning.batches(steps):
            failed = any(s.state == "failed" for s in run.steps)
            results = await asyncio.gather(*(self._step(ctx, i, failed) for i in batch))
            if ctx.cancel.is_set():
                await self._canceled(ctx)
                return
            waits = {r for r in results if r != DONE}
            if waits:
                waiting_on = (
                    WAIT_BLOCK
                    if WAIT_BLOCK in waits
                    else WAIT_PERSON
                    if WAIT_PERSON in waits
                    else WAIT_CHILD
                )
                ctx.log.line(
                    "Waiting for a person to answer"
                    if waiting_on != WAIT_CHILD
                    else "Waiting for the child deployment"
                )
                await ctx.log.flush()
                await ex.suspend(self.services, run, waiting_on)
                return
        await self._finish(ctx)

    async def _finish(self, ctx: Context) -> None:
        run = ctx.run
        failures = [s for s in run.steps if s.state == "failed"]
        if failures:
            first = failures[0]
            state = "timed_out" if (first.reason or "").startswith("timed out") else "failed"
            error = f'step "{first.name}" failed: {first.reason}'
            ctx.log.line(f"The deployment {state.replace('_', ' ')}: {error}", level="error")
        else:
            state, error = "success", None
            ctx.log.line("The deployment succeeded")
        await ctx.log.flush()
        await ex.finish(self.services, run, state, error)
        if state == "success":
            await self._automatic(ctx)

    async def _automatic(self, ctx: Context) -> None:
        """A success can make the release enter the next phase's automatic environments."""
        from conveyor.services.deployments import deploy

        run = ctx.run
        for env in await ex.next_automatic(self.services, run):
            try:
                caller = await ex.creator_caller(self.services, run.creator)
                queued = await deploy(
                    self.services, caller, run.project.name, run.release.version, env
                )
                ctx.log.line(
                    f"Deploying automatically to {env}: {public_id('tasks', queued.task_id)}"
                )
            except ConveyorError as exc:
                ctx.log.line(
                    f"Could not deploy automatically to {env}: {exc.message}", level="warn"
                )
        await ctx.log.flush()

    async def _canceled(self, ctx: Context) -> None:
        from conveyor.services.tasks import cancel_children

        run = ctx.run
        for step in run.steps:
            if step.state in ("pending", "running", "waiting"):
                await ex.set_step(self.services, run, step.idx, "canceled", reason="canceled")
        await cancel_children(self.services, run.task_id)
        ctx.log.line("The deployment was canceled", level="warn")
        await ctx.log.flush()
        await ex.finish(self.services, run, "canceled", None)

    # ------------------------------------------------------------ variables

    def _variables(self, run: ex.Run) -> Resolved:
        creator = run.creator_user
        base = self.services.settings.base_url
        builtins = {
            "Conveyor.Project.Name": run.project.name,
            "Conveyor.Release.Number": run.release.version,
            "Conveyor.Release.Notes": run.release.notes or "",
            "Conveyor.Release.CreatedBy.Username": run.release.created_by,
            "Conveyor.Environment.Name": run.environment.name,
            "Conveyor.Deployment.Id": public_id("deployments", run.deployment_id),
            "Conveyor.Deployment.CreatedBy.Username": run.creator,
            "Conveyor.Deployment.CreatedBy.DisplayName": creator.display_name if creator else "",
            "Conveyor.Deployment.CreatedBy.EmailAddress": creator.email if creator else "",
            "Conveyor.Task.Id": public_id("tasks", run.task_id),
            "Conveyor.Web.ServerUri": base,
            "Conveyor.Web.TaskLink": f"{base}/tasks/{public_id('tasks', run.task_id)}",
        }
        passed = {v["name"]: v for v in run.deployment.variables or []}
        parent_layer = Resolved(
            {n: self._value(v) for n, v in passed.items()},
            frozenset(n for n, v in passed.items() if v.get("sensitive")),
        )
        return merge(
            Resolved(builtins, frozenset()),
            resolve(run.snapshot.variables, run.environment.name),
            parent_layer,
        )

    def _value(self, item: dict[str, Any]) -> str:
        if item.get("sensitive"):
            return self.services.box.decrypt(item["cipher"])
        return str(item.get("value", ""))

    def _values_now(self, ctx: Context) -> dict[str, str]:
        values = dict(ctx.variables.values)
        failed = [s for s in ctx.run.steps if s.state == "failed"]
        values["Conveyor.Deployment.Error"] = failed[0].reason or "" if failed else ""
        values["Conveyor.Deployment.State"] = "failed" if failed else "success"
        for s in ctx.run.steps:
            for name, value in s.outputs.items():
                values[f"Conveyor.Action[{s.name}].Output.{name}"] = ex.output_value(
                    self.services, value
                )
            values[f"Conveyor.Step[{s.name}].Status"] = s.state
        return values

    def _environ(self, values: dict[str, str]) -> dict[str, str]:
        # Only the step's variables: the server's own environment (CONVEYOR_* settings, the
        # database URL) never reaches a script; runner/sandbox add PATH, HOME and the locale.
        return {environment_name(name): value for name, value in values.items()}

    def _isolation(self) -> Isolation:
        """How scripts run here; refuses them when the sandbox is unusable and not waived."""
        found = sandbox.status(self.services.settings)
        if not found.runs_scripts:
            raise ConveyorError(found.refusal())
        return Isolation(self.services.settings, found.usable, self._owner())

    def _owner(self) -> sandbox.Owner | None:
        """Who owns the folders scripts write: the sandbox user, when scripts run as one."""
        found = sandbox.status(self.services.settings)
        return found.owner if found.usable else None

    # ------------------------------------------------------------ one step

    async def _step(self, ctx: Context, idx: int, failed_before: bool) -> str:
        state = ctx.run.steps[idx]
        step = ctx.run.snapshot.process.steps[idx]
        if state.state in ex.FINISHED_STEPS:
            return DONE
        if state.state == "waiting":
            return await self._resume(ctx, idx, step)
        values = self._values_now(ctx)
        situation = planning.Situation(
            environment=ctx.run.environment.name,
            skip=frozenset(key(s) for s in ctx.run.deployment.skip or []),
            failed=failed_before,
            variables=values,
            current={key(p): v for p, v in ctx.run.children_current.items()},
            children={
                key(c["step"]): planning.ChildChoice(c["project"], c["version"])
                for c in ctx.run.release.children
            },
            limit=self.services.settings.max_substitution_bytes,
        )
        try:
            # The run condition is a person's expression: off the event loop, with a timeout.
            decision = await off_loop(
                self.services.settings.expression_timeout_seconds,
                f'the run condition of step "{step.name}"',
                planning.decide,
                step,
                situation,
            )
        except ConveyorError as exc:
            return await self._failed(ctx, idx, step, exc.message)
        if not decision.runs:
            ctx.log.line(f'Step {idx + 1} "{step.name}" skipped: {decision.reason}', step=idx)
            await ex.step_skipped(self.services, ctx.run, step, idx, decision.reason)
            return DONE
        ctx.log.line(f'Step {idx + 1} "{step.name}": {decision.reason}', step=idx)
        await ex.set_step(self.services, ctx.run, idx, "running", started=True)
        return await self._start(ctx, idx, step, values)

    async def _start(self, ctx: Context, idx: int, step: Step, values: dict[str, str]) -> str:
        action = step.action
        try:
            if isinstance(action, ScriptAction):
                return await self._script(ctx, idx, step, action, values)
            if isinstance(action, PackageAction):
                return await self._package(ctx, idx, step, action, values)
            if isinstance(action, ManualInterventionAction):
                return await self._manual(ctx, idx, step, action, values)
            if isinstance(action, DeployReleaseAction):
                return await self._child(ctx, idx, step, action, values)
            assert isinstance(action, NotificationAction)
            return await self._notify(ctx, idx, step, action, values)
        except ConveyorError as exc:
            return await self._failed(ctx, idx, step, exc.message)

    async def _succeeded(
        self, ctx: Context, idx: int, step: Step, reason: str, outputs: dict[str, Any] | None = None
    ) -> str:
        ctx.log.line(f'Step "{step.name}" succeeded{": " + reason if reason else ""}', step=idx)
        await ex.set_step(self.services, ctx.run, idx, "success", reason=reason, outputs=outputs)
        return DONE

    async def _failed(self, ctx: Context, idx: int, step: Step, reason: str) -> str:
        """A failure fails the step, or asks for guidance when guided failure is on."""
        ctx.log.line(f'Step "{step.name}" failed: {reason}', step=idx, level="error")
        if ctx.run.deployment.guided_failure and not ctx.cancel.is_set():
            await ex.set_step(self.services, ctx.run, idx, "running", reason=reason)
            await ex.raise_interruption(
                self.services,
                ctx.run,
                idx,
                kind=Kind.GUIDED_FAILURE.value,
                title=f'"{step.name}" failed in {ctx.run.label}: guidance needed',
                instructions=f"{reason}\nRetry the step, ignore the failure, or abort.",
                responsible_teams=(),
                settings={"required_step": step.is_required},
            )
            return WAIT_PERSON
        await ex.set_step(self.services, ctx.run, idx, "failed", reason=reason)
        return DONE

    async def _resume(self, ctx: Context, idx: int, step: Step) -> str:
        state = ctx.run.steps[idx]
        if state.interruption_id is not None:
            row = await ex.interruption(self.services, state.interruption_id)
            if row.state == "pending":
                return WAIT_BLOCK if (row.settings or {}).get("block_deployments") else WAIT_PERSON
            return await self._answered(ctx, idx, step, row)
        if state.child_task_id is not None:
            child = await ex.task_state(self.services, state.child_task_id)
            if child.state not in TERMINAL:
                return WAIT_CHILD
            label = f"{child.description} ({public_id('tasks', child.id)})"
            if child.state == "success":
                return await self._succeeded(ctx, idx, step, f"{label} succeeded")
            return await self._failed(ctx, idx, step, f"{label} ended {child.state}")
        return await self._failed(ctx, idx, step, STOPPED)

    async def _answered(self, ctx: Context, idx: int, step: Step, row: Any) -> str:
        who, notes = row.answered_by, row.notes or ""
        said = f" ({notes})" if notes else ""
        if row.kind == Kind.MANUAL_INTERVENTION.value:
            outputs = {
                "Manual.Approved": "True" if row.result == Result.PROCEED.value else "False",
                "Manual.Notes": notes,
                "Manual.ResponsibleUser.Username": who or "",
            }
            if row.result == Result.PROCEED.value:
                return await self._succeeded(ctx, idx, step, f"approved by {who}{said}", outputs)
            ctx.log.line(f'"{step.name}" was aborted by {who}{said}', step=idx, level="error")
            await ex.set_step(
                self.services,
                ctx.run,
                idx,
                "failed",
                reason=f"aborted by {who}{said}",
                outputs=outputs,
            )
            return DONE
        reason = ctx.run.steps[idx].reason or "the step failed"
        if row.result == Result.RETRY.value:
            ctx.log.line(f'{who} chose to retry "{step.name}"{said}', step=idx)
            await ex.reset_step(self.services, ctx.run, idx)
            return await self._step(ctx, idx, failed_before=False)
        if row.result == Result.IGNORE.value:
            return await self._succeeded(ctx, idx, step, f"failure ignored by {who}{said}")
        ctx.log.line(f"{who} chose to abort{said}", step=idx, level="error")
        await ex.set_step(self.services, ctx.run, idx, "failed", reason=reason)
        return DONE

    # ------------------------------------------------------------ step types

    def _work_dir(self, ctx: Context, idx: int) -> Path:
        attempt = ctx.run.steps[idx].attempt
        return self.work / public_id("tasks", ctx.run.task_id) / f"{idx}-{attempt}"

    def _targets(self, ctx: Context, roles: tuple[str, ...], step: Step) -> list[Target]:
        env = key(ctx.run.environment.name)
        wanted = {key(r) for r in roles}
        found = [
            t
            for t in ctx.targets
            if env in {key(e) for e in t.environments} and wanted & {key(r) for r in t.roles}
        ]
        if not found:
            raise ConveyorError(
                f"no target in {ctx.run.environment.name} has role {', '.join(roles)}"
            )
        return found

    def _target_dir(self, ctx: Context, target: Target) -> Path:
        return (
            self.data_dir
            / "targets"
            / slugify(target.name)
            / slugify(ctx.run.environment.name)
            / slugify(ctx.run.project.name)
        )

    async def _run(
        self,
        ctx: Context,
        idx: int,
        step: Step,
        body: str,
        syntax: ScriptSyntax,
        cwd: Path,
        values: dict[str, str],
        target_dir: Path | None = None,
        installed: Path | None = None,
    ) -> tuple[bool, str, dict[str, str]]:
        """Run a script in ``cwd``: in the sandbox it may write only its private work folder
        (removed afterwards) and, on a target, that target's folder of this project."""
        isolation = self._isolation()
        work = self._work_dir(ctx, idx)
        if installed is not None:  # where the script itself sees the package
            shown = inside(installed, isolation.mounts(work, target_dir))
            values = values | {"Conveyor.Action.Package.InstallationDirectoryPath": shown}
        settings = self.services.settings
        script = await off_loop(
            settings.expression_timeout_seconds,
            f'the script of step "{step.name}"',
            substitute,
            body,
            values,
            what=f'the script of step "{step.name}"',
            limit=settings.max_substitution_bytes,
        )
        shutil.rmtree(work, ignore_errors=True)
        if target_dir is not None:
            await asyncio.to_thread(sandbox.adopt, target_dir, isolation.owner)
        for folder in (work, cwd) if target_dir is None else (work, target_dir, cwd):
            sandbox.private_folder(folder, isolation.owner)
        try:
            result = await run_script(
                script,
                syntax,
                cwd=cwd,
                variables=self._environ(values),
                on_line=lambda level, text: ctx.log.line(text, step=idx, level=level),
                timeout_seconds=step.timeout_seconds,
                cancel=ctx.cancel,
                script_dir=work,
                isolation=isolation,
                target_dir=target_dir,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):  # empty once no parallel step uses it
                work.parent.rmdir()
        if result.canceled:
            return False, "canceled", result.outputs
        if result.timed_out:
            return False, f"timed out after {step.timeout_seconds} s", result.outputs
        if result.exit_code != 0:
            return False, f"the script exited with code {result.exit_code}", result.outputs
        return True, "", result.outputs

    async def _script(
        self, ctx: Context, idx: int, step: Step, action: ScriptAction, values: dict[str, str]
    ) -> str:
        places = (
            [
                (t.name, self._target_dir(ctx, t), self._target_dir(ctx, t))
                for t in self._targets(ctx, action.target_roles, step)
            ]
            if action.target_roles
            else [("the server", self._work_dir(ctx, idx) / "cwd", None)]
        )
        outputs: dict[str, str] = {}
        for name, cwd, target_dir in places:
            ctx.log.line(f"Running the script on {name}", step=idx)
            ok, reason, out = await self._run(
                ctx,
                idx,
                step,
                action.body,
                action.syntax,
                cwd,
                values | {"Conveyor.Target.Name": name},
                target_dir,
            )
            outputs.update(out)
            if not ok:
                return await self._stopped(ctx, idx, step, reason)
        return await self._succeeded(ctx, idx, step, "", outputs)

    async def _stopped(self, ctx: Context, idx: int, step: Step, reason: str) -> str:
        if reason == "canceled":
            await ex.set_step(self.services, ctx.run, idx, "canceled", reason="canceled")
            return DONE
        return await self._failed(ctx, idx, step, reason)

    async def _package(
        self, ctx: Context, idx: int, step: Step, action: PackageAction, values: dict[str, str]
    ) -> str:
        from conveyor.services.archives import ArchiveLimits, extract
        from conveyor.services.packages import package_path

        version = ctx.run.release.packages.get(action.package)
        if version is None:
            raise ConveyorError(f"release {ctx.run.release.version} pinned no {action.package}")
        archive = await package_path(self.services, action.package, version)
        outputs: dict[str, str] = {}
        for target in self._targets(ctx, action.target_roles, step):
            base = self._target_dir(ctx, target)
            folder = base / version
            # Extracted and handed to the sandbox user beside ``base``, in the server's own
            # folder, where no script can swap anything for a link while root works on it.
            staging = base.parent / f".{base.name}.{version}.incoming-{ctx.run.task_id}"
            owner = self._owner()
            await asyncio.to_thread(sandbox.adopt, base, owner)
            sandbox.private_folder(base, owner)
            shutil.rmtree(staging, ignore_errors=True)
            limits = ArchiveLimits.of(self.services.settings)
            await asyncio.to_thread(extract, archive, staging, limits)
            await asyncio.to_thread(sandbox.give_tree, staging, owner)
            # Scripts write in ``base``: what they left at ``folder`` (a link too) goes.
            if folder.is_symlink() or folder.is_file():
                folder.unlink()
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
            link = base / ".current.incoming"
            link.unlink(missing_ok=True)
            link.symlink_to(folder.name)
            if owner is not None:
                os.chown(link, owner.uid, owner.gid, follow_symlinks=False)
            os.replace(link, base / "current")  # atomic switch of what is live
            ctx.log.line(
                f"{action.package} {version} extracted on {target.name} to {folder}", step=idx
            )
            outputs["InstallationDirectoryPath"] = str(folder)
            if action.post_deploy_script.strip():
                ok, reason, out = await self._run(
                    ctx,
                    idx,
                    step,
                    action.post_deploy_script,
                    action.post_deploy_syntax,
                    folder,
                    values
                    | {
                        "Conveyor.Target.Name": target.name,
                        "Conveyor.Action.Package.PackageId": action.package,
                        "Conveyor.Action.Package.PackageVersion": version,
                    },
                    base,
                    folder,
                )
                outputs.update(out)
                if not ok:
                    return await self._stopped(ctx, idx, step, reason)
        return await self._succeeded(ctx, idx, step, f"{action.package} {version}", outputs)

    async def _manual(
        self,
        ctx: Context,
        idx: int,
        step: Step,
        action: ManualInterventionAction,
        values: dict[str, str],
    ) -> str:
        instructions = substitute(action.instructions, values, what="the instructions")
        teams = ", ".join(action.responsible_teams) or "anyone who may deploy here"
        ctx.log.line(f'"{step.name}" waits for {teams}: {instructions}', step=idx)
        await ex.raise_interruption(
            self.services,
            ctx.run,
            idx,
            kind=Kind.MANUAL_INTERVENTION.value,
            title=f'"{step.name}" for {ctx.run.label}',
            instructions=instructions,
            responsible_teams=action.responsible_teams,
            settings={
                "prevent_self_approval": action.prevent_self_approval,
                "required_approvals": action.required_approvals,
                "approval_teams": list(action.approval_teams),
                "block_deployments": action.block_deployments,
                "required_step": step.is_required,
            },
        )
        return WAIT_BLOCK if action.block_deployments else WAIT_PERSON

    async def _child(
        self,
        ctx: Context,
        idx: int,
        step: Step,
        action: DeployReleaseAction,
        values: dict[str, str],
    ) -> str:
        choice = next(
            (c for c in ctx.run.release.children if key(c["step"]) == key(step.name)), None
        )
        if choice is None:
            raise ConveyorError(f"this release chose no release of {action.project}")
        passed = [
            self._passed(name, substitute(value, values, what=f"variable {name}"), ctx)
            for name, value in action.variables
        ]
        child_task = await ex.start_child(self.services, ctx.run, choice, passed)
        ctx.log.line(
            f"Deploying {choice['project']} {choice['version']} as "
            f"{public_id('tasks', child_task)}",
            step=idx,
        )
        await ex.set_step(self.services, ctx.run, idx, "waiting", child_task_id=child_task)
        return WAIT_CHILD

    def _passed(self, name: str, value: str, ctx: Context) -> dict[str, Any]:
        # A value that holds a secret (a connection string built from a password) is one too.
        if ctx.log.masker.reveals(value):
            return {"name": name, "sensitive": True, "cipher": self.services.box.encrypt(value)}
        return {"name": name, "value": value}

    async def _notify(
        self,
        ctx: Context,
        idx: int,
        step: Step,
        action: NotificationAction,
        values: dict[str, str],
    ) -> str:
        from conveyor.engine.notify import deliver_step

        return await deliver_step(self, ctx, idx, step, action, values)
