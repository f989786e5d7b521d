"""Release governance on a real engine, SQLite and PostgreSQL: rolling a train back redeploys
exactly the children that differ; a pin keeps a release where it is (automatic deployments,
trains and direct deployments leave it); a block stops promotion but not a redeploy; refreshing
a release's variables changes its snapshot and is audited without values."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor.domain.audit import Category
from conveyor.domain.errors import Conflict, PermissionDenied, PolicyViolation, ValidationFailed
from conveyor.engine.node import Node
from conveyor.services import (
    audit,
    deployments,
    pins,
    release_blocks,
    release_variables,
    releases,
)
from conveyor.services.audit import Filters
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.conftest import caller_of
from tests.integration.test_engine import finished, log_text


async def log_saying(services: Services, caller: Caller, task: str, line: str) -> str:
    """The task's log once it holds ``line`` (within 10 s)."""
    for _ in range(200):
        said = await log_text(services, caller, task)
        if line in said:
            return said
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task}'s log never said {line!r}: {said}")


CONFIG = """
environments:
  - name: Dev
  - name: Staging
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Staging]
  - name: Automatic
    phases:
      - name: Development
        environments: [Dev]
        automatic: [Dev]
      - name: Staging
        environments: [Staging]
        automatic: [Staging]
project_groups:
  - name: Shop
users:
  - username: lead
  - username: deployer
  - username: viewer
teams:
  - name: Leads
    members: [lead]
    roles:
      - role: Project Lead
      - role: Project Deployer
  - name: Deployers
    members: [deployer]
    roles:
      - role: Project Deployer
      - role: Release Creator
  - name: Viewers
    members: [viewer]
    roles:
      - role: Project Viewer
projects:
  - name: Database
    group: Shop
    lifecycle: {lifecycle}
    process:
      steps:
        - name: Migrate
          type: script
          script: 'echo "migrating #{{Conveyor.Release.Number}}"'
    variables:
      - name: Greeting
        value: {greeting}
      - name: Password
        value: {password}
        sensitive: true
{extra}
  - name: Website
    group: Shop
    lifecycle: Anywhere
    process:
      steps:
        - name: Publish
          type: script
          script: echo publishing
  - name: Train
    group: Shop
    lifecycle: Anywhere
    process:
      steps:
        - name: Deploy Database
          type: deploy_release
          project: Database
          deployment_condition: if_newer
        - name: Deploy Website
          type: deploy_release
          project: Website
          deployment_condition: if_newer
"""


async def configure(
    services: Services,
    admin: Caller,
    *,
    lifecycle: str = "Anywhere",
    greeting: str = "hello",
    password: str = "first-secret-value",
    extra: str = "",
) -> None:
    text = CONFIG.format(lifecycle=lifecycle, greeting=greeting, password=password, extra=extra)
    await apply_text(services, admin, text)


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=4, name=f"train-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def ship(
    services: Services, caller: Caller, project: str, version: str, env: str = "Dev"
) -> dict[str, Any]:
    queued = await deployments.deploy(services, caller, project, version, env)
    result = await finished(services, caller, queued.as_dict()["task"], waiting=False)
    return result


async def release(
    services: Services, caller: Caller, project: str, version: str, **kw: Any
) -> None:
    await releases.create_release(services, caller, project, version=version, **kw)


async def events(services: Services, admin: Caller, category: Category) -> list[dict[str, Any]]:
    page = await audit.list_events(services, admin, Filters(categories=(category.value,)))
    return list(page["events"])


