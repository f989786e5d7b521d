"""Runners carry out a step's commands where they must run, chosen by the target's kind.

`local` runs on the server, in the sandbox of `conveyor.engine.sandbox` (an unprivileged user
that may write only the step's private work folder and, on a target, that target's folder of
this project); `ssh` (`conveyor.engine.ssh`) and `agent` (`conveyor.engine.agents`) implement
the same protocol on other machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Protocol

from conveyor.domain.documents import ScriptSyntax, Target
from conveyor.domain.errors import ConveyorError
from conveyor.domain.packages import kept_versions
from conveyor.domain.runtime import Outcome
from conveyor.domain.targets import Health, HealthState, judged
from conveyor.domain.variables import environment_name, substitute
from conveyor.engine import sandbox
from conveyor.engine.runner import Isolation, run_script
from conveyor.engine.sandbox import inside
from conveyor.engine.steps.base import StepContext
from conveyor.services.archives import ArchiveLimits, extract
from conveyor.services.offload import off_loop
from conveyor.services.packages import FeedFile
from conveyor.settings import Settings


@dataclass(frozen=True)
class ScriptJob:
    """A script to run on ``machine`` (None: the server itself). On a deployment target
    (``on_target``) it runs in that target's folder of this project, or where a package step
    extracted the package (``installed``, as the machine sees it); on the server or a worker it
    runs in a scratch folder of its own."""

    body: str
    syntax: ScriptSyntax
    values: dict[str, str]
    machine: Target | None = None
    on_target: bool = False
    installed: PurePath | None = None


class Runner(Protocol):
    """Carries out a step's commands on one kind of machine (``local``, ``ssh``, ``agent``)."""

    async def run_script(self, ctx: StepContext, job: ScriptJob) -> Outcome: ...

    async def install_package(self, ctx: StepContext, target: Target, file: FeedFile) -> PurePath:
        """Put the feed's ``file`` on ``target``, extracted into a folder of its version,
        switch ``current`` to it, keep the last few versions; where it went."""
        ...

    async def check(self, machine: Target) -> Health:
        """Whether ``machine`` can take work now: reachable, its OS, its free disk."""
        ...

    def close(self) -> None:
        """The node stops: let go of what is kept open (connections)."""
        ...


INSTALLED = "Conveyor.Action.Package.InstallationDirectoryPath"


async def rendered(
    settings: Settings, ctx: StepContext, job: ScriptJob, installed: str | None = None
) -> tuple[str, dict[str, str]]:
    """The script with its variables substituted, and those variables (with where the package
    is, as the machine shows it: ``installed``, else ``job.installed``). A person's text: off
    the event loop, with a time and size limit."""
    values = job.values
    where = installed if installed is not None else job.installed
    if where is not None:
        values = values | {INSTALLED: str(where)}
    what = f'the script of step "{ctx.step.name}"'
    script = await off_loop(
        settings.expression_timeout_seconds,
        what,
        substitute,
        job.body,
        values,
        what=what,
        limit=settings.max_substitution_bytes,
    )
    return script, values


def environ(values: dict[str, str]) -> dict[str, str]:
    # Only the step's variables: the server's own environment (CONVEYOR_* settings, the
    # database URL) never reaches a script; runner/sandbox add PATH, HOME and the locale.
    return {environment_name(name): value for name, value in values.items()}


class LocalRunner:
    """Runs on the server itself, sandboxed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _isolation(self) -> Isolation:
        """How scripts run here; refuses them when the sandbox is unusable and not waived."""
        found = sandbox.status(self.settings)
        if not found.runs_scripts:
            raise ConveyorError(found.refusal())
        return Isolation(self.settings, found.usable, self._owner())

    def _owner(self) -> sandbox.Owner | None:
        """Who owns the folders scripts write: the sandbox user, when scripts run as one."""
        found = sandbox.status(self.settings)
        return found.owner if found.usable else None

    async def run_script(self, ctx: StepContext, job: ScriptJob) -> Outcome:
        """In the sandbox a script may write only its private work folder (removed
        afterwards) and, on a target, that target's folder of this project."""
        isolation = self._isolation()
        work, step = ctx.work, ctx.step
        target_dir = ctx.target_dir(job.machine) if job.on_target and job.machine else None
        installed = Path(job.installed) if job.installed is not None else None
        cwd = installed or target_dir or work / "cwd"
        # Where the script itself sees the package (inside the sandbox's view).
        shown = inside(installed, isolation.mounts(work, target_dir)) if installed else None
        script, values = await rendered(self.settings, ctx, job, shown)
        shutil.rmtree(work, ignore_errors=True)
        if target_dir is not None:
            await asyncio.to_thread(sandbox.adopt, target_dir, isolation.owner)
        folders = (work, cwd) if target_dir is None else (work, target_dir, cwd)
        for folder in folders:
            sandbox.private_folder(folder, isolation.owner)
        try:
            result = await run_script(
                script,
                job.syntax,
                cwd=cwd,
                variables=environ(values),
                # The log's future when its buffers are full: the output reader waits on it.
                on_line=lambda level, text: ctx.log.line(
                    text, step=ctx.idx, level=level, target=ctx.target
                ),
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
            return Outcome.canceled()
        if result.timed_out:
            return Outcome.timed_out(f"timed out after {step.timeout_seconds} s", result.outputs)
        if result.exit_code != 0:
            return Outcome.failed(f"the script exited with code {result.exit_code}", result.outputs)
        return Outcome.succeeded("", result.outputs)

    async def install_package(self, ctx: StepContext, target: Target, file: FeedFile) -> Path:
        """Extract the feed's ``file`` into the target's folder and switch ``current`` to it."""
        archive, version = file.path, file.version
        base = ctx.target_dir(target)
        folder = base / version
        # Extracted and handed to the sandbox user beside ``base``, in the server's own
        # folder, where no script can swap anything for a link while root works on it.
        staging = base.parent / f".{base.name}.{version}.incoming-{ctx.run.task_id}"
        owner = self._owner()
        await asyncio.to_thread(sandbox.adopt, base, owner)
        sandbox.private_folder(base, owner)
        shutil.rmtree(staging, ignore_errors=True)
        limits = ArchiveLimits.of(self.settings)
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
        await asyncio.to_thread(self._keep_versions, base, version)
        return folder

    async def check(self, machine: Target) -> Health:
        """The server itself: healthy while scripts may run and its data folder has room."""
        found = sandbox.status(self.settings)
        if not found.runs_scripts:
            return Health.failed(found.refusal())
        data = Path(self.settings.data_dir)
        usage = await asyncio.to_thread(shutil.disk_usage, data if data.exists() else Path("."))
        uname = os.uname()
        return judged(
            Health(HealthState.HEALTHY, "", f"{uname.sysname} {uname.release}", usage.free)
        )

    def close(self) -> None:
        """Nothing is kept open on the server itself."""

    def _keep_versions(self, base: Path, deployed: str) -> None:
        """Remove the versions beyond the newest few. Which versions Conveyor extracted is
        recorded beside ``base``, in the server's own folder: a folder a script made in
        ``base`` is never taken for one, and no script can edit the record."""
        record = base.parent / f".{base.name}.versions.json"
        try:
            history = [str(v) for v in json.loads(record.read_text())]
        except (OSError, ValueError, TypeError):
            history = []
        kept, stale = kept_versions(history, deployed, self.settings.keep_package_versions)
        for version in stale:
            old = base / version
            if old.is_symlink() or old.is_file():
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)
        partial = record.with_suffix(".incoming")
        partial.write_text(json.dumps(kept))
        os.replace(partial, record)
