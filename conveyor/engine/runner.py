"""Run a script as a real subprocess: in the sandbox (``engine/sandbox.py``) when there is one,
its own process group, output streamed line by line (a line longer than ``MAX_LINE`` is split,
never fatal), a timeout, cancellation, and output variables from
``##conveyor[setVariable ...]`` lines."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import signal
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.domain.documents import ScriptSyntax
from conveyor.engine.sandbox import TARGET, WORK, Owner, environment, inside, wrap
from conveyor.settings import Settings

SET_VARIABLE = re.compile(
    r"""^##conveyor\[setVariable\s+name=(?P<q1>['"])(?P<name>.*?)(?P=q1)\s+"""
    r"""value=(?P<q2>['"])(?P<value>.*?)(?P=q2)\s*\]\s*$"""
)
# How long a process group gets to stop after SIGTERM before SIGKILL.
GRACE_SECONDS = 3.0
# The longest a finished script's remaining output is read for, however much keeps coming.
DRAIN_SECONDS = 30.0
# Output is read in chunks; a line longer than this is logged in pieces of this many characters.
MAX_LINE = 64 * 1024
CHUNK = 64 * 1024


@dataclass
class ScriptResult:
    exit_code: int | None
    timed_out: bool = False
    canceled: bool = False
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.canceled


@dataclass(frozen=True)
class Isolation:
    """How a script is run: in the sandbox (as ``owner`` when the server is root) or not."""

    settings: Settings
    sandboxed: bool
    owner: Owner | None

    def mounts(self, work: Path, target: Path | None) -> dict[Path, Path]:
        """Host folder -> where the script sees it (the same place when not sandboxed)."""
        if not self.sandboxed:
            return {work: work} | ({target: target} if target else {})
        return {work: WORK} | ({target: TARGET} if target else {})


def interpreter(syntax: ScriptSyntax) -> tuple[list[str], str]:
    if syntax == ScriptSyntax.PYTHON:
        # The server's own interpreter itself, not its virtual environment (the sandbox shows
        # the interpreter's installation read-only, and nothing of the server's packages).
        real = os.path.realpath(sys.executable)
        return [real if Path(real).exists() else "python3", "-u"], ".py"
    return ["bash", "--noprofile", "--norc", "-e"], ".sh"