async def test_rolling_back_a_train_redeploys_exactly_the_children_that_differ(
    services: Services, admin: Caller, engine: Node
) -> None:
    await configure(services, admin)
    for project in ("Database", "Website"):
        await release(services, admin, project, "1.0.0")
    await release(services, admin, "Train", "1.0.0")
    first = await ship(services, admin, "Train", "1.0.0")
    assert first["state"] == "success" and len(first["children"]) == 2, first
    await release(services, admin, "Database", "1.1.0")
    await release(services, admin, "Train", "1.1.0")  # Database 1.1.0, Website 1.0.0
    second = await ship(services, admin, "Train", "1.1.0")
    assert [c["description"] for c in second["children"]] == ["Deploy Database 1.1.0 to Dev"]

    plan = await deployments.plan(services, admin, "Train", "1.0.0", "Dev")
    assert plan["rollback"] is True
    by_name = {s["name"]: s for s in plan["steps"]}
    database, website = by_name["Deploy Database"], by_name["Deploy Website"]
    assert (database["action"], database["rollback"]) == ("run", True)
    assert database["reason"] == "rollback: Database 1.0.0 replaces 1.1.0 in Dev"
    assert (website["action"], website["rollback"]) == ("skip", False)
    assert website["reason"] == "Website 1.0.0 is already the current release in Dev"
    forward = await deployments.plan(services, admin, "Train", "1.1.0", "Dev")
    assert forward["rollback"] is False

    back = await ship(services, admin, "Train", "1.0.0")
    assert back["state"] == "success", back
    [child] = back["children"]
    assert child["description"] == "Deploy Database 1.0.0 to Dev"
    parent_log = await log_text(services, admin, back["id"])
    assert "This is a rollback: Train 1.0.0 replaces 1.1.0 in Dev" in parent_log
    assert "rollback: Database 1.0.0 replaces 1.1.0 in Dev" in parent_log
    child_log = await log_text(services, admin, child["id"])
    assert "This is a rollback: Database 1.0.0 replaces 1.1.0 in Dev" in child_log
    assert "migrating 1.0.0" in child_log
    board = await deployments.plan(services, admin, "Database", "1.1.0", "Dev")
    assert board["rollback"] is False  # 1.0.0 is current again: 1.1.0 would go forward


