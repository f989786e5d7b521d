"""Probes for load balancers and orchestrators: ``/healthz`` (the process answers; no database)
and ``/readyz`` (the database answers and its schema is current). Neither needs a key: they say
nothing beyond "up" and a reason (docs/operations.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from conveyor import __version__
from conveyor.api.deps import ServicesDep
from conveyor.services.metrics_ready import readiness

router = APIRouter(tags=["System"])


@router.get("/healthz", summary="Liveness: the process answers (the database is not asked)")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    summary="Readiness: the database answers and its migrations are at this version's head",
    responses={503: {"description": "Not ready: `reason` says why"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    found = await readiness(services)
    body = {
        "status": "ready" if found.ready else "not ready",
        "reason": found.reason,
        "schema": found.schema,
        "expected_schema": found.expected,
    }
    return JSONResponse(body, status_code=200 if found.ready else 503)
