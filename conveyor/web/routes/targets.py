"""The targets page: each environment's targets, and the workers by pool, with their health
(from the last check) and last deployment; "Check now" for those who may check them."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.api.routers.targets import health_checks
from conveyor.domain.documents import Target, key
from conveyor.services import targets as target_service
from conveyor.services.config import load
from conveyor.services.core import iso
from conveyor.services.targets import LastDeployment, TargetStatus, may_check
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, form_text, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
DONE = {"checked": "Checked: the table shows what the check found."}


@dataclass(frozen=True)
class Row:
    """One target in one section of the page."""

    status: TargetStatus
    last: LastDeployment | None
    may_check: bool

    @property
    def free_disk(self) -> str:
        return _size(self.status.recorded.free_disk_bytes)

    @property
    def checked_at(self) -> str | None:
        return iso(self.status.recorded.checked_at)


@dataclass(frozen=True)
class Section:
    title: str
    kind: str  # environment | pool
    rows: list[Row]


def _size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""  # pragma: no cover


@router.get("/targets")
async def target_page(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    environment = request.query_params.get("environment") or None
    statuses = await target_service.list_targets(services, caller, environment)
    model = (await load(services)).model
    documents: dict[str, Target] = {key(t.name): t for t in model.targets}

    def row(status: TargetStatus, env: str | None) -> Row:
        doc = documents.get(key(status.name))
        allowed = doc is not None and may_check(caller, doc).allowed
        return Row(status, status.last_deployment(env) if env else None, allowed)

    sections: list[Section] = []
    for env in model.environments:
        if environment and key(env.name) != key(environment):
            continue
        rows = [row(s, env.name) for s in statuses if key(env.name) in map(key, s.environments)]
        if rows:
            sections.append(Section(env.name, "environment", rows))
    pools: dict[str, list[Row]] = {}
    for status in statuses:
        if status.pool:
            pools.setdefault(status.pool, []).append(row(status, None))
    sections += [Section(f"Workers: pool {pool}", "pool", rows) for pool, rows in pools.items()]
    return render(
        request,
        "targets.html",
        title="Targets",
        sections=sections,
        environment=environment,
        environments=[e.name for e in model.environments],
        may_check_any=any(r.may_check for s in sections for r in s.rows),
        done_message=DONE.get(request.query_params.get("done", ""), ""),
    )


@router.post("/targets/check")
async def check_now(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    """Check one target (``name``) or every one the person may check, then show the page."""
    form = await request.form()
    name = form_text(form, "name") or None
    environment = form_text(form, "environment") or None
    await health_checks(request, services).check(caller, name)
    return redirect("/targets", environment=environment, done="checked")
