"""Polling agents: administrators make enrolment tokens, list and revoke agents; agents enrol,
long-poll for work, stream output, finish jobs and download the package a job names.

Agent endpoints (``/agent/...``) take the agent's own credential in ``X-Agent-Credential``,
never a user's API key, and only ever see jobs of the agent's own target. No answer carries a
secret beyond the credential returned once by enrolment.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.domain.errors import NotFound
from conveyor.services import agents
from conveyor.services.packages import package_path

router = APIRouter(tags=["Agents"])

credential_header = APIKeyHeader(
    name="X-Agent-Credential",
    scheme_name="AgentCredential",  # beside the users' APIKeyHeader in the OpenAPI schema
    auto_error=False,
    description="An enrolled agent's credential",
)
# How long a poll waits for work before answering "none", and how often it looks meanwhile.
POLL_WAIT_SECONDS = 20.0
POLL_CHECK_SECONDS = 0.25
# How often a waiting poll checks that its agent is still not revoked.
REVOKED_CHECK_SECONDS = 2.0
MAX_LINES = 5000
MAX_LINE_CHARS = 64 * 1024


async def current_agent(
    services: ServicesDep,
    credential: Annotated[str | None, Depends(credential_header)] = None,
) -> agents.Agent:
    return await agents.authenticate(services, credential)


AgentDep = Annotated[agents.Agent, Depends(current_agent)]


# ---------------------------------------------------------------- administrators


class TokenRequest(BaseModel):
    target: str = Field(description="The agent target the token enrols an agent for")
    expires: str = Field(default="", description="How long it is valid: 30m, 2h, 1d (1 hour)")


@router.post("/agents/tokens", summary="A single-use enrolment token for an agent target")
async def create_token(
    body: TokenRequest, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await agents.create_token(services, caller, body.target, body.expires or None)


@router.get("/agents", summary="Enrolled agents: target, host, last poll, revoked")
async def list_agents(services: ServicesDep, caller: CallerDep) -> list[dict[str, Any]]:
    return await agents.list_agents(services, caller)


@router.post("/agents/{agent_id}/revoke", summary="Refuse an agent from now on")
async def revoke(agent_id: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await agents.revoke(services, caller, agent_id)


# ---------------------------------------------------------------- agents


class Machine(BaseModel):
    hostname: str = Field(default="", max_length=1000)
    os: str = Field(default="", max_length=1000)
    version: str = Field(default="", max_length=1000)
    free_disk_bytes: int | None = Field(default=None, ge=0)


class EnrolRequest(Machine):
    token: str = Field(max_length=200)


class PollRequest(Machine):
    # The jobs the agent runs now: any other it took is lost (it restarted) and fails.
    running: list[int] = Field(default_factory=list, max_length=1000)
    wait: float = Field(default=POLL_WAIT_SECONDS, ge=0, le=POLL_WAIT_SECONDS)


class LinesRequest(BaseModel):
    lines: list[tuple[str, Annotated[str, Field(max_length=MAX_LINE_CHARS)]]] = Field(
        default_factory=list, max_length=MAX_LINES
    )


class FinishRequest(BaseModel):
    result: dict[str, Any]


def _machine(body: Machine) -> dict[str, Any]:
    return body.model_dump(include={"hostname", "os", "version", "free_disk_bytes"})


@router.post("/agent/enrol", summary="Trade an enrolment token for this agent's credential")
async def enrol(body: EnrolRequest, services: ServicesDep) -> dict[str, Any]:
    return await agents.enrol(services, body.token, _machine(body))


@router.post("/agent/poll", summary="Wait for the next job of this agent's target")
async def poll(
    body: PollRequest, request: Request, services: ServicesDep, agent: AgentDep
) -> dict[str, Any]:
    """Every poll is a heartbeat; it answers as soon as a job is there, or empty after a wait
    short enough that an agent polling again is never taken for gone (a third of
    ``agent_offline_seconds`` at most). Only a new poll counts as a sign of life: a frozen
    agent's open request is no proof that it still runs."""
    await agents.heartbeat(services, agent, _machine(body))
    await agents.abandon_others(services, agent, body.running)
    credential = request.headers.get(credential_header.model.name)
    wait = min(body.wait, services.settings.agent_offline_seconds / 3)
    now = time.monotonic()
    deadline, checked = now + wait, now
    while True:
        if await agents.has_queued(services, agent):
            job = await agents.claim(services, agent)
            if job is not None:
                return {"job": job}
        now = time.monotonic()
        if now >= deadline or await request.is_disconnected():
            return {"job": None}
        if now - checked >= REVOKED_CHECK_SECONDS:
            # A revoked agent is refused now, not at the end of its wait.
            await agents.authenticate(services, credential)
            checked = now
        await asyncio.sleep(min(POLL_CHECK_SECONDS, max(deadline - now, 0)))


@router.post("/agent/jobs/{job_id}/lines", summary="Output lines of a running job (batched)")
async def lines(
    job_id: int, body: LinesRequest, services: ServicesDep, agent: AgentDep
) -> dict[str, Any]:
    """Also the running job's heartbeat: the answer says whether to stop it."""
    cancel = await agents.append_lines(services, agent, job_id, list(body.lines))
    return {"cancel": cancel}


@router.post("/agent/jobs/{job_id}/finish", summary="The result of a job")
async def finish(
    job_id: int, body: FinishRequest, services: ServicesDep, agent: AgentDep
) -> dict[str, Any]:
    await agents.finish(services, agent, job_id, body.result)
    return {"finished": job_id}


@router.get(
    "/agent/jobs/{job_id}/package",
    summary="The package file a package job of this agent names",
    response_class=FileResponse,
)
async def package(job_id: int, services: ServicesDep, agent: AgentDep) -> FileResponse:
    wanted = await agents.job_package(services, agent, job_id)
    path: Path = await package_path(services, str(wanted["package"]), str(wanted["version"]))
    if path.stat().st_size != wanted.get("size", path.stat().st_size):
        raise NotFound("the package file changed since the job was queued: deploy again")
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)
