"""Environment checks and approvals ahead of time, on SQLite and PostgreSQL.

Time is the services' injectable clock: a window opens or a freeze ends because the test moves
the clock and asks the node's periodic look (``gates.reevaluate``) to run, never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.domain.errors import (
    Conflict,
    PermissionDenied,
    PolicyViolation,
    ValidationFailed,
)
from conveyor.engine.node import Node
from conveyor.services import (
    approvals,
    audit,
    deployments,
    gates,
    release_variables,
    releases,
    tasks,
)
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.conftest import caller_of

WEDNESDAY_10 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SATURDAY_10 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
IN_FREEZE = datetime(2026, 12, 22, 10, 0, tzinfo=UTC)  # a Tuesday

CONFIG = """
environments:
  - name: Dev
  - name: Prod
    checks:
      - approval:
          teams: [QA, Owners]
          fields: [{name: Ticket, pattern: "^CHG-[0-9]+$"}]
        windows: [{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00", time_zone: UTC}]
        freezes: [{name: Year end, start: "2026-12-20T00:00:00Z", end: "2027-01-04T00:00:00Z"}]
        run_latest: true
lifecycles:
  - name: Anywhere
    phases: [{name: All, environments: [Dev, Prod]}]
project_groups: [{name: Apps}]
user_roles:
  - name: Freeze Breaker
    permissions: [DeploymentFreezeAdminister]
users:
  - {username: ops}
  - {username: qa, email: qa@example.com}
  - {username: owner, email: owner@example.com}
  - {username: both}
  - {username: dev}
teams:
  - name: Operations
    members: [ops, both]
    roles: [{role: Project Deployer}, {role: Release Creator}]
  - name: Breakers
    members: [ops]
    roles: [{role: Freeze Breaker, environments: [Prod]}]
  - name: QA
    members: [qa, both]
    roles: [{role: Approver}]
  - name: Owners
    members: [owner, both]
    roles: [{role: Approver}]
  - name: Developers
    members: [dev]
    roles: [{role: Project Contributor}, {role: Project Viewer}]
projects:
  - name: Web
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - {name: Hello, type: script, script: echo hello}
"""


@pytest.fixture
async def people(services: Services, admin: Caller) -> dict[str, Caller]:
    services.clock = lambda: WEDNESDAY_10
    await apply_text(services, admin, CONFIG)
    names = ("ops", "qa", "owner", "both", "dev")
    return {name: await caller_of(services, name) for name in names} | {"admin": admin}


def at(services: Services, moment: datetime) -> None:
    services.clock = lambda: moment


async def release(services: Services, who: Caller, **build: Any) -> str:
    made = await releases.create_release(services, who, "Web", build=build or None)
    return made.version


async def held(services: Services, task: str) -> bool:
    async with services.read() as session:
        value = await session.scalar(
            select(t.tasks.c.held).where(t.tasks.c.id == int(task.split("-")[1]))
        )
    return bool(value)


async def claimable(services: Services) -> bool:
    """Whether a node would take a task now (the claim is undone: nothing runs here)."""
    async with services.write() as session:
        from conveyor.store import runs

        found = await runs.claim(
            session, services.clock(), "probe", timedelta(seconds=5), 1, sqlite=services.is_sqlite
        )
        await session.rollback()
    return bool(found)


async def events_of(services: Services, who: Caller, category: str) -> dict[str, Any]:
    return await audit.list_events(services, who, audit.Filters(categories=(category,)))


async def deploy(services: Services, who: Caller, version: str, **kw: Any) -> str:
    queued = await deployments.deploy(services, who, "Web", version, "Prod", **kw)
    return str(queued.as_dict()["task"])


async def give(services: Services, who: Caller, version: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("fields", {"Ticket": "CHG-1"})
    return await approvals.give(services, who, "Web", version, "Prod", **kw)


async def test_a_deployment_waits_for_both_teams_then_starts(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    task = await deploy(services, people["ops"], version)
    assert await held(services, task) and not await claimable(services)
    view = await tasks.get_task(services, people["ops"], task)
    assert view["state"] == "queued" and view["held"]
    assert "waiting for 1 from QA, 1 from Owners" in view["queue_reason"]
    approval = next(c for c in view["checks"] if c["kind"] == "approval")
    assert approval["state"] == "pending"

    # Only the named teams approve; the question must be answered as asked.
    with pytest.raises(PermissionDenied, match="only members of QA, Owners"):
        await give(services, people["dev"], version)
    with pytest.raises(ValidationFailed, match="Ticket"):
        await give(services, people["qa"], version, fields={"Ticket": "ticket 7"})
    first = await give(services, people["qa"], version, notes="tests green")
    assert first["state"] == "valid" and first["teams"] == ["QA"]
    assert first["fields"] == {"Ticket": "CHG-1"} and first["released"] == 0
    with pytest.raises(Conflict, match=r"approved Web .* already"):
        await give(services, people["qa"], version)
    assert await held(services, task)

    second = await give(services, people["owner"], version)
    assert second["released"] == 1
    assert not await held(services, task) and await claimable(services)
    events = await events_of(services, people["admin"], "DeploymentReleased")
    assert any("may start" in e["message"] for e in events["events"])
    given = await events_of(services, people["admin"], "ApprovalGiven")
    assert {"tests green", ""} == {e["details"]["notes"] for e in given["events"]}


async def test_approved_ahead_of_time_the_deployment_is_not_held(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    await give(services, people["qa"], version)
    await give(services, people["owner"], version)
    plan = await deployments.plan(services, people["ops"], "Web", version, "Prod")
    assert {c["kind"]: c["state"] for c in plan["checks"]} == {
        "freeze": "passed",
        "window": "passed",
        "approval": "passed",
        "run_latest": "passed",
    }
    task = await deploy(services, people["ops"], version)
    assert not await held(services, task)


async def test_one_person_in_two_teams_fills_one_place_and_never_their_own(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    await give(services, people["both"], version)
    plan = await deployments.plan(services, people["ops"], "Web", version, "Prod")
    [approval] = [c for c in plan["checks"] if c["kind"] == "approval"]
    assert approval["state"] == "pending" and "QA 1 of 1; Owners 0 of 1" in approval["reason"]
    # Who queued the deployment does not count as its approver.
    await give(services, people["owner"], version)
    task = await deploy(services, people["both"], version)
    assert await held(services, task)
    view = await tasks.get_task(services, people["both"], task)
    assert "both queued this deployment" in view["queue_reason"]


async def test_commit_authors_may_not_approve(
    services: Services, people: dict[str, Caller]
) -> None:
    commits = [{"sha": "a" * 40, "author": "Olive <owner@example.com>", "message": "fix"}]
    version = await release(services, people["ops"], commit="a" * 40, commits=commits)
    with pytest.raises(PermissionDenied, match="you wrote commits in this release"):
        await give(services, people["owner"], version)
    refused = await events_of(services, people["admin"], "AccessDenied")
    assert any("refused to approve Web" in e["message"] for e in refused["events"])


async def test_outside_the_window_it_waits_for_the_window(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    at(services, datetime(2026, 12, 4, 12, 0, tzinfo=UTC))  # Friday noon: they last 72 h
    await give(services, people["qa"], version)
    await give(services, people["owner"], version)
    at(services, SATURDAY_10)
    task = await deploy(services, people["ops"], version)
    view = await tasks.get_task(services, people["ops"], task)
    assert "closed: opens 2026-12-07 09:00 UTC" in view["queue_reason"]
    assert await gates.reevaluate(services) == 0 and await held(services, task)
    at(services, datetime(2026, 12, 7, 9, 1, tzinfo=UTC))
    assert await gates.reevaluate(services) == 1
    assert not await held(services, task)


async def test_scheduled_inside_the_window_and_canceled_when_it_closes(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    with pytest.raises(ValidationFailed, match="outside the change window"):
        await deploy(services, people["ops"], version, start_at=SATURDAY_10)
    friday = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    task = await deploy(services, people["ops"], version, start_at=friday)
    view = await tasks.get_task(services, people["ops"], task)
    assert "queued to start at 2026-12-04 16:00 UTC" in view["queue_reason"]
    # Time comes, but nobody approved before the window closed: canceled, saying why.
    at(services, friday + timedelta(minutes=30))
    assert await gates.reevaluate(services) == 0
    at(services, datetime(2026, 12, 4, 17, 5, tzinfo=UTC))
    assert await gates.reevaluate(services) == 1
    view = await tasks.get_task(services, people["ops"], task)
    assert view["state"] == "canceled"
    assert "change window closed before the deployment could start" in view["error"]
    expired = await events_of(services, people["admin"], "DeploymentExpired")
    assert len(expired["events"]) == 1


async def test_approve_now_run_later(services: Services, people: dict[str, Caller]) -> None:
    version = await release(services, people["ops"])
    thursday = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    task = await deploy(services, people["ops"], version, start_at=thursday)
    await give(services, people["qa"], version)
    await give(services, people["owner"], version)
    assert await held(services, task)  # approved, but not yet its time
    at(services, thursday)
    assert await gates.reevaluate(services) == 1 and await claimable(services)


async def test_a_freeze_takes_the_permission_and_a_reason(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    at(services, IN_FREEZE)
    with pytest.raises(PolicyViolation, match="frozen \\(Year end\\) until 2027-01-04"):
        await deploy(services, people["ops"], version)
    with pytest.raises(PermissionDenied, match="DeploymentFreezeAdminister"):
        await deploy(services, people["both"], version, freeze_override="hotfix")
    task = await deploy(services, people["ops"], version, freeze_override="hotfix INC-42")
    view = await tasks.get_task(services, people["ops"], task)
    freeze = next(c for c in view["checks"] if c["kind"] == "freeze")
    assert freeze["state"] == "passed" and "overridden: hotfix INC-42" in freeze["reason"]
    events = await events_of(services, people["admin"], "FreezeOverridden")
    assert events["events"][0]["details"]["reason"] == "hotfix INC-42"
    # The approvals are still needed during a freeze.
    assert await held(services, task)


async def test_a_newer_deployment_supersedes_a_queued_one(
    services: Services, people: dict[str, Caller]
) -> None:
    old = await deploy(services, people["ops"], await release(services, people["ops"]))
    new = await deploy(services, people["ops"], await release(services, people["ops"]))
    old_view = await tasks.get_task(services, people["ops"], old)
    assert old_view["state"] == "canceled"
    assert old_view["error"].startswith(f"superseded by Web 0.0.2 to Prod ({new})")
    assert (await tasks.get_task(services, people["ops"], new))["state"] == "queued"
    events = await events_of(services, people["admin"], "DeploymentSuperseded")
    assert len(events["events"]) == 1


async def test_approvals_expire_and_can_be_revoked(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    qa = await give(services, people["qa"], version)
    await give(services, people["owner"], version)
    task = await deploy(services, people["ops"], version)
    assert not await held(services, task)

    # Someone else's approval is not theirs to revoke.
    with pytest.raises(PermissionDenied, match="EnvironmentEdit"):
        await approvals.revoke(services, people["owner"], qa["id"])
    revoked = await approvals.revoke(services, people["qa"], qa["id"])
    assert revoked["state"] == "revoked" and revoked["revoked_by"] == "qa"
    assert await held(services, task) and not await claimable(services)
    with pytest.raises(Conflict, match="revoked already"):
        await approvals.revoke(services, people["qa"], qa["id"])

    await give(services, people["qa"], version)
    assert not await held(services, task)
    at(services, WEDNESDAY_10 + timedelta(hours=73))  # Saturday: expired, and out of window
    listed = await approvals.list_approvals(services, people["qa"], project_ref="Web")
    assert {a["state"] for a in listed} == {"expired", "revoked"}


async def test_process_editors_cannot_remove_a_check(
    services: Services, people: dict[str, Caller]
) -> None:
    with pytest.raises(PermissionDenied, match="EnvironmentEdit"):
        await apply_text(services, people["dev"], "environments:\n  - {name: Prod, checks: []}\n")
    version = await release(services, people["ops"])

    async def kinds() -> set[str]:
        plan = await deployments.plan(services, people["ops"], "Web", version, "Prod")
        return {c["kind"] for c in plan["checks"]}

    # A file that does not mention an environment's checks keeps them (the base file of the
    # example re-applied after its governance file); `checks: []` removes them.
    await apply_text(services, people["admin"], "environments:\n  - name: Prod\n")
    assert "approval" in await kinds()
    await apply_text(services, people["admin"], "environments:\n  - {name: Prod, checks: []}\n")
    assert await kinds() == set()


TRAIN = """
projects:
  - name: Train
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - {name: Ship Web, type: deploy_release, project: Web, deployment_condition: if_newer}
        - name: Record
          type: script
          script: echo "ticket=#{Conveyor.Approval.Ticket} by=#{Conveyor.Approval.ApprovedBy}"
"""


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=4, name=f"gov-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def ended(services: Services, who: Caller, task: str) -> dict[str, Any]:
    for _ in range(600):
        found = await tasks.get_task(services, who, task)
        if found["state"] in ("success", "failed", "canceled", "timed_out"):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task} did not end: {found}")


async def test_one_approval_covers_the_train_and_its_answers_reach_the_steps(
    services: Services, people: dict[str, Caller], engine: Node
) -> None:
    await apply_text(services, people["admin"], TRAIN)
    await releases.create_release(services, people["ops"], "Web")
    train = await releases.create_release(services, people["ops"], "Train")
    await approvals.give(
        services, people["qa"], "Train", train.version, "Prod", fields={"Ticket": "CHG-9"}
    )
    await approvals.give(
        services, people["owner"], "Train", train.version, "Prod", fields={"Ticket": "CHG-9"}
    )
    queued = await deployments.deploy(services, people["ops"], "Train", train.version, "Prod")
    done = await ended(services, people["ops"], queued.as_dict()["task"])
    assert done["state"] == "success", done
    [child] = done["children"]
    assert child["state"] == "success" and child["project"] == "Web"
    log = await tasks.task_log(services, people["ops"], queued.as_dict()["task"])
    text = "\n".join(line["line"] for line in log["lines"])
    assert "ticket=CHG-9 by=qa, owner" in text


async def test_checks_are_evaluated_again_just_before_the_start(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    await give(services, people["qa"], version)
    await give(services, people["owner"], version)
    task = await deploy(services, people["ops"], version)
    assert not await held(services, task)
    # The approvals expire before any node took the deployment (no periodic look ran).
    at(services, WEDNESDAY_10 + timedelta(hours=72, minutes=1))
    node = Node(services, slots=2, name=f"late-{os.getpid()}")
    await node.start()
    try:
        for _ in range(200):
            if await held(services, task):
                break
            await asyncio.sleep(0.05)
    finally:
        await node.stop()
    view = await tasks.get_task(services, people["ops"], task)
    assert view["state"] == "queued" and view["held"] and view["started"] is None
    assert "expired" in view["queue_reason"]
    log = await tasks.task_log(services, people["ops"], task)
    assert any(line["line"].startswith("Not started: ") for line in log["lines"])
    events = await events_of(services, people["admin"], "DeploymentHeld")
    assert any("did not start" in e["message"] for e in events["events"])


async def test_an_approval_goes_stale_when_the_release_changes(
    services: Services, people: dict[str, Caller]
) -> None:
    version = await release(services, people["ops"])
    await give(services, people["qa"], version)
    await give(services, people["owner"], version)
    # The project's variables change, and the release takes them (release update-variables).
    with_variable = CONFIG.split("projects:")[1].replace(
        "    process:", "    variables: [{name: Colour, value: green}]\n    process:"
    )
    await apply_text(services, people["admin"], "projects:" + with_variable)
    await release_variables.update_variables(services, people["admin"], "Web", version)
    listed = await approvals.list_approvals(services, people["qa"], project_ref="Web")
    assert {a["state"] for a in listed} == {"stale"}
    task = await deploy(services, people["ops"], version)
    view = await tasks.get_task(services, people["ops"], task)
    assert view["held"] and "approved the release before it changed" in view["queue_reason"]
    # Approved again, as it is now, it goes.
    await give(services, people["qa"], version)
    await give(services, people["owner"], version)
    assert not await held(services, task)


async def test_a_held_deployment_can_be_canceled(
    services: Services, people: dict[str, Caller], engine: Node
) -> None:
    task = await deploy(services, people["ops"], await release(services, people["ops"]))
    assert await held(services, task)
    await tasks.cancel_task(services, people["ops"], task)
    done = await ended(services, people["ops"], task)
    assert done["state"] == "canceled" and not done["held"]
    assert not await held(services, task)
