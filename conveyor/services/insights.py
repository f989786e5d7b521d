"""Delivery insights: the four DORA keys, deployment durations and approval waits, per project,
project group and environment over a range of time (the rules: ``conveyor.domain.insights``).

Each deployment's facts (whether it was a failure, its lead time, duration, approval waits,
when it was restored) are written when it ends (``conveyor.store.facts``), so that a report is
a plain aggregate over covering indexes (``conveyor.services.insights_sql``): one row per
project and environment, one per day, one per restore incident's pair, one per team.

Only the deployments the caller may see count (``DeploymentView`` for the project and the
environment: ``domain.visibility``), as in the deployment list.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, bindparam, text

from conveyor.domain import insights as ins
from conveyor.domain import permissions as perms
from conveyor.domain.errors import PermissionDenied, ValidationFailed
from conveyor.domain.visibility import DeploymentScope, deployment_scope
from conveyor.services.config import load_outline
from conveyor.services.core import Caller, Services, iso
from conveyor.services.documents import resolve
from conveyor.services.insights_sql import Dialect, sums_sql, waits_sql
from conveyor.store.documents import Loaded

P = perms.Permission


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class Filters:
    project: str | None = None
    group: str | None = None
    environment: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Line:
    """One row of the report: a project, a group, an environment or everything."""

    scope: str  # project | project_group | environment | overall
    name: str
    metrics: ins.Metrics
    group: str | None = None


@dataclass(frozen=True)
class Day:
    day: str
    deployments: int
    successes: int
    failures: int
    lead_time_seconds: float | None


@dataclass(frozen=True)
class Report:
    since: datetime
    until: datetime
    days: float
    overall: Line
    projects: list[Line]
    groups: list[Line]
    environments: list[Line]
    daily: list[Day]
    teams: list[ins.TeamWait]
    # What the filters could choose from (the caller's projects, groups, environments).
    choices: dict[str, list[str]]


def _scope(loaded: Loaded, caller: Caller) -> DeploymentScope:
    return deployment_scope(
        caller.principal,
        [perms.ProjectRef(p.name, p.group) for p in loaded.model.projects],
        [e.name for e in loaded.model.environments],
    )


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _where(
    loaded: Loaded, scope: DeploymentScope, projects: set[str] | None, environment: str | None
) -> str:
    """The visibility rule and the filters as SQL over ``d`` (row ids are our own integers)."""
    terms: list[str] = []
    every = {p.name for p in loaded.model.projects}
    wanted = projects if projects is not None else every
    for env_name in [e.name for e in loaded.model.environments]:
        if environment is not None and env_name != environment:
            continue
        visible = every if scope.everything else scope.projects_by_environment.get(env_name)
        if not visible:
            continue
        env_id = loaded.id_of("environments", env_name)
        names = wanted & visible
        ids = sorted(i for i in (loaded.id_of("projects", n) for n in names) if i is not None)
        if env_id is None or not ids:
            continue
        if scope.everything and projects is None:
            terms.append(f"d.environment_id = {int(env_id)}")
        else:
            terms.append(
                f"(d.environment_id = {int(env_id)} AND d.project_id IN "
                f"({', '.join(str(int(i)) for i in ids)}))"
            )
    if scope.everything and projects is None and environment is None:
        return ""  # also deployments of projects and environments since deleted
    return f"\n      AND ({' OR '.join(terms) or '1 = 0'})"


async def report(services: Services, caller: Caller, filters: Filters) -> Report:
    loaded = await load_outline(services)
    scope = _scope(loaded, caller)
    model = loaded.model
    # Authorise first: a project or environment named must be one whose deployments the
    # caller may see somewhere (what reading its deployments needs).
    projects: set[str] | None = None
    if filters.project:
        doc = resolve(loaded, "projects", filters.project)
        if not scope.everything and not any(
            doc.name in names for names in scope.projects_by_environment.values()
        ):
            raise PermissionDenied(
                f'You may not see the deployments of "{doc.name}": that needs DeploymentView '
                "for the project",
                permission=str(P.DeploymentView),
            )
        projects = {doc.name}
    environment = None
    if filters.environment:
        env = resolve(loaded, "environments", filters.environment)
        if not scope.everything and env.name not in scope.projects_by_environment:
            raise PermissionDenied(
                f'You may not see the deployments to "{env.name}": that needs DeploymentView '
                "for the environment",
                permission=str(P.DeploymentView),
            )
        environment = env.name
    if filters.group:
        group = resolve(loaded, "project_groups", filters.group)
        members = {p.name for p in model.projects if p.group == group.name}
        projects = members if projects is None else projects & members
    if scope.nothing and not scope.everything:
        raise PermissionDenied(
            "You may not see any deployment: insights need DeploymentView",
            permission=str(P.DeploymentView),
        )
    now = services.clock()
    try:
        since, until = ins.window(_aware(filters.since), _aware(filters.until), now)
    except ValueError as exc:
        raise ValidationFailed(f"{exc} (since {filters.since}, until {filters.until})") from exc
    where = _where(loaded, scope, projects, environment)
    dialect = Dialect(services.is_sqlite)
    params = {"since": since, "until": until}
    typed = [bindparam(n, type_=DateTime(timezone=True)) for n in params]
    async with services.read() as session:
        if not services.is_sqlite:
            # For this read's transaction only: compiling the statement (JIT) costs more than
            # it saves on these sums, and a plan cached for any range (the driver prepares
            # statements it runs often) may suit a day but not a year.
            await session.execute(text("SET LOCAL jit = off"))
            await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        days = {"since_day": _day(since), "until_day": _day(until)}
        sums = (
            await session.execute(
                text(sums_sql(dialect, where)).bindparams(*typed), {**params, **days}
            )
        ).all()
        waits = (
            await session.execute(
                text(waits_sql(where)).bindparams(*typed),
                {**params, "no_team": ins.NO_TEAM},
            )
        ).all()
    return _assemble(loaded, scope, since, until, sums, waits, environment, projects)


def _totals(row: tuple[Any, ...]) -> ins.Totals:
    """A row of ``sums_sql`` from its fifth column on (``n`` … ``open_count``)."""
    n, ok, bad, lc, ls, lw, dc, ds, rc, rs, oc = (v or 0 for v in row[4:15])
    return ins.Totals(
        int(n), int(ok), int(bad), int(lc), float(ls), float(lw),
        int(dc), float(ds), int(rc), float(rs), int(oc),
    )  # fmt: skip


def _assemble(
    loaded: Loaded,
    scope: DeploymentScope,
    since: datetime,
    until: datetime,
    sums: Sequence[Any],
    waits: Sequence[Any],
    environment: str | None,
    projects: set[str] | None,
) -> Report:
    model = loaded.model
    window = ins.Window(since, until)
    project_names = {loaded.id_of("projects", p.name): p.name for p in model.projects}
    group_of = {p.name: p.group for p in model.projects}
    env_names = {loaded.id_of("environments", e.name): e.name for e in model.environments}
    by_project: dict[str, ins.Totals] = {}
    by_env: dict[str, ins.Totals] = {}
    overall = ins.Totals()
    daily: list[Day] = []
    for row in sums:
        kind, project_id, environment_id, day = row[:4]
        totals = _totals(row)
        if kind == "day":
            lead = ins.mean(totals.lead_seconds, totals.lead_count)
            daily.append(Day(str(day), totals.deployments, totals.successes, totals.failures, lead))
            continue
        project = project_names.get(project_id) or f"Projects-{project_id}"
        env = env_names.get(environment_id) or f"Environments-{environment_id}"
        by_project.setdefault(project, ins.Totals()).add(totals)
        by_env.setdefault(env, ins.Totals()).add(totals)
        overall.add(totals)
    by_group: dict[str, ins.Totals] = {}
    for project, totals in by_project.items():
        by_group.setdefault(group_of.get(project, ""), ins.Totals()).add(totals)
    # Every project and environment the caller may see is listed, also those with nothing.
    visible_projects = [
        p.name
        for p in model.projects
        if (projects is None or p.name in projects)
        and (
            scope.everything
            or any(p.name in names for names in scope.projects_by_environment.values())
        )
    ]
    visible_envs = [
        e.name
        for e in model.environments
        if (environment is None or e.name == environment)
        and (scope.everything or e.name in scope.projects_by_environment)
    ]
    order = {name: i for i, name in enumerate(visible_projects)}
    shown = sorted(set(visible_projects) | set(by_project), key=lambda n: (order.get(n, 1e9), n))
    env_order = {name: i for i, name in enumerate(visible_envs)}
    envs = sorted(set(visible_envs) | set(by_env), key=lambda n: (env_order.get(n, 1e9), n))
    groups = [g.name for g in model.project_groups if any(group_of.get(p) == g.name for p in shown)]

    def line(kind: str, name: str, totals: ins.Totals | None, group: str | None = None) -> Line:
        return Line(kind, name, ins.metrics(totals or ins.Totals(), window), group)

    return Report(
        since=since,
        until=until,
        days=window.days,
        overall=line("overall", "All", overall),
        projects=[line("project", n, by_project.get(n), group_of.get(n)) for n in shown],
        groups=[line("project_group", g, by_group.get(g)) for g in groups],
        environments=[line("environment", e, by_env.get(e)) for e in envs],
        daily=sorted(daily, key=lambda d: d.day),
        teams=ins.rank_waits(
            ins.TeamWait(str(w.team), int(w.waits), float(w.seconds or 0)) for w in waits
        ),
        choices={
            "projects": [
                p.name
                for p in model.projects
                if scope.everything
                or any(p.name in names for names in scope.projects_by_environment.values())
            ],
            "project_groups": [g.name for g in model.project_groups],
            "environments": [
                e.name
                for e in model.environments
                if scope.everything or e.name in scope.projects_by_environment
            ],
        },
    )


# ---------------------------------------------------------------- shapes


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def metrics_json(m: ins.Metrics) -> dict[str, Any]:
    out = asdict(m)
    for name in ("lead_time_seconds", "time_to_restore_seconds", "duration_seconds"):
        out[name] = _round(out[name])
    for name in ("deployment_frequency", "change_failure_rate", "approvals_share_of_lead_time"):
        out[name] = _round(out[name], 4)
    return out


def line_json(item: Line) -> dict[str, Any]:
    head: dict[str, Any] = {"scope": item.scope, "name": item.name}
    if item.scope == "project":
        head["group"] = item.group
    return head | metrics_json(item.metrics)


def as_json(found: Report) -> dict[str, Any]:
    return {
        "since": iso(found.since),
        "until": iso(found.until),
        "days": round(found.days, 3),
        "overall": line_json(found.overall),
        "projects": [line_json(x) for x in found.projects],
        "project_groups": [line_json(x) for x in found.groups],
        "environments": [line_json(x) for x in found.environments],
        "daily": [
            asdict(d) | {"lead_time_seconds": _round(d.lead_time_seconds)} for d in found.daily
        ],
        "approval_waits": [
            {
                "team": w.team,
                "waits": w.waits,
                "seconds": round(w.seconds, 1),
                "mean_seconds": round(w.mean_seconds, 1),
            }
            for w in found.teams
        ],
    }


CSV_COLUMNS = (
    "scope",
    "name",
    "group",
    "deployments",
    "successes",
    "failures",
    "deployment_frequency",
    "lead_time_seconds",
    "lead_time_count",
    "change_failure_rate",
    "time_to_restore_seconds",
    "restored",
    "open_failures",
    "duration_seconds",
    "approvals_share_of_lead_time",
)


def as_csv(body: dict[str, Any]) -> str:
    """One row per line of the report (overall, groups, projects, environments), from the JSON
    shape, so that the API and the CLI write the same CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = [body["overall"], *body["project_groups"], *body["projects"], *body["environments"]]
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
    return buffer.getvalue()