def write_private(path: Path, body: str, owner: Owner | None) -> None:
    """The script file: 0600 from the start, owned by the user that runs it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        if owner is not None:
            os.fchown(handle.fileno(), owner.uid, owner.gid)
        handle.write(body)


async def run_script(
    body: str,
    syntax: ScriptSyntax,
    *,
    cwd: Path,
    variables: Mapping[str, str],
    on_line: Callable[[str, str], Awaitable[None] | None],
    timeout_seconds: float | None,
    cancel: asyncio.Event,
    script_dir: Path,
    isolation: Isolation,
    target_dir: Path | None = None,
) -> ScriptResult:
    """Write the script to ``script_dir`` (a private folder of this run) and run it in ``cwd``;
    in the sandbox it sees ``script_dir`` (as ``WORK``) and ``target_dir`` (as ``TARGET``) and
    nothing else of the server's. ``on_line(level, text)`` gets each output line; when it
    returns an awaitable (the log's buffers are full), reading waits for it, and so does the
    script once its pipe is full: back-pressure instead of unbounded memory."""
    async with script_slot(isolation.settings, cancel) as started:
        if not started:  # canceled while waiting for a free slot
            return ScriptResult(exit_code=None, canceled=True)
        command, suffix = interpreter(syntax)
        script = script_dir / f"script{suffix}"
        write_private(script, body, isolation.owner if isolation.sandboxed else None)
        mounts = isolation.mounts(script_dir, target_dir)
        env = environment(
            variables, Path(inside(script_dir, mounts)), sandboxed=isolation.sandboxed
        )
        argv = [*command, inside(script, mounts)]
        if isolation.sandboxed:
            argv = wrap(
                isolation.settings,
                isolation.owner,
                argv,
                cwd=inside(cwd, mounts),
                mounts=mounts,
                env=env,
            )
        process = await asyncio.create_subprocess_exec(
            *argv,
            # In the sandbox, bubblewrap sets the working folder and environment itself.
            cwd="/" if isolation.sandboxed else str(cwd),
            env={} if isolation.sandboxed else env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own session and process group, so cancel and timeout reach every child it starts.
            start_new_session=True,
        )
        result = ScriptResult(exit_code=None)

        def emit(line: str, level: str) -> Awaitable[None] | None:
            # Cheap test first: nearly no line is an output variable.
            match = SET_VARIABLE.match(line) if line.startswith("##conveyor[") else None
            if match:
                result.outputs[match.group("name")] = match.group("value")
                return on_line("info", f"Output variable {match.group('name')} set")
            return on_line(level, line)

        flow = Flow()

        async def pump(stream: asyncio.StreamReader | None, level: str) -> None:
            if stream is None:
                return
            async for line in lines(stream):
                await flow.passed(emit(line, level))

        pumps = asyncio.gather(pump(process.stdout, "info"), pump(process.stderr, "warn"))
        waiter = asyncio.ensure_future(process.wait())
        canceled = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, canceled}, timeout=timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                if canceled in done:
                    result.canceled = True
                else:
                    result.timed_out = True
                await _stop_group(process)
            result.exit_code = await process.wait()
            await flow.drained(pumps)
        finally:
            canceled.cancel()
            if process.returncode is None:
                await _stop_group(process)
        return result


class Flow:
    """Output on its way from a finished script to the log. What is still in the pipes is read
    for as long as it keeps coming (or the log is taking it): only a pipe that stays silent for
    ``GRACE_SECONDS``, held open by a child that outlived the script, is given up on. A fixed
    grace instead lost the end of a long output on a busy machine."""

    def __init__(self) -> None:
        self.lines = 0
        self.waiting = False  # on the log (its buffers full): busy, not silent

    async def passed(self, full: Awaitable[None] | None) -> None:
        if full is not None:
            self.waiting = True
            try:
                await full
            finally:
                self.waiting = False
        self.lines += 1

    async def drained(self, pumps: asyncio.Future[Any]) -> None:
        # What a pipe holds is bounded (its buffer and the reader's): it drains in far less
        # than DRAIN_SECONDS; a child that escaped the process group and keeps writing does not.
        deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
        while True:
            seen = self.lines
            try:
                await asyncio.wait_for(asyncio.shield(pumps), GRACE_SECONDS)
                return
            except TimeoutError:
                silent = self.lines == seen and not self.waiting
                if silent or asyncio.get_running_loop().time() > deadline:
                    pumps.cancel()
                    return


# One semaphore per event loop (each test has its own loop; a server has one).
_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def script_slots(settings: Settings) -> int:
    """How many scripts run at once on this node: scripts mostly wait (on a remote service, a
    copy, a sleep), so many share a core; 50 per core keeps a start-up burst and CPU-bound
    scripts in check while 100 deployments run at once on 2 cores."""
    return settings.script_slots or 50 * (os.cpu_count() or 1)


@contextlib.asynccontextmanager
async def script_slot(settings: Settings, cancel: asyncio.Event) -> AsyncIterator[bool]:
    """A slot to run a script in; yields False when ``cancel`` came first."""
    loop = asyncio.get_running_loop()
    semaphore = _SLOTS.get(loop)
    if semaphore is None:
        semaphore = _SLOTS[loop] = asyncio.Semaphore(script_slots(settings))
    acquiring = asyncio.ensure_future(semaphore.acquire())
    canceled = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({acquiring, canceled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        canceled.cancel()
        if not acquiring.done():
            acquiring.cancel()
    if acquiring.cancelled():
        yield False
        return
    try:
        yield True
    finally:
        semaphore.release()


async def lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    """Lines of a stream read in chunks; a line over ``MAX_LINE`` characters comes in pieces,
    so one huge line neither fails the step nor loses the output after it."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        chunk = await stream.read(CHUNK)
        pending += decoder.decode(chunk, final=not chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            for piece in _pieces(line.rstrip("\r")):
                yield piece
        while len(pending) > MAX_LINE:
            yield pending[:MAX_LINE]
            pending = pending[MAX_LINE:]
        # A read returns at once while the pipe holds data: without a turn here, a script
        # flooding output would keep the event loop (requests, other tasks, the log writer).
        await asyncio.sleep(0)
        if not chunk:
            if pending:
                yield pending.rstrip("\r")
            return


def _pieces(line: str) -> list[str]:
    return [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)] or [""]


async def _stop_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), timeout=GRACE_SECONDS)
        except TimeoutError:
            continue
        # The leader exited; make sure nothing it started lingers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return
