"""The agent's life: enrol once, keep its credential, then poll for work until stopped.

The credential is kept in ``agent.json`` in the work folder (0600), so a restarted agent goes on
without a token. A server that is down or restarting is waited for, with a growing pause; only
the server refusing the agent (revoked, or a token already used or expired) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conveyor import __version__
from conveyor.agent.client import AgentClient, Refused, Unreachable
from conveyor.agent.work import Worker
from conveyor.settings import Settings

STATE_FILE = "agent.json"
DEFAULT_WORK_DIR = Path("~/.conveyor-agent")
MAX_BACKOFF_SECONDS = 5.0
FIRST_BACKOFF_SECONDS = 0.5


class AgentError(Exception):
    """The agent cannot go on; the message says what to do. ``refused``: the server said no
    (revoked, a token used or expired), rather than a mistake in how it was started."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class Enrolment:
    server: str
    credential: str
    agent: str
    target: str


def machine(root: Path) -> dict[str, Any]:
    """What every poll reports of this machine."""
    uname = os.uname()
    try:
        free: int | None = shutil.disk_usage(root).free
    except OSError:
        free = None
    return {
        "hostname": socket.gethostname(),
        "os": f"{uname.sysname} {uname.release}",
        "version": __version__,
        "free_disk_bytes": free,
    }


def load_enrolment(root: Path) -> Enrolment | None:
    path = root / STATE_FILE
    try:
        data = json.loads(path.read_text())
        return Enrolment(data["server"], data["credential"], data["agent"], data["target"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AgentError(
            f"{path} is unreadable ({exc}): remove it and enrol again with a new token"
        ) from exc


def save_enrolment(root: Path, enrolment: Enrolment) -> None:
    path = root / STATE_FILE
    partial = path.with_suffix(".incoming")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(enrolment.__dict__, handle)
    os.replace(partial, path)


async def enrolled(
    server: str, token: str | None, root: Path, say: Callable[[str], None]
) -> Enrolment:
    """This agent's enrolment: the one kept in ``root``, or a new one made with ``token``."""
    kept = load_enrolment(root)
    if kept is not None:
        if token:
            say(
                f"Already enrolled as {kept.agent} for target {kept.target}: the token is not "
                f"needed (remove {root / STATE_FILE} to enrol again)"
            )
        return replace(kept, server=server)
    if not token:
        raise AgentError(
            f"this agent has not enrolled yet (no {root / STATE_FILE}): start it once with "
            "--token TOKEN (an administrator makes one: conveyor agent token create --target NAME)"
        )
    client = AgentClient(server)
    try:
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                answer = await client.enrol(token, machine(root))
                break
            except Unreachable as exc:
                say(f"{exc}; trying again in {backoff:g} s")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Refused as exc:
                raise AgentError(
                    f"the server refused to enrol this agent: {exc}", refused=True
                ) from exc
    finally:
        await client.close()
    enrolment = Enrolment(server, answer["credential"], answer["agent"], answer["target"])
    save_enrolment(root, enrolment)
    say(f"Enrolled as {enrolment.agent} for target {enrolment.target}")
    return enrolment


class Agent:
    """Polls for jobs and runs each in a task of its own until ``stopping`` is set."""

    def __init__(self, enrolment: Enrolment, root: Path, say: Callable[[str], None]) -> None:
        self.enrolment = enrolment
        self.root = root
        self.say = say
        self.client = AgentClient(enrolment.server, enrolment.credential)
        self.worker = Worker(root, self.client, Settings())
        self.running: dict[int, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()

    async def serve(self) -> None:
        self.say(
            f"Agent {self.enrolment.agent} of target {self.enrolment.target} polling "
            f"{self.enrolment.server} for work"
        )
        backoff = FIRST_BACKOFF_SECONDS
        try:
            while not self.stopping.is_set():
                try:
                    job = await self._poll()
                    if backoff > FIRST_BACKOFF_SECONDS:
                        self.say(f"Reached {self.enrolment.server} again")
                    backoff = FIRST_BACKOFF_SECONDS
                except Unreachable as exc:
                    self.say(f"{exc}; trying again in {backoff:g} s")
                    await self._pause(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                    continue
                except Refused as exc:
                    raise AgentError(f"the server refused this agent: {exc}", refused=True) from exc
                if job is not None:
                    job_id = int(job["id"])
                    self.running[job_id] = asyncio.create_task(self._carry_out(job))
        finally:
            self.stopping.set()
            if self.running:
                await asyncio.gather(*self.running.values(), return_exceptions=True)
            await self.client.close()

    async def _poll(self) -> dict[str, Any] | None:
        poll = asyncio.ensure_future(self.client.poll(machine(self.root), list(self.running)))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not poll.done():
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
            return None
        return poll.result()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _carry_out(self, job: dict[str, Any]) -> None:
        job_id = int(job["id"])
        try:
            result = await self.worker.run(job, self.stopping)
            await self._finish(job_id, result)
        finally:
            self.running.pop(job_id, None)

    async def _finish(self, job_id: int, result: dict[str, Any]) -> None:
        """Report the result, waiting out a server restart (a bounded while)."""
        backoff = FIRST_BACKOFF_SECONDS
        for _ in range(30):
            try:
                await self.client.finish(job_id, result)
                return
            except Unreachable:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except (Refused, LookupError):  # revoked, or nobody waits for it any more
                return


async def run_agent(
    server: str, token: str | None, work_dir: Path, say: Callable[[str], None]
) -> None:
    root = work_dir.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    enrolment = await enrolled(server.rstrip("/"), token, root, say)
    agent = Agent(enrolment, root, say)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, agent.stopping.set)
    await agent.serve()
