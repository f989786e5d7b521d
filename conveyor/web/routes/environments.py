"""Environments (with their checks, in words, and what each project has there now) and
lifecycles (phases, and per environment what release of each project it holds)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import channels as ch
from conveyor.domain import permissions as perms
from conveyor.domain.documents import Environment, EnvironmentChecks, Lifecycle, Phase, key
from conveyor.domain.errors import PermissionDenied
from conveyor.services import deployment_views
from conveyor.services.config import load
from conveyor.services.core import Caller
from conveyor.services.deployment_views import Board, BoardCell
from conveyor.services.documents import may_view
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
P = perms.Permission
DAYS = {"mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat"}
DAYS["sun"] = "Sun"


def _refuse_unless(caller: Caller, permission: P, shown: bool) -> None:
    """A page of nothing to someone who holds the permission nowhere is a refusal, with why."""
    decision = perms.authorize(caller.principal, permission)
    if not shown and not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(permission))


def check_lines(checks: EnvironmentChecks) -> list[str]:
    """One set of an environment's checks, in sentences."""
    lines = []
    if checks.approval is not None:
        teams = " and ".join(
            f"{q.quorum} of {q.team}" if q.quorum > 1 else q.team for q in checks.approval.teams
        )
        rule = f"Approval by {teams}"
        nots = []
        if checks.approval.block_creator:
            nots.append("the person who queued it")
        if checks.approval.block_commit_authors:
            nots.append("the authors of the release's commits")
        if nots:
            rule += " (not " + " nor ".join(nots) + ")"
        if checks.approval.fields:
            rule += "; each approver answers " + ", ".join(
                f.label or f.name for f in checks.approval.fields
            )
        lines.append(rule + ". Approvals can be given ahead of time.")
    if checks.windows:
        spans = [f"{_days(w.days)} {w.start} to {w.end} ({w.time_zone})" for w in checks.windows]
        lines.append("Deployments start only in: " + "; ".join(spans) + ".")
    for freeze in checks.freezes:
        text = f"Freeze {freeze.name}: from {freeze.start} until {freeze.end}"
        lines.append(text + (f" ({freeze.description})." if freeze.description else "."))
    if checks.run_latest:
        lines.append(
            "Run latest: queuing a deployment cancels the older queued ones of its project."
        )
    return lines


def _days(days: tuple[str, ...]) -> str:
    return ", ".join(DAYS.get(d.lower(), d) for d in days) if days else "every day"


@dataclass(frozen=True)
class CheckSet:
    applies_to: str
    lines: list[str]


@dataclass(frozen=True)
class EnvironmentRow:
    environment: Environment
    checks: list[CheckSet]
    holds: list[tuple[str, BoardCell]]  # (project, what it has there now)


@router.get("/environments")
async def environments_page(
    request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    model = (await load(services)).model
    shown = [e for e in model.environments if may_view(caller, model, "environments", e)]
    _refuse_unless(caller, P.EnvironmentView, bool(shown))
    board = await deployment_views.board(services, caller)
    rows = [
        EnvironmentRow(
            env,
            [
                CheckSet(
                    "projects of " + ", ".join(c.project_groups)
                    if c.project_groups
                    else "every project",
                    check_lines(c),
                )
                for c in env.checks
            ],
            _holds(board, env.name, board.projects),
        )
        for env in shown
    ]
    return render(
        request,
        "environments.html",
        title="Environments",
        rows=rows,
        may_lifecycles=perms.authorize(caller.principal, P.LifecycleView).allowed,
        may_targets=perms.authorize(caller.principal, P.MachineView).allowed,
    )


def _holds(board: Board, environment: str, projects: list[str]) -> list[tuple[str, BoardCell]]:
    return [
        (project, cell)
        for project in projects
        if (cell := board.cells.get((project, environment))) is not None
    ]


@dataclass(frozen=True)
class PhaseRow:
    phase: Phase
    environments: list[tuple[str, list[tuple[str, BoardCell]]]]


@dataclass(frozen=True)
class LifecycleRow:
    lifecycle: Lifecycle
    projects: list[str]
    phases: list[PhaseRow]


@router.get("/lifecycles")
async def lifecycles_page(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    model = (await load(services)).model
    shown = [lc for lc in model.lifecycles if may_view(caller, model, "lifecycles", lc)]
    _refuse_unless(caller, P.LifecycleView, bool(shown))
    board = await deployment_views.board(services, caller)
    visible = set(board.projects)
    rows = []
    for lifecycle in shown:
        # A project uses it as its own lifecycle or as one of its channels'.
        projects = [
            p.name
            for p in model.projects
            if p.name in visible and key(lifecycle.name) in {key(n) for n in ch.lifecycles_of(p)}
        ]
        phases = [
            PhaseRow(phase, [(env, _holds(board, env, projects)) for env in phase.environments])
            for phase in lifecycle.phases
        ]
        rows.append(LifecycleRow(lifecycle, projects, phases))
    return render(request, "lifecycles.html", title="Lifecycles", rows=rows)
