"""Retention per channel and with inherited phase policies, on SQLite and PostgreSQL: a hotfix
line's releases do not push the main line's out (nor the other way round), a channel with its
own lifecycle follows that lifecycle's policy, a phase without a policy takes the nearest
earlier phase's (as Octopus), and what the plan shows is exactly what applying it deletes (the
audit chain still verifies)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conveyor.domain.audit import Category
from conveyor.services import audit, deployments, releases, retention
from conveyor.services import retention_apply as job
from conveyor.services.audit import Filters
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.ended import end

CONFIG = """
environments:
  - name: Dev
  - name: Test
  - name: Patch
  - name: Prod
lifecycles:
  - name: Forever
    phases:
      - {name: Development, environments: [Dev]}
  - name: Express
    release_retention: {keep: 2}
    phases:
      - {name: Patching, environments: [Patch]}
  - name: Tight
    phases:
      - name: Development
        environments: [Dev]
        release_retention: {keep: 2}
  - name: Inherited
    release_retention: {keep: 10}
    phases:
      - name: Development
        environments: [Dev]
        release_retention: {keep: 3}
      - {name: Testing, environments: [Test]}
      - {name: Production, environments: [Prod]}
project_groups:
  - name: Apps
projects:
  - name: Web
    group: Apps
    lifecycle: Forever
    channels:
      - {name: Main, default: true}
      - {name: Hotfix, lifecycle: Express}
  - name: Api
    group: Apps
    lifecycle: Tight
    channels:
      - {name: Main, default: true}
      - {name: Hotfix}
  - name: Shop
    group: Apps
    lifecycle: Inherited
"""


async def succeed(
    services: Services, admin: Caller, project: str, version: str, environment: str
) -> None:
    """Deploy and record the deployment as successful through the dashboard's projection
    (running the engine is tested elsewhere)."""
    queued = await deployments.deploy(services, admin, project, version, environment)
    await end(services, admin, queued, version)


async def versions(services: Services, project: str) -> set[str]:
    r, p = t.releases.c, t.projects.c
    query = select(r.version).join(t.projects, p.id == r.project_id).where(p.name == project)
    async with services.read() as session:
        return set((await session.execute(query)).scalars())


async def test_channels_are_counted_apart_and_follow_their_own_lifecycle(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, CONFIG)
    # Api (Dev keeps 2): main and hotfix releases interleaved, each deployed to Dev.
    for version, channel in (
        ("1.0.0", "Main"),
        ("1.0.1", "Main"),
        ("1.4.1", "Hotfix"),
        ("1.0.2", "Main"),
        ("1.4.2", "Hotfix"),
        ("1.4.3", "Hotfix"),
        ("1.0.3", "Main"),
    ):
        await releases.create_release(services, admin, "Api", version=version, channel=channel)
        await succeed(services, admin, "Api", version, "Dev")
    # Web keeps its main line forever; its Hotfix channel follows Express (the last 2).
    for minor in range(3):
        await releases.create_release(services, admin, "Web", version=f"1.0.{minor}")
        await succeed(services, admin, "Web", f"1.0.{minor}", "Dev")
    for patch in range(1, 6):
        version = f"1.4.{patch}"
        await releases.create_release(services, admin, "Web", version=version, channel="Hotfix")
        await succeed(services, admin, "Web", version, "Patch")

    shown = (await retention.show_plan(services, admin)).as_dict()
    gone = sorted((r["project"], r["version"]) for r in shown["releases"])
    # Counted together, the newest hotfixes would have pushed out Api's 1.0.2 and 1.4.2.
    assert gone == [
        ("Api", "1.0.0"),
        ("Api", "1.0.1"),
        ("Api", "1.4.1"),
        ("Web", "1.4.1"),
        ("Web", "1.4.2"),
        ("Web", "1.4.3"),
    ], shown["releases"]
    reasons = {(r["project"], r["version"]): r["reason"] for r in shown["releases"]}
    assert reasons[("Api", "1.4.1")] == "Development keeps the last 2 releases in channel Hotfix"
    assert reasons[("Web", "1.4.1")] == "Patching keeps the last 2 releases in channel Hotfix"

    await check_applied_as_shown(services, admin, shown)
    assert await versions(services, "Api") == {"1.0.2", "1.0.3", "1.4.2", "1.4.3"}
    assert await versions(services, "Web") == {"1.0.0", "1.0.1", "1.0.2", "1.4.4", "1.4.5"}


async def test_a_phase_without_a_policy_takes_the_earlier_phases_as_octopus_does(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, CONFIG)
    for minor in range(6):
        version = f"2.0.{minor}"
        await releases.create_release(services, admin, "Shop", version=version)
        for env in ("Dev", "Test", "Prod"):
            await succeed(services, admin, "Shop", version, env)

    shown = (await retention.show_plan(services, admin)).as_dict()
    # Testing and Production keep Development's last 3, not the lifecycle's 10.
    assert sorted(r["version"] for r in shown["releases"]) == ["2.0.0", "2.0.1", "2.0.2"]
    assert shown["releases"][0]["reason"] == (
        "Development keeps the last 3 releases; Testing keeps the last 3 releases; "
        "Production keeps the last 3 releases"
    )
    [inherited] = [p for p in shown["policies"] if p["lifecycle"] == "Inherited"]
    phases = {ph["phase"]: ph["releases"] for ph in inherited["phases"]}
    assert phases["Development"]["from"] == "own"
    assert phases["Production"] == {
        "keep": 3,
        "unit": "items",
        "text": "the last 3 releases",
        "from": "Development",
    }

    await check_applied_as_shown(services, admin, shown)
    assert await versions(services, "Shop") == {"2.0.3", "2.0.4", "2.0.5"}


async def check_applied_as_shown(services: Services, admin: Caller, shown: dict) -> None:
    """Applying deletes exactly what the plan showed (as the CLI and the page show it), records
    it in RetentionApplied events, and the audit chain still verifies."""
    applied = await job.apply_now(services, admin, "node-1")
    assert applied.spared == 0 and applied.counts == shown["counts"], (applied, shown["counts"])
    page = await audit.list_events(
        services, admin, Filters(categories=(Category.RETENTION_APPLIED.value,))
    )
    recorded: dict[str, set[str]] = {k: set() for k in job.KINDS}
    for event in page["events"]:
        for kind in job.KINDS:
            recorded[kind].update(event["details"][kind])
    assert recorded["releases"] == {r["id"] for r in shown["releases"]}
    assert recorded["deployments"] == {d["id"] for d in shown["deployments"]}
    assert recorded["task_logs"] == {d["task"] for d in shown["task_logs"]}
    assert recorded["packages"] == {p["id"] for p in shown["packages"]}
    assert (await retention.current_plan(services)).empty
    assert (await audit.verify_chain(services, admin))["intact"]


TRAIN = """
environments:
  - name: Dev