async def test_a_pin_keeps_a_release_in_place(
    services: Services, admin: Caller, engine: Node
) -> None:
    await configure(services, admin, lifecycle="Automatic")
    deployer, viewer = await caller_of(services, "deployer"), await caller_of(services, "viewer")
    _, started = await deployments.create_release(services, deployer, "Database", version="1.0.0")
    [dev] = started
    assert (await finished(services, admin, dev["task"], waiting=False))["state"] == "success"
    # The success in Dev sent it on to Staging automatically.
    assert await wait_for_current(services, admin, "Database", "Staging", "1.0.0")

    with pytest.raises(PermissionDenied):
        await pins.pin(services, viewer, "Database", "1.0.0", "Staging", "no")
    with pytest.raises(ValidationFailed, match="reason"):
        await pins.pin(services, deployer, "Database", "1.0.0", "Staging", "  ")
    pin = await pins.pin(services, deployer, "Database", "1.0.0", "Staging", "audit in progress")
    assert (pin["version"], pin["pinned_by"], pin["reason"]) == (
        "1.0.0",
        "deployer",
        "audit in progress",
    )

    # The next release goes to Dev, but its success leaves the pinned Staging alone.
    _, started = await deployments.create_release(services, deployer, "Database", version="1.1.0")
    [dev] = started
    after = await finished(services, admin, dev["task"], waiting=False)
    assert after["state"] == "success"
    # The automatic deployments are decided just after the success is recorded.
    said = await log_saying(
        services,
        admin,
        dev["task"],
        "Not deploying automatically to Staging: Database 1.0.0 is pinned in Staging by "
        "deployer: audit in progress",
    )
    assert "pinned in Staging" in said
    with pytest.raises(Conflict, match="not the current release in Staging"):
        await pins.pin(services, deployer, "Database", "1.1.0", "Staging", "wrong one")

    # A direct deployment of another release is refused, saying who, why and how to undo it.
    with pytest.raises(PolicyViolation) as refused:
        await deployments.deploy(services, deployer, "Database", "1.1.0", "Staging")
    message = refused.value.message
    assert "Database 1.0.0 is pinned in Staging by deployer: audit in progress" in message
    assert 'conveyor release unpin --project "Database" --environment "Staging"' in message
    plan = await deployments.plan(services, deployer, "Database", "1.1.0", "Staging")
    assert plan["refused"] and "pinned" in plan["refused"]
    assert plan["pinned"] == {
        "version": "1.0.0",
        "reason": "audit in progress",
        "pinned_by": "deployer",
    }
    # Redeploying the pinned release is allowed.
    assert (await ship(services, deployer, "Database", "1.0.0", "Staging"))["state"] == "success"

    # A release created while Dev is pinned is not deployed there automatically.
    await pins.pin(services, deployer, "Database", "1.1.0", "Dev", "demo tomorrow")
    _, started = await deployments.create_release(services, deployer, "Database", version="1.2.0")
    assert started == [
        {
            "environment": "Dev",
            "skipped": "Database 1.1.0 is pinned in Dev by deployer: demo tomorrow",
        }
    ]

    # A train leaves a pinned child where it is.
    await release(services, admin, "Website", "1.0.0")
    await release(services, admin, "Train", "1.0.0", children={"Database": "1.2.0"})
    plan = await deployments.plan(services, admin, "Train", "1.0.0", "Dev")
    step = next(s for s in plan["steps"] if s["name"] == "Deploy Database")
    assert (step["action"], step["pinned"]) == ("skip", True)
    train = await ship(services, admin, "Train", "1.0.0")
    assert train["state"] == "success", train
    assert [c["description"] for c in train["children"]] == ["Deploy Website 1.0.0 to Dev"]
    skipped = next(s for s in train["steps"] if s["name"] == "Deploy Database")
    assert skipped["state"] == "skipped"
    assert skipped["reason"] == "Database 1.1.0 is pinned in Dev by deployer: demo tomorrow"

    listed = await pins.list_pins(services, viewer, "Database")
    assert [(p["environment"], p["version"]) for p in listed] == [
        ("Dev", "1.1.0"),
        ("Staging", "1.0.0"),
    ]
    shown = await releases.get_release(services, viewer, "Database", "1.1.0")
    assert [p["environment"] for p in shown.as_dict()["pins"]] == ["Dev"]
    with pytest.raises(PermissionDenied):
        await pins.unpin(services, viewer, "Database", "Dev")
    was = await pins.unpin(services, deployer, "Database", "Dev")
    assert was["version"] == "1.1.0"
    assert (await ship(services, deployer, "Database", "1.2.0"))["state"] == "success"
    unpinned = await events(services, admin, Category.RELEASE_UNPINNED)
    assert unpinned[0]["actor"] == "deployer"
    assert unpinned[0]["details"]["reason"] == "demo tomorrow"
    made = await events(services, admin, Category.RELEASE_PINNED)
    assert {e["details"]["environment"] for e in made} == {"Dev", "Staging"}


