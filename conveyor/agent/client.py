"""The agent's side of the API: enrol once, then poll, stream output and finish jobs with the
agent's own credential (header ``X-Agent-Credential``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

# A poll waits this long on the server for work; the HTTP timeout leaves room beyond it.
POLL_WAIT_SECONDS = 20.0
TIMEOUT_SECONDS = 30.0


class Refused(Exception):
    """The server refused this agent (its token or credential): retrying cannot help."""


class Unreachable(Exception):
    """The server could not be reached or failed: try again later."""


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"the server answered {response.status_code}"


class AgentClient:
    def __init__(self, server: str, credential: str | None = None) -> None:
        self.server = server.rstrip("/")
        headers = {"User-Agent": "conveyor-agent"}
        if credential:
            headers["X-Agent-Credential"] = credential
        self.http = httpx.AsyncClient(
            base_url=self.server + "/api/v1", headers=headers, timeout=TIMEOUT_SECONDS
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def _post(self, path: str, body: dict[str, Any], wait: float | None = None) -> Any:
        try:
            response = await self.http.post(
                path, json=body, timeout=wait if wait is not None else TIMEOUT_SECONDS
            )
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the Conveyor server at {self.server} ({exc.__class__.__name__})"
            ) from exc
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> Any:
        if response.status_code in (401, 403):
            raise Refused(_message(response))
        if response.status_code == 404:
            raise LookupError(_message(response))
        if response.status_code >= 400:
            raise Unreachable(f"{_message(response)} ({response.status_code})")
        return response.json()

    async def enrol(self, token: str, machine: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self._post("/agent/enrol", {"token": token, **machine})
        return answer

    async def poll(self, machine: dict[str, Any], running: list[int]) -> dict[str, Any] | None:
        """The next job of this agent's target, or None after the server's wait."""
        body = {**machine, "running": running, "wait": POLL_WAIT_SECONDS}
        answer = await self._post("/agent/poll", body, wait=POLL_WAIT_SECONDS + TIMEOUT_SECONDS)
        job: dict[str, Any] | None = answer.get("job")
        return job

    async def lines(self, job_id: int, lines: list[tuple[str, str]]) -> bool:
        """Send output lines (or none: a heartbeat); whether the job is to stop."""
        answer = await self._post(f"/agent/jobs/{job_id}/lines", {"lines": lines})
        return bool(answer.get("cancel"))

    async def finish(self, job_id: int, result: dict[str, Any]) -> None:
        await self._post(f"/agent/jobs/{job_id}/finish", {"result": result})

    async def download(self, job_id: int, destination: Path) -> str:
        """The package file of a package job, to ``destination`` (0600); its sha256."""
        partial = destination.with_name(destination.name + ".incoming")
        digest = hashlib.sha256()
        try:
            async with self.http.stream(
                "GET", f"/agent/jobs/{job_id}/package", timeout=TIMEOUT_SECONDS * 10
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._answer(response)
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    async for chunk in response.aiter_bytes(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise Unreachable(f"the download from {self.server} broke off: {exc}") from exc
        os.replace(partial, destination)
        return digest.hexdigest()
