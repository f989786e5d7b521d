"""Runs (or resumes) one deployment task, step by step, from its durable state.

Every claim starts here: finished steps are passed over, a step that waited for a person or a
child deployment picks up the answer, and the rest run in order (steps started with the
previous one run together). Each step type has its handler (`conveyor.engine.steps`); the
executor walks the batches, decides whether a step runs, dispatches it, and records what it
returned. When something must wait, the task is suspended and the slot freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.domain import planning
from conveyor.domain import runtime as rt
from conveyor.domain.documents import (
    DeployReleaseAction,
    NotificationAction,
    RunCondition,
    ScriptAction,
    Step,
    Target,
    key,
    slugify,
)
from conveyor.domain.errors import ConveyorError
from conveyor.domain.holds import is_rollback
from conveyor.domain.interruptions import Kind, Result
from conveyor.domain.masking import Masker
from conveyor.domain.runtime import Outcome, OutcomeKind, StepState, WaitingOn
from conveyor.domain.targets import HealthState, required_healthy
from conveyor.domain.variables import Resolved, merge, resolve
from conveyor.engine.agents import AgentRunner
from conveyor.engine.logs import LogWriter, TaskLog
from conveyor.engine.ssh import SSHRunner
from conveyor.engine.steps import HANDLERS, LocalRunner, Runner, StepContext, StepResult
from conveyor.engine.steps.workers import Workers
from conveyor.services import execution as ex
from conveyor.services import pins
from conveyor.services.config import load, public_id
from conveyor.services.core import Services
from conveyor.services.deployments import deploy
from conveyor.services.offload import off_loop
from conveyor.services.queue import STOPPED
from conveyor.services.targets import health_states
from conveyor.store.runs import InterruptionRecord

log = logging.getLogger("conveyor.engine")


def _rollback(run: ex.Run) -> str | None:
    """The newer release a deployment of an older one replaces (as the plan says), or None."""
    current = run.children_current.get(run.project.name)
    return current if is_rollback(run.release.version, current) else None


@dataclass
class Context:
    run: ex.Run
    log: TaskLog
    cancel: asyncio.Event
    variables: Resolved
    targets: tuple[Target, ...]
    # Running the "always" steps after a cancel (Conveyor.Deployment.State is "canceled").
    canceled: bool = False


# After a cancel, the steps of these types with run condition "always" still run (the outcome
# mail reaches Operations); deploying steps, approvals and child deployments do not.
AFTER_CANCEL = (NotificationAction, ScriptAction)
# And each for this long at most, so that a cancel still ends the task promptly.
AFTER_CANCEL_SECONDS = 60.0


class Executor:
    def __init__(self, services: Services, node: str = "local") -> None:
        self.services = services
        self.data_dir = Path(services.settings.data_dir).resolve()
        # Each node has its own work folders, so one starting cleans only what it left behind.
        self.work_root = self.data_dir / "work"
        self.work = self.work_root / slugify(node)
        # One writer for the logs of every task this node runs (one INSERT per round).
        self.logs = LogWriter(lambda rows: ex.write_logs(services, rows))
        # Who runs commands on a target, by its kind (ssh and agent runners come next).
        self.runners: dict[str, Runner] = {
            "local": LocalRunner(services.settings),
            "agent": AgentRunner(services),
            "ssh": SSHRunner(services),
        }
        self.workers = Workers(builtin=services.settings.builtin_worker)
        # Set when the node stops: each task lets go at its next step for another node.
        self.draining = False

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

    async def run(self, lease: rt.Lease, cancel: asyncio.Event) -> None:
        """Run the task this node claimed under ``lease``, until it ends or waits."""
        task_id = lease.task_id
        run = await ex.load_run(self.services, lease)
        variables = self._variables(run)
        run.masker = Masker(variables.secrets())
        task_log = self.logs.open(task_id, run.masker, lease.epoch)
        model = (await load(self.services)).model
        ctx = Context(run, task_log, cancel, variables, model.targets)
        try:
            if run.deployment.started_at is None:
                # A deployment canceled while it waited in the queue ends canceled, checks or not.
                waits = None if run.cancel_requested else await ex.recheck(self.services, run)
                if waits is not None:
                    task_log.line(f"Not started: {waits}", level="warn")
                    return
                await ex.started(self.services, run)
                task_log.line(f"Deploying {run.label}, started by {run.creator}")
                if (replaced := _rollback(run)) is not None:
                    task_log.line(
                        f"This is a rollback: {run.project.name} {run.release.version} replaces "
                        f"{replaced} in {run.environment.name}"
                    )
                if await self._unhealthy_targets(ctx):
                    return
            else:
                await asyncio.to_thread(self._clean_task, task_id)
                await ex.resumed(self.services, run)
                task_log.line(f"Resuming the deployment of {run.label}")
            await self._steps(ctx)
        except rt.LeaseLost:
            # Another node took this task over while this one was stopped (frozen, cut off):
            # what it decided stands; this node kills what it still runs and writes nothing.
            log.warning("task %s: this node lost the lease; another node runs it now", task_id)
            cancel.set()
        except Exception as exc:  # a bug must fail the task visibly, never leave it stuck
            log.exception("task %s failed unexpectedly", task_id)
            if not run.state.ended:  # it ends once: a failure after its end changes nothing
                task_log.line(f"Conveyor failed while running this task: {exc}", level="error")
                await task_log.flush()
                failed = rt.fail_internally(run.task, f"internal error: {exc}")
                with contextlib.suppress(rt.LeaseLost):  # then it is the new holder's to end
                    await ex.finish(self.services, run, failed)
        finally:
            await task_log.close()

    async def _steps(self, ctx: Context) -> None:
        run = ctx.run
        if run.cancel_requested or ctx.cancel.is_set():
            await self._canceled(ctx)
            return
        for batch in planning.batches(run.snapshot.process.steps):
            if self.draining and not all(run.steps[i].state.ended for i in batch):
                ctx.log.line("This server is stopping: another one carries on from here")
                await ctx.log.flush()
                await ex.hand_over(self.services, run)
                return
            failed = any(s.state.failed for s in run.steps)
            results = await asyncio.gather(*(self._step(ctx, i, failed) for i in batch))
            if ctx.cancel.is_set():
                await self._canceled(ctx)
                return
            waits = [r for r in results if r is not None]
            if waits:
                waiting_on = rt.most_urgent(waits)
                ctx.log.line(
                    "Waiting for the child deployment"
                    if waiting_on is WaitingOn.CHILD
                    else "Waiting for a person to answer"
                )
                await ctx.log.flush()
                await ex.suspend(self.services, run, waiting_on)
                return
        await self._finish(ctx)

    async def _unhealthy_targets(self, ctx: Context) -> bool:
        """Fail the deployment before any step when a target a step needs healthy is not
        (its last check found it unhealthy); steps with ``unhealthy_targets: skip`` leave such
        targets out when they run instead."""
        run = ctx.run
        needed = required_healthy(
            run.snapshot.process.steps, ctx.targets, run.environment.name, run.deployment.skip
        )
        if not needed:
            return False
        health = await health_states(self.services)
        sick = {n: s for n, s in needed.items() if health.get(slugify(n)) is HealthState.UNHEALTHY}
        if not sick:
            return False
        for name, steps in sick.items():
            ctx.log.line(
                f"Target {name} is unhealthy (needed by {', '.join(steps)}): see "
                f"`conveyor target list`, fix it, then `conveyor target check {name}`",
                level="error",
            )
        ctx.log.line(
            "Nothing was deployed. To deploy to the healthy targets only, set "
            "unhealthy_targets: skip on those steps",
            level="error",
        )
        await ctx.log.flush()
        refused = rt.refuse_start(run.task, f"unhealthy target: {', '.join(sick)}")
        await ex.finish(self.services, run, refused)
        return True

    async def _finish(self, ctx: Context) -> None:
        ended = rt.finish(ctx.run.task)
        if ended.state is rt.TaskState.SUCCESS:
            ctx.log.line("The deployment succeeded")
        else:
            said = ended.state.value.replace("_", " ")
            ctx.log.line(f"The deployment {said}: {ended.error}", level="error")
        await ctx.log.flush()
        await ex.finish(self.services, ctx.run, ended)
        if ended.state is rt.TaskState.SUCCESS:
            await self._automatic(ctx)

    async def _automatic(self, ctx: Context) -> None:
        """A success can make the release enter the next phase's automatic environments."""
        run = ctx.run
        for env in await ex.next_automatic(self.services, run):
            version = run.release.version
            pinned = await pins.automatic_refusal(self.services, run.project.name, version, env)
            if pinned:
                ctx.log.line(f"Not deploying automatically to {env}: {pinned}")
                continue
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
        ctx.log.line("The deployment was canceled", level="warn")
        await self._always_after_cancel(ctx)
        await ctx.log.flush()
        await ex.cancel(self.services, ctx.run)

    async def _always_after_cancel(self, ctx: Context) -> None:
        """Notification and script steps with run condition "always" that have not run yet
        run after a cancel (docs/deployments.md): Octopus skips them, so a canceled deployment
        told no one. They run with a cancel signal of their own (the task's is set), each
        within its own timeout and at most ``AFTER_CANCEL_SECONDS``."""
        run = ctx.run
        skipped = {key(s) for s in run.deployment.skip}
        todo = [
            i
            for i, step in enumerate(run.snapshot.process.steps)
            if run.steps[i].state is StepState.PENDING
            and step.condition == RunCondition.ALWAYS
            and isinstance(step.action, AFTER_CANCEL)
            and not step.disabled
            and key(step.name) not in skipped
            and planning.scope_refusal(step, run.environment.name) is None
        ]
        if not todo:
            return
        after = Context(run, ctx.log, asyncio.Event(), ctx.variables, ctx.targets, canceled=True)
        for idx in todo:
            step = run.snapshot.process.steps[idx]
            limit = min(step.timeout_seconds or AFTER_CANCEL_SECONDS, AFTER_CANCEL_SECONDS)
            try:
                await asyncio.wait_for(self._step(after, idx, True), limit)
            except TimeoutError:
                after.cancel.set()  # its processes are killed; the step ends canceled
                ctx.log.line(
                    f'Step "{step.name}" did not end within {limit:.0f} s after the cancel',
                    step=idx,
                    level="warn",
                )
                after = Context(
                    run, ctx.log, asyncio.Event(), ctx.variables, ctx.targets, canceled=True
                )

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
            **run.approval_variables,
        }
        passed = {v["name"]: v for v in run.deployment.variables}
        parent_layer = Resolved(
            {n: self._value(v) for n, v in passed.items()},
            frozenset(n for n, v in passed.items() if v.get("sensitive")),
        )
        return merge(
            Resolved(builtins, frozenset()),
            resolve(run.snapshot.variables, run.environment.name),
            parent_layer,
        )

    def _value(self, item: Any) -> str:
        if item.get("sensitive"):
            return str(self.services.box.decrypt(item["cipher"]))
        return str(item.get("value", ""))

    def _values_now(self, ctx: Context) -> dict[str, str]:
        values = dict(ctx.variables.values)
        failed = [s for s in ctx.run.steps if s.state.failed]
        values["Conveyor.Deployment.Error"] = failed[0].reason or "" if failed else ""
        values["Conveyor.Deployment.State"] = (
            "canceled" if ctx.canceled else "failed" if failed else "success"
        )
        for s in ctx.run.steps:
            for name, value in s.outputs.items():
                values[f"Conveyor.Action[{s.name}].Output.{name}"] = ex.output_value(
                    self.services, value
                )
            values[f"Conveyor.Step[{s.name}].Status"] = s.state.value
        return values

    # ------------------------------------------------------------ one step

    async def _step(
        self,
        ctx: Context,
        idx: int,
        failed_before: bool,
        only_targets: frozenset[str] | None = None,
    ) -> WaitingOn | None:
        """Run (or resume) one step; what it waits for, or None once it ended."""
        state = ctx.run.steps[idx]
        step = ctx.run.snapshot.process.steps[idx]
        if state.state.ended:
            return None
        if state.state is StepState.WAITING:
            return await self._resume(ctx, idx, step)
        values = self._values_now(ctx)
        situation = planning.Situation(
            environment=ctx.run.environment.name,
            skip=frozenset(key(s) for s in ctx.run.deployment.skip),
            failed=failed_before,
            variables=values,
            current={key(p): v for p, v in ctx.run.children_current.items()},
            children={
                key(c["step"]): planning.ChildChoice(c["project"], c["version"])
                for c in ctx.run.release.children
            },
            limit=self.services.settings.max_substitution_bytes,
            rollback=_rollback(ctx.run) is not None,
            pinned=(
                await pins.pinned_children(self.services, ctx.run.environment_id)
                if isinstance(step.action, DeployReleaseAction)
                else {}
            ),
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
            return await self._record(ctx, idx, step, Outcome.failed(exc.message))
        if not decision.runs:
            return await self._record(ctx, idx, step, Outcome.skipped(decision.reason))
        ctx.log.line(f'Step {idx + 1} "{step.name}": {decision.reason}', step=idx)
        await ex.begin_step(self.services, ctx.run, idx)
        dispatched = await self._dispatch(ctx, idx, step, values, only_targets)
        return await self._record(ctx, idx, step, dispatched)

    async def _dispatch(
        self,
        ctx: Context,
        idx: int,
        step: Step,
        values: dict[str, str],
        only_targets: frozenset[str] | None = None,
    ) -> StepResult:
        attempt = ctx.run.steps[idx].attempt
        step_ctx = StepContext(
            services=self.services,
            run=ctx.run,
            idx=idx,
            step=step,
            values=values,
            variables=ctx.variables,
            log=ctx.log,
            cancel=ctx.cancel,
            targets=ctx.targets,
            runners=self.runners,
            workers=self.workers,
            data_dir=self.data_dir,
            work=self.work / public_id("tasks", ctx.run.task_id) / f"{idx}-{attempt}",
            only_targets=only_targets,
        )
        try:
            return await HANDLERS[step.type].run(step_ctx)
        except ConveyorError as exc:
            return Outcome.failed(exc.message)

    async def _record(
        self, ctx: Context, idx: int, step: Step, result: StepResult
    ) -> WaitingOn | None:
        """Write how a step ended; a failure asks for guidance when guided failure is on."""
        if isinstance(result, WaitingOn):
            return result
        outcome = result
        reason = f": {outcome.reason}" if outcome.reason else ""
        if outcome.kind is OutcomeKind.SUCCEEDED:
            ctx.log.line(f'Step "{step.name}" succeeded{reason}', step=idx)
        elif outcome.kind is OutcomeKind.SKIPPED:
            ctx.log.line(f'Step {idx + 1} "{step.name}" skipped{reason}', step=idx)
        elif outcome.is_failure:
            ctx.log.line(f'Step "{step.name}" failed{reason}', step=idx, level="error")
            if ctx.run.deployment.guided_failure and not (ctx.cancel.is_set() or ctx.canceled):
                return await self._guidance(ctx, idx, step, outcome)
        await ex.end_step(self.services, ctx.run, idx, outcome)
        return None

    async def _guidance(self, ctx: Context, idx: int, step: Step, failure: Outcome) -> WaitingOn:
        if ctx.run.steps[idx].state is StepState.PENDING:  # its run condition failed
            await ex.begin_step(self.services, ctx.run, idx)
        settings: dict[str, Any] = {"required_step": step.is_required}
        title = f'"{step.name}" failed in {ctx.run.label}: guidance needed'
        choices = "Retry the step, ignore the failure, or abort."
        if failure.targets_failed:  # asked about those targets: the rest succeeded
            on = ", ".join(failure.targets_failed)
            settings["targets"] = list(failure.targets_failed)
            title = f'"{step.name}" failed on {on} in {ctx.run.label}: guidance needed'
            choices = (
                f"Retry on {on} only, ignore the failure there (skip {on}; the other targets "
                "are deployed), or abort."
            )
        await ex.raise_interruption(
            self.services,
            ctx.run,
            idx,
            kind=Kind.GUIDED_FAILURE.value,
            title=title,
            instructions=f"{failure.reason}\n{choices}",
            responsible_teams=(),
            settings=settings,
            failure=failure,
        )
        return WaitingOn.INTERRUPTION

    async def _resume(self, ctx: Context, idx: int, step: Step) -> WaitingOn | None:
        state = ctx.run.steps[idx]
        if state.interruption_id is not None:
            row = await ex.interruption(self.services, state.interruption_id)
            if row.state == "pending":
                blocks = row.settings.get("block_deployments")
                return WaitingOn.BLOCK if blocks else WaitingOn.INTERRUPTION
            return await self._answered(ctx, idx, step, row)
        if state.child_task_id is not None:
            child = await ex.task_state(self.services, state.child_task_id)
            if not child.state.ended:
                return WaitingOn.CHILD
            label = f"{child.description} ({public_id('tasks', child.id)})"
            if child.state is rt.TaskState.SUCCESS:
                return await self._record(ctx, idx, step, Outcome.succeeded(f"{label} succeeded"))
            ended = Outcome.failed(f"{label} ended {child.state.value}")
            return await self._record(ctx, idx, step, ended)
        # A step left waiting on nothing (written before waits were one transaction).
        await ex.end_step(self.services, ctx.run, idx, Outcome.failed(STOPPED))
        return None

    async def _answered(
        self, ctx: Context, idx: int, step: Step, row: InterruptionRecord
    ) -> WaitingOn | None:
        who, notes = row.answered_by, row.notes or ""
        said = f" ({notes})" if notes else ""
        if row.kind == Kind.MANUAL_INTERVENTION.value:
            outputs = {
                # The answers to the step's questions: Conveyor.Action[Step].Output.Manual.<Field>
                **{f"Manual.{name}": value for name, value in row.fields.items()},
                "Manual.Approved": "True" if row.result == Result.PROCEED.value else "False",
                "Manual.Notes": notes,
                "Manual.ResponsibleUser.Username": who or "",
            }
            if row.result == Result.PROCEED.value:
                approved = Outcome.succeeded(f"approved by {who}{said}", outputs)
                return await self._record(ctx, idx, step, approved)
            ctx.log.line(f'"{step.name}" was aborted by {who}{said}', step=idx, level="error")
            aborted = Outcome.failed(f"aborted by {who}{said}", outputs)
            await ex.end_step(self.services, ctx.run, idx, aborted)
            return None
        targets = [str(t) for t in row.settings.get("targets") or ()]
        on = f" on {', '.join(targets)}" if targets else ""
        if row.result == Result.RETRY.value:
            ctx.log.line(f'{who} chose to retry "{step.name}"{on}{said}', step=idx)
            await ex.retry_step(self.services, ctx.run, idx)
            only = frozenset(key(t) for t in targets) if targets else None
            return await self._step(ctx, idx, failed_before=False, only_targets=only)
        if row.result == Result.IGNORE.value:
            ignored = Outcome.succeeded(f"failure{on} ignored by {who}{said}")
            return await self._record(ctx, idx, step, ignored)
        ctx.log.line(f"{who} chose to abort{said}", step=idx, level="error")
        # The step ends as it failed: a timeout stays a timeout.
        kind = OutcomeKind(row.settings.get("outcome", OutcomeKind.FAILED.value))
        reason = ctx.run.steps[idx].reason or "the step failed"
        await ex.end_step(self.services, ctx.run, idx, Outcome(kind, reason))
        return None
