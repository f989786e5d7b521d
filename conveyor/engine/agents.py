"""The runner of ``agent`` targets: each command becomes a job that the target's polling agent
claims (`conveyor.services.agents`), and the node running the step waits for it.

While it waits it moves the agent's output lines into the task log, asks the agent to stop
when the step is canceled, and gives up with a reason, rather than hanging, when the target's
agent has not been heard from for ``agent_offline_seconds``. The script's text is substituted
here, as for any target; the agent runs what it is sent, in its own process group.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from conveyor.domain.documents import Target, slugify
from conveyor.domain.errors import ConveyorError
from conveyor.domain.runtime import Outcome
from conveyor.domain.targets import Health, HealthState, Layout, judged
from conveyor.engine.steps.base import StepContext
from conveyor.engine.steps.runners import ScriptJob, environ, rendered
from conveyor.services import agents
from conveyor.services.core import Services
from conveyor.services.packages import FeedFile

# How often the waiting node looks at the job and its output.
POLL_SECONDS = 0.2
# How long a canceled job may take to stop on the agent before the step ends anyway.
CANCEL_GRACE = timedelta(seconds=15)
# Paths the server sends are relative to the agent's --work-dir.
LAYOUT = Layout("/")


def _relative(path: str) -> str:
    return path.lstrip("/")


def _suffix(archive: Path) -> str:
    name = archive.name.lower()
    return ".tar.gz" if name.endswith(".tar.gz") else archive.suffix


class AgentRunner:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    def close(self) -> None:
        """Agents call in: nothing is kept open towards them."""

    # ------------------------------------------------------------ the protocol

    async def run_script(self, ctx: StepContext, job: ScriptJob) -> Outcome:
        machine = job.machine
        if machine is None:
            raise ConveyorError("an agent runs scripts only on its own target")
        step = ctx.step
        script, values = await rendered(self.settings, ctx, job)
        project_dir = (
            _relative(LAYOUT.project(ctx.run.environment.name, ctx.run.project.name))
            if job.on_target
            else ""
        )
        payload = {
            "script": script,
            "syntax": str(job.syntax),
            "env": environ(values),
            "dir": project_dir,
            "installed": str(job.installed) if job.installed is not None else "",
            "timeout": step.timeout_seconds,
        }
        result = await self._run(ctx, machine, "script", payload)
        outputs = {str(k): str(v) for k, v in (result.get("outputs") or {}).items()}
        if result.get("error"):
            return Outcome.failed(str(result["error"]), outputs)
        if result.get("canceled"):
            return Outcome.canceled()
        if result.get("timed_out"):
            return Outcome.timed_out(f"timed out after {step.timeout_seconds} s", outputs)
        code = result.get("exit_code")
        if code != 0:
            return Outcome.failed(f"the script exited with code {code}", outputs)
        return Outcome.succeeded("", outputs)

    async def install_package(self, ctx: StepContext, target: Target, file: FeedFile) -> PurePath:
        """The agent downloads the file only when it lacks this exact one (by the sha256 the
        feed recorded when it was pushed), and checks what it got against it."""
        package, version = file.package, file.version
        payload = {
            "package": package,
            "version": version,
            "sha256": file.sha256,
            "size": file.size,
            "file": _relative(LAYOUT.package_file(package, version, _suffix(file.path))),
            "dir": _relative(LAYOUT.project(ctx.run.environment.name, ctx.run.project.name)),
            "keep": self.settings.keep_package_versions,
        }
        result = await self._run(ctx, target, "package", payload)
        if result.get("canceled"):
            raise ConveyorError(f"canceled while installing {package} {version} on {target.name}")
        if result.get("error") or not result.get("folder"):
            reason = result.get("error") or "the agent said nothing of where it went"
            raise ConveyorError(f"installing {package} {version} on {target.name} failed: {reason}")
        return PurePosixPath(str(result["folder"]))

    async def check(self, machine: Target) -> Health:
        """Healthy while an unrevoked agent of the target polled lately; what it reported."""
        found = await agents.freshest_agent(self.services, slugify(machine.name))
        if found is None:
            return Health.failed(
                f"no agent has enrolled for {machine.name}: make a token with `conveyor agent "
                f"token create --target {machine.name}` and run `conveyor agent run` there"
            )
        if not found["online"]:
            return Health.failed(
                f"its agent ({found['id']} on {found['hostname'] or 'an unnamed host'}) last "
                f"polled at {found['last_seen']}: is `conveyor agent run` running there?"
            )
        return judged(
            Health(
                HealthState.HEALTHY,
                "",
                found["os"],
                found["free_disk_bytes"],
                found["version"],
            )
        )

    # ------------------------------------------------------------ one job

    async def _run(
        self, ctx: StepContext, machine: Target, kind: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Queue the job, move its output into the log until it is done; its result."""
        services = self.services
        target = slugify(machine.name)
        job_id = await agents.enqueue(services, target, ctx.run.task_id, kind, payload)
        try:
            return await self._wait(ctx, machine, job_id)
        finally:
            with contextlib.suppress(Exception):  # its lines go with it
                await asyncio.shield(agents.remove_job(services, job_id))

    async def _wait(self, ctx: StepContext, machine: Target, job_id: int) -> dict[str, Any]:
        services = self.services
        offline = timedelta(seconds=self.settings.agent_offline_seconds)
        cancel_sent: datetime | None = None
        while True:
            await self._move_lines(ctx, job_id)
            state = await agents.job_state(services, job_id)
            if state.state == agents.DONE:
                await self._move_lines(ctx, job_id)
                return state.result or {}
            now = services.clock()
            if ctx.cancel.is_set() and cancel_sent is None:
                await agents.request_cancel(services, job_id)
                cancel_sent = now
            if cancel_sent is not None and now - cancel_sent > CANCEL_GRACE:
                return {"canceled": True}
            reason = await self._gone(machine, state, now, offline)
            if reason is not None:
                await agents.fail_job(services, job_id, reason)
                await self._move_lines(ctx, job_id)
                return {"error": reason}
            if cancel_sent is None:  # a cancel is acted on at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.cancel.wait(), POLL_SECONDS)
            else:
                await asyncio.sleep(POLL_SECONDS)

    async def _gone(
        self, machine: Target, state: agents.JobState, now: datetime, offline: timedelta
    ) -> str | None:
        """Why waiting on is pointless: the agent is revoked or has not been heard from."""
        seconds = f"{offline.total_seconds():g} s"
        if state.state == agents.QUEUED:
            found = await agents.freshest_agent(self.services, slugify(machine.name))
            if found is None:
                return (
                    f"no agent has enrolled for target {machine.name}: make a token with "
                    f"`conveyor agent token create --target {machine.name}` and run "
                    "`conveyor agent run` there"
                )
            if not found["online"]:
                return (
                    f"the agent of target {machine.name} has not polled for over {seconds} "
                    f"(last at {found['last_seen']}): is `conveyor agent run` running there?"
                )
            return None
        if state.agent_revoked:
            return f"the agent of target {machine.name} was revoked while running this"
        if state.agent_seen is None or now - state.agent_seen > offline:
            return (
                f"the agent of target {machine.name} stopped answering while running this "
                f"(nothing heard for over {seconds}): the machine or its network may be down"
            )
        return None

    async def _move_lines(self, ctx: StepContext, job_id: int) -> None:
        while True:
            lines = await agents.take_lines(self.services, job_id)
            for level, text in lines:
                full = ctx.log.line(text, step=ctx.idx, level=level, target=ctx.target)
                if full is not None:
                    await full
            if len(lines) < 2000:
                return