lifecycles:
  - name: Short
    release_retention: {keep: 1}
    phases:
      - {name: Development, environments: [Dev]}
project_groups:
  - name: Apps
projects:
  - name: Database
    group: Apps
    lifecycle: Short
  - name: Train
    group: Apps
    lifecycle: Short
    process:
      steps:
        - {name: Deploy Database, type: deploy_release, project: Database}
"""


async def test_a_child_release_stays_when_its_parent_stays_after_the_plan_was_made(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, TRAIN)
    for minor in range(4):
        await releases.create_release(services, admin, "Database", version=f"1.0.{minor}")
    await releases.create_release(
        services, admin, "Train", version="5.0.0", children={"Database": "1.0.1"}
    )
    await releases.create_release(
        services, admin, "Train", version="5.0.1", children={"Database": "1.0.3"}
    )
    plan = await retention.current_plan(services)
    planned = {r.what for r in plan.releases}
    assert planned == {"Database 1.0.0", "Database 1.0.1", "Database 1.0.2", "Train 5.0.0"}

    # Since the plan: Train 5.0.0 is being deployed (so it stays, and the Database release it
    # chose with it), and a new Train release chose Database 1.0.0.
    await deployments.deploy(services, admin, "Train", "5.0.0", "Dev")
    await releases.create_release(
        services, admin, "Train", version="5.0.2", children={"Database": "1.0.0"}
    )
    lease = await job.claim(services, "node-1", due_after=None)
    assert lease is not None
    applied = job.Applied()
    await job.apply_plan(services, admin, lease, plan, applied)
    assert await versions(services, "Database") == {"1.0.0", "1.0.1", "1.0.3"}
    assert await versions(services, "Train") == {"5.0.0", "5.0.1", "5.0.2"}
    assert applied.spared == 3 and applied.counts["releases"] == 1, applied
    assert (await audit.verify_chain(services, admin))["intact"]


async def test_planned_a_project_at_a_time_the_plan_is_the_same_and_applies_as_shown(
    services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply_text(services, admin, TRAIN)
    for minor in range(4):
        await releases.create_release(services, admin, "Database", version=f"1.0.{minor}")
    await releases.create_release(
        services, admin, "Train", version="5.0.0", children={"Database": "1.0.1"}
    )
    await releases.create_release(
        services, admin, "Train", version="5.0.1", children={"Database": "1.0.3"}
    )
    whole = await retention.current_plan(services)
    monkeypatch.setattr(retention, "CHUNK", 1)  # Train, then Database: parents first
    chunked = await retention.current_plan(services)
    assert chunked == whole
    assert {x.what for x in chunked.releases} == {
        "Database 1.0.0",
        "Database 1.0.1",
        "Database 1.0.2",
        "Train 5.0.0",
    }
    shown = (await retention.show_plan(services, admin)).as_dict()
    await check_applied_as_shown(services, admin, shown)
    assert await versions(services, "Database") == {"1.0.3"}
