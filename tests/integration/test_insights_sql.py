"""Insights computed in SQL, on SQLite and PostgreSQL: the constructed history of
tests/unit/test_insights.py put in the tables gives the numbers worked out there by hand, and
only the deployments the caller may see count."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text

from conveyor.domain import insights as ins
from conveyor.domain.errors import NotFound, PermissionDenied, ValidationFailed
from conveyor.services import insights
from conveyor.services.config import load
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.store import facts as stored
from conveyor.store import tables as t
from tests.conftest import caller_of
from tests.unit.test_insights import HISTORY, RELEASES, SINCE, UNTIL, WEB_PROD_LEADS

CONFIG = """
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Prod]
project_groups:
  - name: Apps
  - name: Services
users:
  - username: devs-only
teams:
  - name: Leads
  - name: Ops
  - name: QA
  - name: Dev watchers
    members: [devs-only]
    roles:
      - role: Project Viewer
        environments: [Dev]
projects:
  - name: Web
    group: Apps
    lifecycle: Anywhere
  - name: Api
    group: Services
    lifecycle: Anywhere
"""


def _stamp(moment: datetime | None, sqlite: bool) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=None) if sqlite else moment


async def put_history(services: Services, admin: Caller, *, with_facts: bool = True) -> None:
    """HISTORY and RELEASES as rows (commit times written in two spellings of UTC), and their
    facts as the bulk rebuild computes them (what the server writes as each one ends)."""
    await apply_text(services, admin, CONFIG)
    loaded = await load(services)
    sqlite = services.is_sqlite
    project = {n: loaded.id_of("projects", n) for n in ("Web", "Api")}
    env = {n: loaded.id_of("environments", n) for n in ("Dev", "Prod")}
    release_ids: dict[int, int] = {}
    async with services.tx(admin) as tx:
        s = tx.session
        for r in RELEASES:
            commits = [
                {
                    "sha": f"{r.id:02d}{i:02d}abcdef",
                    "author": "dev",
                    "message": "a change",
                    "timestamp": c.isoformat().replace("+00:00", "Z" if i % 2 else "+00:00"),
                }
                for i, c in enumerate(r.commit_times)
            ]
            row = await s.execute(
                insert(t.releases).values(
                    project_id=project[r.project],
                    version=f"1.0.{r.id}",
                    notes="",
                    created_at=_stamp(SINCE, sqlite),
                    created_by="admin",
                    snapshot={},
                    packages={},
                    children={},
                    build={"commits": commits} if commits else {},
                    **ins.commit_columns({"commits": commits}),
                )
            )
            release_ids[r.id] = row.inserted_primary_key[0]
        for d in HISTORY:
            common: dict[str, Any] = {
                "project_id": project[d.project],
                "environment_id": env[d.environment],
            }
            row = await s.execute(
                insert(t.deployments).values(
                    **common,
                    release_id=release_ids[d.release],
                    created_at=_stamp(d.queued, sqlite),
                    created_by="admin",
                    state=d.state,
                    skip=[],
                    guided_failure=d.guided_failure_ignored,
                    variables={},
                    started_at=_stamp(d.started, sqlite),
                    completed_at=_stamp(d.completed, sqlite),
                )
            )
            deployment_id = row.inserted_primary_key[0]
            task = await s.execute(
                insert(t.tasks).values(
                    kind="deploy",
                    description="deploy",
                    state=d.state,
                    deployment_id=deployment_id,
                    created_at=_stamp(d.queued, sqlite),
                    **common,
                )
            )
            task_id = task.inserted_primary_key[0]
            asked: list[tuple[str, str, tuple[str, ...], float]] = []
            if d.guided_failure_ignored:
                asked.append(("guided_failure", "ignore", (), 60))
            assert d.started is not None or not d.approval_waits
            at = d.started
            for wait in d.approval_waits:
                if wait.kind == "intervention":
                    asked.append(("manual_intervention", "proceed", wait.teams, wait.seconds))
                else:
                    await s.execute(
                        insert(t.approvals).values(
                            release_id=release_ids[d.release],
                            username="lead",
                            teams=list(wait.teams),
                            notes="",
                            fields={},
                            digest="x" * 64,
                            given_at=_stamp(d.queued + _seconds(wait.seconds), sqlite),
                            expires_at=_stamp(UNTIL, sqlite),
                            **common,
                        )
                    )
            for kind, result, teams, seconds in asked:
                assert at is not None
                await s.execute(
                    insert(t.interruptions).values(
                        task_id=task_id,
                        deployment_id=deployment_id,
                        step_idx=0,
                        step_name="Approve",
                        kind=kind,
                        title="?",
                        instructions="",
                        responsible_teams=list(teams),
                        settings={},
                        state="answered",
                        created_at=_stamp(at, sqlite),
                        result=result,
                        answered_at=_stamp(at + _seconds(seconds), sqlite),
                        answers=[],
                        **common,
                    )
                )
    # A revoked approval, and one given before the deployment was queued, make no wait.
    async with services.tx(admin) as tx:
        for given, revoked in ((SINCE, None), (UNTIL - _seconds(60), UNTIL)):
            await tx.session.execute(
                insert(t.approvals).values(
                    release_id=release_ids[4],
                    username="lead",
                    teams=["Leads"],
                    notes="",
                    fields={},
                    digest="x" * 64,
                    given_at=_stamp(given, sqlite),
                    expires_at=_stamp(UNTIL, sqlite),
                    revoked_at=_stamp(revoked, sqlite),
                    project_id=project["Web"],
                    environment_id=env["Prod"],
                )
            )
    if with_facts:
        async with services.tx(admin) as tx:
            await stored.rebuild(tx.session, sqlite=sqlite)


def _seconds(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


def _line(lines: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(x for x in lines if x["name"] == name)


async def _report(services: Services, caller: Caller, **filters: Any) -> dict[str, Any]:
    filters.setdefault("since", SINCE)
    filters.setdefault("until", UNTIL)
    found = await insights.report(services, caller, insights.Filters(**filters))
    return insights.as_json(found)


async def test_the_numbers_of_the_constructed_history(services: Services, admin: Caller) -> None:
    await put_history(services, admin)
    body = await _report(services, admin)
    leads = [s.total_seconds() for s in WEB_PROD_LEADS]
    web_prod = await _report(services, admin, project="web", environment="prod")
    m = web_prod["overall"]
    assert (m["deployments"], m["successes"], m["failures"]) == (6, 5, 2)
    assert m["deployment_frequency"] == pytest.approx(0.5)
    assert m["change_failure_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert m["lead_time_seconds"] == pytest.approx(sum(leads) / 5, abs=0.1)
    assert m["time_to_restore_seconds"] == pytest.approx((65 * 60 + 3600) / 2, abs=0.1)
    assert (m["restored"], m["open_failures"]) == (2, 0)
    assert m["duration_seconds"] == pytest.approx((5 * 600 + 5400) / 6, abs=0.1)
    assert m["approvals_share_of_lead_time"] == pytest.approx(3000 / sum(leads), abs=1e-4)

    # The SQL agrees with the rule in Python on every line of the report.
    facts = ins.facts(HISTORY, RELEASES, SINCE, UNTIL)
    window = ins.Window(SINCE, UNTIL)

    def expected(keep: Any) -> dict[str, Any]:
        return insights.metrics_json(
            ins.metrics(ins.totals(f for f in facts if keep(f.deployment)), window)
        )

    def strip(line: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in line.items() if k not in ("scope", "name", "group")}

    assert strip(body["overall"]) == expected(lambda d: True)
    for name in ("Web", "Api"):
        assert strip(_line(body["projects"], name)) == expected(
            lambda d, name=name: d.project == name
        )
    for env in ("Dev", "Prod"):
        assert strip(_line(body["environments"], env)) == expected(
            lambda d, env=env: d.environment == env
        )
    assert strip(_line(body["project_groups"], "Services")) == expected(
        lambda d: d.project == "Api"
    )
    assert _line(body["projects"], "Web")["group"] == "Apps"
    waits = {w["team"]: (w["waits"], w["seconds"]) for w in body["approval_waits"]}
    assert waits == {"QA": (1, 1800), "Ops": (1, 1800), "Leads": (1, 1200)}
    days = {d["day"]: (d["deployments"], d["successes"], d["failures"]) for d in body["daily"]}
    assert days == {
        "2026-06-01": (1, 1, 0),
        "2026-06-02": (2, 1, 1),
        "2026-06-03": (2, 2, 1),
        "2026-06-04": (1, 1, 0),
        "2026-06-05": (1, 0, 1),
        "2026-06-06": (1, 1, 0),
    }
    csv_text = insights.as_csv(body)
    assert csv_text.splitlines()[0].startswith("scope,name,group,deployments")
    assert len(csv_text.splitlines()) == 1 + 1 + 2 + 2 + 2

    if services.is_sqlite:
        # PostgreSQL's way (window functions and joins) gives the facts SQLite's (probes) gives.
        q = stored.Dialect(sqlite=True)
        probes = stored._facts_sql(q, "")
        sets = probes.replace(stored._facts_by_probes(q), stored._facts_by_sets(q))
        assert sets != probes
        found = []
        for sql in (probes, sets):
            async with services.tx(admin) as tx:
                await tx.session.execute(delete(t.deployment_facts))
                await tx.session.execute(text(sql))
                rows = await tx.session.execute(select(t.deployment_facts))
                found.append(sorted(map(tuple, rows), key=repr))
        assert found[0] == found[1] and found[0]

    # Only what the caller may see counts (one history for both checks: it is slow to build).
    devs = await caller_of(services, "devs-only")
    body = await _report(services, devs)
    assert [e["name"] for e in body["environments"]] == ["Dev"]
    # Web's failure in Dev and Api's success; nothing of Prod.
    assert (body["overall"]["deployments"], body["overall"]["failures"]) == (2, 1)
    assert body["approval_waits"] == []
    with pytest.raises(PermissionDenied, match="DeploymentView"):
        await _report(services, devs, environment="Prod")
    with pytest.raises(NotFound):
        await _report(services, admin, project="Nope")
    # Authorised first: a bad range from someone who may not look there is refused as such.
    with pytest.raises(PermissionDenied):
        await _report(services, devs, environment="Prod", since=UNTIL, until=SINCE)
    with pytest.raises(ValidationFailed, match="before"):
        await _report(services, devs, since=UNTIL, until=SINCE)
    group = await _report(services, admin, group="Apps")
    assert [p["name"] for p in group["projects"]] == ["Web"]
