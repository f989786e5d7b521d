"""The ``ssh`` runner: scripts and packages on a machine reached over SSH (asyncssh), through
the connections of `conveyor.engine.ssh_connections`; packages: `conveyor.engine.ssh_packages`.

What a machine needs: bash, coreutils (sha256sum, mv -T), tar with gzip for .tar.gz packages,
python3 or unzip for .zip packages. Conveyor's files live below the target's ``work_dir``
(default ``~/.conveyor``) as `conveyor.domain.targets.Layout` says.

A script's variables never appear on a command line (``ps`` shows those to every user of the
machine): they travel in a 0600 file over SFTP, read and removed before the script starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import re
import shlex
from collections.abc import Awaitable
from pathlib import PurePosixPath
from typing import cast

import asyncssh

from conveyor.domain.documents import ScriptSyntax, Target, slugify
from conveyor.domain.errors import ConveyorError
from conveyor.domain.runtime import Outcome
from conveyor.domain.targets import Health, HealthState, Layout, judged
from conveyor.engine.runner import GRACE_SECONDS, SET_VARIABLE, Flow, lines
from conveyor.engine.ssh_connections import Connections, Link, connect
from conveyor.engine.ssh_packages import archive_format, bash, install
from conveyor.engine.steps.base import StepContext
from conveyor.engine.steps.runners import ScriptJob, environ, rendered
from conveyor.services.config import public_id
from conveyor.services.core import Services
from conveyor.services.packages import FeedFile

PID_LINE = re.compile(r"^##conveyor-pid (\d+)$")


class SSHRunner:
    """Runs on machines reached over SSH, one reused connection per target on this node."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.connections = Connections(services)

    # ------------------------------------------------------------ scripts

    async def run_script(self, ctx: StepContext, job: ScriptJob) -> Outcome:
        target = job.machine
        if target is None or target.kind != "ssh":
            raise ConveyorError("the ssh runner runs scripts on ssh targets only")
        script, values = await rendered(self.services.settings, ctx, job)
        async with self.connections.use(target) as link:
            layout = Layout(link.root)
            attempt = ctx.run.steps[ctx.idx].attempt
            task = public_id("tasks", ctx.run.task_id)
            work = posixpath.join(layout.work(task, ctx.idx, attempt), slugify(target.name))
            if job.installed is not None:
                cwd = str(job.installed)
            elif job.on_target:
                cwd = layout.project(ctx.run.environment.name, ctx.run.project.name)
            else:
                cwd = posixpath.join(work, "cwd")
            # One command per script: each costs a login shell on the machine (its rc files).
            await self._upload_script(link, work, cwd, script, job.syntax, environ(values))
            return await self._run(ctx, link, work)

    async def _upload_script(
        self,
        link: Link,
        work: str,
        cwd: str,
        script: str,
        syntax: ScriptSyntax,
        variables: dict[str, str],
    ) -> None:
        """The step's private folder (0700) with the script, its variables (NUL-separated
        ``NAME=value``) and the wrapper that starts it, each 0600, through SFTP."""
        suffix, interpreter = (
            (".py", "python3 -u")
            if syntax == ScriptSyntax.PYTHON
            else (".sh", "bash --noprofile --norc -e")
        )
        env_file = posixpath.join(work, "variables")
        script_file = posixpath.join(work, f"script{suffix}")
        q = shlex.quote
        # The shell sshd started is the leader of its own process group: its pid (printed
        # first) is what a cancel kills, with everything the script started. It removes the
        # variables as soon as they are read, and the whole folder when the script ends.
        wrapper = "\n".join(
            [
                "printf '##conveyor-pid %s\\n' \"$$\"",
                "while IFS= read -r -d '' pair; do export \"$pair\" 2>/dev/null || true; done"
                f" < {q(env_file)}",
                f"rm -f -- {q(env_file)}",
                f"mkdir -p -- {q(cwd)} && cd -- {q(cwd)} || exit 1",
                f"{interpreter} {q(script_file)} </dev/null",
                "code=$?",
                f"cd / && rm -rf -- {q(work)}; rmdir -- {q(posixpath.dirname(work))} 2>/dev/null",
                'exit "$code"',
                "",
            ]
        )
        pairs = "".join(
            f"{name}={value}\0" for name, value in variables.items() if "\0" not in value
        )
        sftp = await link.sftp()
        files = {
            env_file: pairs,
            script_file: script,
            posixpath.join(work, "run.sh"): wrapper,
        }
        try:
            await sftp.makedirs(posixpath.dirname(work), exist_ok=True)
            if await sftp.exists(work):  # left by a node that died while running it
                await sftp.rmtree(work)
            await sftp.mkdir(work, asyncssh.SFTPAttrs(permissions=0o700))
            await asyncio.gather(*(_write(sftp, path, text) for path, text in files.items()))
        except (asyncssh.Error, OSError) as exc:
            if not link.alive:
                raise link.lost(exc) from None
            raise ConveyorError(f"cannot write the script on {link.target.name}: {exc}") from None

    async def _run(self, ctx: StepContext, link: Link, work: str) -> Outcome:
        """Run the uploaded script: output into the log as it comes, a timeout, a cancel."""
        step = ctx.step
        outputs: dict[str, str] = {}
        pid: list[int] = []
        started = asyncio.Event()  # the wrapper said its pid

        def emit(text: str, level: str) -> Awaitable[None] | None:
            if level == "info" and not pid:
                found = PID_LINE.match(text)
                if found:
                    pid.append(int(found.group(1)))
                    started.set()
                    return None
            match = SET_VARIABLE.match(text) if text.startswith("##conveyor[") else None
            if match:
                outputs[match.group("name")] = match.group("value")
                text, level = f"Output variable {match.group('name')} set", "info"
            return ctx.log.line(text, step=ctx.idx, level=level, target=ctx.target)

        flow = Flow()

        async def pump(stream: asyncssh.SSHReader[bytes], level: str) -> None:
            # ``lines`` only ever calls ``read(n)``, which an SSH stream has too.
            with contextlib.suppress(asyncssh.Error, OSError):
                async for text in lines(cast(asyncio.StreamReader, stream)):
                    await flow.passed(emit(text, level))

        command = f"exec bash --noprofile --norc {shlex.quote(posixpath.join(work, 'run.sh'))}"
        async with link.sessions:
            try:
                process = await link.conn.create_process(command, encoding=None)
            except (asyncssh.Error, OSError) as exc:
                raise link.lost(exc) from None
            process.stdin.write_eof()
            pumps = asyncio.gather(pump(process.stdout, "info"), pump(process.stderr, "warn"))
            waiter = asyncio.ensure_future(process.wait_closed())
            canceled = asyncio.ensure_future(ctx.cancel.wait())
            stopped = ""
            try:
                done, _ = await asyncio.wait(
                    {waiter, canceled},
                    timeout=step.timeout_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if waiter not in done:
                    stopped = "canceled" if canceled in done else "timed out"
                    with contextlib.suppress(TimeoutError):  # canceled as it starts
                        await asyncio.wait_for(started.wait(), GRACE_SECONDS)
                    await self._stop_group(link, pid[0] if pid else None, work)
                    with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
                        await asyncio.wait_for(asyncio.shield(waiter), GRACE_SECONDS * 2)
                await flow.drained(pumps)
            finally:
                canceled.cancel()
                if not waiter.done():
                    process.close()
                    waiter.cancel()
        if stopped == "canceled":
            return Outcome.canceled()
        code, killed = process.exit_status, process.exit_signal
        if code is None and killed is None and not link.alive:  # no word from the machine
            raise link.lost()
        if stopped:
            return Outcome.timed_out(f"timed out after {step.timeout_seconds} s", outputs)
        if killed is not None:
            return Outcome.failed(f"the script was killed by SIG{killed[0]}", outputs)
        if code is None:
            return Outcome.failed("the script ended without an exit code", outputs)
        if code != 0:
            return Outcome.failed(f"the script exited with code {code}", outputs)
        return Outcome.succeeded("", outputs)

    async def _stop_group(self, link: Link, pid: int | None, work: str) -> None:
        """TERM the script's process group, KILL what is left after a grace period, remove
        its folder. Not one of the target's sessions: the step holds one already, and the
        limit may be one."""
        if pid is None or not link.alive:
            return
        group = f"-{pid}"
        script = (
            f"kill -TERM -- {group} 2>/dev/null\n"
            f"for _ in $(seq {int(GRACE_SECONDS * 10)}); do\n"
            f"  kill -0 -- {group} 2>/dev/null || break; sleep 0.1\n"
            "done\n"
            f"kill -KILL -- {group} 2>/dev/null\n"
            f"rm -rf -- {shlex.quote(work)}; rmdir -- {shlex.quote(posixpath.dirname(work))}"
            " 2>/dev/null; true\n"
        )
        with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
            await asyncio.wait_for(link.conn.run(bash(script)), GRACE_SECONDS + 10)

    # ------------------------------------------------------------ packages

    async def install_package(
        self, ctx: StepContext, target: Target, file: FeedFile
    ) -> PurePosixPath:
        archive_format(file.path.name)  # refused before anything is done
        async with self.connections.use(target) as link:
            return await install(link, ctx, file, self.services.settings.keep_package_versions)

    # ------------------------------------------------------------ health

    async def check(self, machine: Target) -> Health:
        """A fresh connection (a pooled one may outlive a machine that no longer accepts
        new ones): its OS and the free space where Conveyor keeps its files."""
        try:
            link = await connect(self.services, machine)
        except ConveyorError as exc:
            return Health.failed(exc.message)
        try:
            done = await link.run(
                f"uname -sr && df -Pk -- {shlex.quote(link.root)} | tail -n 1",
                check="cannot read the machine's OS and free disk",
            )
        except ConveyorError as exc:
            return Health.failed(exc.message)
        finally:
            link.close()
        said = str(done.stdout or "").strip().splitlines()
        os_name = said[0] if said else ""
        fields = said[-1].split() if len(said) > 1 else []
        free = int(fields[3]) * 1024 if len(fields) > 3 and fields[3].isdigit() else None
        return judged(Health(HealthState.HEALTHY, "", os_name, free))

    def close(self) -> None:
        self.connections.close()


async def _write(sftp: asyncssh.SFTPClient, path: str, text: str) -> None:
    attrs = asyncssh.SFTPAttrs(permissions=0o600)
    async with sftp.open(path, "wb", attrs) as handle:
        await handle.write(text.encode("utf-8"))
