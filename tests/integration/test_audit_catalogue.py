"""The catalogue: each event category is produced by the action that should produce it, with the
right actor, on SQLite and PostgreSQL; deployments run in process on a real task engine. And the
evidence gathered for a release from all of it."""

from __future__ import annotations

import asyncio
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.domain.audit import DESCRIPTIONS, Category
from conveyor.domain.errors import PermissionDenied, Unauthenticated
from conveyor.engine.node import Node
from conveyor.services import (
    audit,
    deployments,
    documents,
    evidence,
    evidence_report,
    interruptions,
    releases,
    tasks,
)
from conveyor.services import packages as feed
from conveyor.services.audit import Filters
from conveyor.services.auth import ANONYMOUS, sign_in
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.services.users import create_api_key, revoke_api_key, set_password
from tests.conftest import caller_of

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
users:
  - username: alice
  - username: bob
  - username: carol
teams:
  - name: Deployers
    members: [alice]
    roles:
      - role: Project Deployer
      - role: Release Creator
  - name: Approvers
    members: [bob]
    roles:
      - role: Approver
  - name: Viewers
    members: [carol]
    roles:
      - role: Project Viewer
projects:
  - name: Plain
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Hello
          type: script
          script: echo hello
        - name: Only in Prod
          type: script
          environments: [Prod]
          script: echo prod
  - name: Broken
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Fail
          type: script
          script: exit 4
  - name: Slow
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Sleep
          type: script
          script: sleep 30
  - name: Child
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Child step
          type: script
          script: echo child
  - name: Parent
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Ship child
          type: deploy_release
          project: Child
        - name: Approve
          type: manual_intervention
          instructions: Look at Dev
          responsible_teams: [Approvers]
          prevent_self_approval: true
        - name: After
          type: script
          script: echo approved
