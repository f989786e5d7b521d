"""Run a script as a real subprocess: its own process group, output streamed line by line,
a timeout, cancellation, and output variables from ``##conveyor[setVariable ...]`` lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.domain.documents import ScriptSyntax

SET_VARIABLE = re.compile(
    r"""^##conveyor\[setVariable\s+name=(?P<q1>['"])(?P<name>.*?)(?P=q1)\s+"""
    r"""value=(?P<q2>['"])(?P<value>.*?)(?P=q2)\s*\]\s*$"""
)
# How long a process group gets to stop after SIGTERM before SIGKILL.
GRACE_SECONDS = 3.0


@dataclass
class ScriptResult:
    exit_code: int | None
    timed_out: bool = False
    canceled: bool = False
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.canceled


def interpreter(syntax: ScriptSyntax) -> tuple[list[str], str]:
    if syntax == ScriptSyntax.PYTHON:
        return [sys.executable if Path(sys.executable).exists() else "python3", "-u"], ".py"
    return ["bash", "--noprofile", "--norc", "-e"], ".sh"


async def run_script(
    body: str,
    syntax: ScriptSyntax,
    *,
    cwd: Path,
    env: Mapping[str, str],
    on_line: Callable[[str, str], None],
    timeout_seconds: float | None,
    cancel: asyncio.Event,
    script_dir: Path,
) -> ScriptResult:
    """Write the script to a file and run it; ``on_line(level, text)`` gets each output line."""
    command, suffix = interpreter(syntax)
    script_dir.mkdir(parents=True, exist_ok=True)
    script = script_dir / f"script{suffix}"
    script.write_text(body, encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        *command,
        str(script),
        cwd=str(cwd),
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own session and process group, so cancel and timeout reach every child it starts.
        start_new_session=True,
    )
    result = ScriptResult(exit_code=None)

    async def pump(stream: asyncio.StreamReader | None, level: str) -> None:
        if stream is None:
            return
        while True:
            raw = await stream.readline()
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            match = SET_VARIABLE.match(line)
            if match:
                result.outputs[match.group("name")] = match.group("value")
                on_line("info", f"Output variable {match.group('name')} set")
                continue
            on_line(level, line)

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
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pumps, timeout=GRACE_SECONDS)
    finally:
        canceled.cancel()
        if process.returncode is None:
            await _stop_group(process)
    return result


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