async def wait_for_current(
    services: Services, admin: Caller, project: str, env: str, version: str
) -> bool:
    """Until ``version`` of ``project`` succeeded in ``env`` (an automatic deployment)."""
    import asyncio

    from conveyor.services.deployment_views import dashboard

    for _ in range(600):
        board = await dashboard(services, admin)
        cell = next(
            (c for c in board["cells"] if (c["project"], c["environment"]) == (project, env)),
            None,
        )
        if cell and cell["current_success"] == version and cell["state"] == "success":
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_block_stops_promotion_but_not_a_redeploy(
    services: Services, admin: Caller, engine: Node
) -> None:
    await configure(services, admin)
    lead, deployer = await caller_of(services, "lead"), await caller_of(services, "deployer")
    await release(services, admin, "Database", "1.0.0")
    await release(services, admin, "Website", "1.0.0")
    assert (await ship(services, deployer, "Database", "1.0.0"))["state"] == "success"

    with pytest.raises(PermissionDenied, match="ReleaseEdit"):
        await release_blocks.block(services, deployer, "Database", "1.0.0", "nope")
    blocked = await release_blocks.block(
        services, lead, "Database", "1.0.0", "corrupts orders on upgrade"
    )
    assert blocked["blocked"]["by"] == "lead"
    view = (await releases.get_release(services, deployer, "Database", "1.0.0")).as_dict()
    assert view["blocked"]["reason"] == "corrupts orders on upgrade"

    with pytest.raises(PolicyViolation) as refused:
        await deployments.deploy(services, deployer, "Database", "1.0.0", "Staging")
    assert "blocked by lead: corrupts orders on upgrade" in refused.value.message
    plan = await deployments.plan(services, deployer, "Database", "1.0.0", "Staging")
    assert plan["refused"] and "corrupts orders on upgrade" in plan["refused"]
    # Where it already succeeded it may be redeployed.
    assert (await ship(services, deployer, "Database", "1.0.0"))["state"] == "success"

    # A train choosing the blocked release: the plan says so up front; the child step fails.
    await release(services, admin, "Train", "1.0.0")
    plan = await deployments.plan(services, admin, "Train", "1.0.0", "Staging")
    step = next(s for s in plan["steps"] if s["name"] == "Deploy Database")
    assert step["action"] == "run"
    assert step["refused"] and "Database 1.0.0 will be refused" in step["refused"]
    train = await ship(services, admin, "Train", "1.0.0", "Staging")
    assert train["state"] == "failed"
    failed = next(s for s in train["steps"] if s["name"] == "Deploy Database")
    assert failed["state"] == "failed"
    assert "blocked by lead: corrupts orders on upgrade" in (failed["reason"] or "")
    assert not train["children"]

    unblocked = await release_blocks.unblock(services, lead, "Database", "1.0.0")
    assert unblocked["blocked"] is None
    with pytest.raises(Conflict, match="not blocked"):
        await release_blocks.unblock(services, lead, "Database", "1.0.0")
    assert (await ship(services, deployer, "Database", "1.0.0", "Staging"))["state"] == "success"
    [event] = await events(services, admin, Category.RELEASE_BLOCKED)
    assert (event["actor"], event["details"]["reason"]) == ("lead", "corrupts orders on upgrade")
    assert len(await events(services, admin, Category.RELEASE_UNBLOCKED)) == 1


async def test_refreshing_variables_changes_the_snapshot_audited_without_values(
    services: Services, admin: Caller
) -> None:
    await configure(services, admin)
    lead, deployer = await caller_of(services, "lead"), await caller_of(services, "deployer")
    await release(services, admin, "Database", "1.0.0")
    nothing = await release_variables.update_variables(services, lead, "Database", "1.0.0")
    assert nothing["changed"] == []
    assert not await events(services, admin, Category.RELEASE_VARIABLES_UPDATED)

    extra = "      - name: Region\n        value: eu-west-hidden-value\n"
    await configure(
        services, admin, greeting="bonjour-new-value", password="second-secret-value", extra=extra
    )
    with pytest.raises(PermissionDenied, match="ReleaseEdit"):
        await release_variables.update_variables(services, deployer, "Database", "1.0.0")
    done = await release_variables.update_variables(services, lead, "Database", "1.0.0")
    assert done["changed"] == ["Greeting", "Password", "Region"]

    row = await releases.find_release(services, await project_id(services, "Database"), "1.0.0")
    snapshot = releases.read_snapshot(services, row.snapshot)
    values = {v.name: v.value for v in snapshot.variables}
    assert values == {
        "Greeting": "bonjour-new-value",
        "Password": "second-secret-value",
        "Region": "eu-west-hidden-value",
    }
    assert "second-secret-value" not in str(row.snapshot)  # still encrypted at rest
    [event] = await events(services, admin, Category.RELEASE_VARIABLES_UPDATED)
    assert event["actor"] == "lead"
    assert event["details"]["changed"] == ["Greeting", "Password", "Region"]
    for value in ("bonjour", "second-secret", "first-secret", "eu-west", "hello"):
        assert value not in str(event)
    again = await release_variables.update_variables(services, lead, "Database", "1.0.0")
    assert again["changed"] == []


async def project_id(services: Services, name: str) -> int:
    from conveyor.services.config import load

    found = (await load(services)).id_of("projects", name)
    assert found is not None
    return found