"""


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=4, name=f"audit-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def state_of(
    services: Services, task: str, wanted: tuple[str, ...], timeout: float = 30
) -> str:
    admin = await caller_of(services, "admin")
    for _ in range(int(timeout * 20)):
        state: str = (await tasks.get_task(services, admin, task))["state"]
        if state in wanted:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task} never reached {wanted}: it is {state}")


ENDED = ("success", "failed", "canceled", "timed_out")


async def deploy(services: Services, caller: Caller, project: str, **kw: Any) -> str:
    release = await releases.create_release(services, caller, project, **kw)
    queued = await deployments.deploy(services, caller, project, release.version, "Dev")
    return str(queued.as_dict()["task"])


async def all_events(services: Services, admin: Caller) -> list[dict[str, Any]]:
    page = await audit.list_events(services, admin, Filters(), limit=500)
    return list(reversed(page["events"]))


def of(events: list[dict[str, Any]], category: Category, **where: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["category"] == category.value and all(e.get(k) == v for k, v in where.items())
    ]


async def test_every_category_is_produced_by_its_action_with_its_actor(
    services: Services, admin: Caller, engine: Node, tmp_path: Path
) -> None:
    await apply_text(services, admin, CONFIG, source="shop.yaml")
    alice, bob, carol = [await caller_of(services, n) for n in ("alice", "bob", "carol")]

    archive = tmp_path / "Demo.Pkg.1.0.0.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")

    async def chunks() -> AsyncIterator[bytes]:
        yield archive.read_bytes()

    await feed.push_package(services, admin, chunks(), file_name=archive.name)

    plain = await deploy(services, alice, "Plain")
    assert await state_of(services, plain, ENDED) == "success"
    broken = await deploy(services, alice, "Broken")
    assert await state_of(services, broken, ENDED) == "failed"
    slow = await deploy(services, alice, "Slow")
    await state_of(services, slow, ("executing",))
    await tasks.cancel_task(services, alice, slow)
    assert await state_of(services, slow, ENDED) == "canceled"

    await releases.create_release(services, admin, "Child")
    parent = await deploy(services, alice, "Parent")
    assert await state_of(services, parent, ("waiting",)) == "waiting"
    [asked] = await interruptions.list_interruptions(services, admin, task=parent)
    with pytest.raises(PermissionDenied):
        await interruptions.submit(services, alice, asked["id"], "proceed")
    await interruptions.take(services, bob, asked["id"])
    await interruptions.submit(services, bob, asked["id"], "proceed", "Dev looks right")
    assert await state_of(services, parent, ENDED) == "success"

    with pytest.raises(PermissionDenied):
        await deployments.deploy(services, carol, "Plain", "0.0.1", "Prod")
    process = await documents.get_process(services, alice, "Plain")
    with pytest.raises(PermissionDenied):
        await documents.update_process(services, alice, "Plain", {**process, "steps": []})

    key = await create_api_key(services, admin, "alice", "ci")
    [info] = [k for k in await _keys(services, admin) if k.prefix == key[:8]]
    await revoke_api_key(services, admin, "alice", info.id)
    await set_password(services, admin, "alice", "a long enough password")
    signed_in = await sign_in(services, "alice", "a long enough password", "10.9.8.7", "Firefox")
    assert signed_in.username == "alice"
    for name, password in (("alice", "wrong password!"), ("mallory", "whatever it is")):
        with pytest.raises(Unauthenticated, match="the username or password is wrong"):
            await sign_in(services, name, password, "10.9.8.6", "curl")

    events = await all_events(services, admin)

    def one(category: Category, **where: Any) -> dict[str, Any]:
        found = of(events, category, **where)
        assert found, f"no {category} event with {where}"
        return found[0]

    expected_actor = {
        Category.DOCUMENT_CREATED: ("admin", None),
        Category.CONFIG_APPLIED: ("admin", None),
        Category.PACKAGE_PUSHED: ("admin", None),
        Category.RELEASE_CREATED: ("alice", None),
        Category.DEPLOYMENT_QUEUED: ("alice", None),
        Category.DEPLOYMENT_STARTED: ("system", "alice"),
        Category.DEPLOYMENT_SUCCEEDED: ("system", "alice"),
        Category.DEPLOYMENT_FAILED: ("system", "alice"),
        Category.DEPLOYMENT_CANCELED: ("system", "alice"),
        Category.STEP_SKIPPED: ("system", "alice"),
        Category.INTERRUPTION_RAISED: ("system", "alice"),
        Category.INTERRUPTION_TAKEN: ("bob", None),
        Category.INTERRUPTION_SUBMITTED: ("bob", None),
        Category.DEPLOYMENT_RESUMED: ("bob", None),
        Category.TASK_CANCELED: ("alice", None),
        Category.API_KEY_CREATED: ("admin", None),
        Category.API_KEY_REVOKED: ("admin", None),
        Category.PASSWORD_CHANGED: ("admin", None),
        Category.LOGIN_SUCCEEDED: ("alice", None),
        Category.LOGIN_FAILED: (ANONYMOUS, None),
    }
    for category, (actor, behalf) in expected_actor.items():
        event = one(category, actor=actor)
        assert event["on_behalf_of"] == behalf, event

    assert "shop.yaml" in one(Category.CONFIG_APPLIED)["message"]
    skipped = one(Category.STEP_SKIPPED)
    assert skipped["details"]["step"] == "Only in Prod" and "Prod" in skipped["details"]["reason"]
    submitted = one(Category.INTERRUPTION_SUBMITTED)
    assert submitted["details"]["notes"] == "Dev looks right"
    assert submitted["details"]["teams"] == ["Approvers"]
    assert "Dev looks right" in submitted["message"]
    assert one(Category.DEPLOYMENT_FAILED, project="Broken")["environment"] == "Dev"

    # Refusals of the protected actions: deploy, edit a process, answer an interruption.
    denied = of(events, Category.ACCESS_DENIED)
    by = {(e["actor"], e["project"]) for e in denied}
    assert ("carol", "Plain") in by, denied
    assert ("alice", "Plain") in by, denied
    answer = [e for e in denied if e["actor"] == "alice" and asked["id"] in e["documents"]]
    assert answer and "only members of Approvers may answer" in answer[0]["message"]
    process_refusal = [e for e in denied if "configuration change" in e["message"]]
    assert process_refusal and process_refusal[0]["documents"] == ["Projects-1"]

    login = one(Category.LOGIN_SUCCEEDED)
    assert (login["ip_address"], login["user_agent"]) == ("10.9.8.7", "Firefox")
    failed = of(events, Category.LOGIN_FAILED)
    assert {e["details"]["username"] for e in failed} == {"alice", "mallory"}
    assert {e["details"]["reason"] for e in failed} == {"wrong password", "unknown user"}
    assert not any("wrong password!" in str(e) or "whatever it is" in str(e) for e in events)

    # Every category the issue names is produced; the rest of the catalogue is documented.
    produced = {e["category"] for e in events}
    assert {c.value for c in expected_actor} | {"AccessDenied"} <= produced
    assert set(DESCRIPTIONS) == set(Category)
    assert (await audit.verify_chain(services, admin))["intact"]

    # The evidence of the parent release gathers all of it.
    proof = await evidence.release_evidence(services, carol, "Parent", "0.0.1")
    assert proof["release"]["created_by"] == "alice"
    assert proof["release"]["children"] == {"Child": "0.0.1"}
    assert proof["changes"]["previous"] is None
    assert [(d["project"], d["state"]) for d in proof["deployments"]] == [
        ("Parent", "success"),
        ("Child", "success"),
    ]
    assert proof["deployments"][1]["parent"] == proof["deployments"][0]["id"]
    [approval] = proof["approvals"]
    assert approval["answers"][0]["username"] == "bob"
    assert approval["answers"][0]["teams"] == ["Approvers"]
    assert approval["answers"][0]["notes"] == "Dev looks right"
    categories = {e["category"] for e in proof["events"]}
    assert {"ReleaseCreated", "DeploymentQueued", "InterruptionSubmitted"} <= categories
    assert all(e["hash"] for e in proof["events"])
    report = evidence_report.markdown(proof)
    assert "# Release evidence: Parent 0.0.1" in report
    assert "| bob | Approvers | proceed |" in report.replace("  ", " ")
    assert "Dev looks right" in report

    await releases.create_release(services, admin, "Child")
    await releases.create_release(services, alice, "Parent", notes="second")
    changed = await evidence.release_evidence(services, admin, "Parent", "0.0.2")
    assert changed["changes"]["previous"] == "0.0.1"
    assert changed["changes"]["children"] == [
        {"name": "Child", "before": "0.0.1", "after": "0.0.2", "change": "changed"}
    ]
    assert changed["changes"]["process_changed"] is False
    assert changed["deployments"] == []
    assert "Compared with the previous release, **0.0.1**" in evidence_report.markdown(changed)


async def _keys(services: Services, admin: Caller) -> list[Any]:
    from conveyor.services.users import list_api_keys

    return await list_api_keys(services, admin, "alice")
