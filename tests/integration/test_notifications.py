"""Notifications in the Octo Pet Shop story and the notification step, with a real SMTP server
and a real HTTP receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.domain.errors import PermissionDenied
from conveyor.engine import senders
from conveyor.services import deployments, interruptions, preferences, releases, tasks
from conveyor.services.config import load
from conveyor.services.configfile import apply_text, export_text
from conveyor.services.core import Caller, Services
from tests.conftest import EXAMPLE, caller_of
from tests.integration.notifying import BASE_URL, deploy, ended, notifying, quiet, settled
from tests.receivers import Mailbox, Receiver

COMPONENTS = ("Database", "Shopping Cart Service", "Product Service", "Website")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture
async def services(database_url: str, tmp_path: Path, mailbox: Mailbox) -> AsyncIterator[Services]:
    async with notifying(database_url, tmp_path, mailbox) as svc:
        yield svc


def example(**changes: str) -> str:
    """The example, with each component's process one script step (no packages to push)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    for project in data["projects"]:
        if project["name"] in COMPONENTS:
            script = changes.get(project["name"], "echo deployed")
            project["process"] = {"steps": [{"name": "Deploy", "type": "script", "script": script}]}
    return yaml.safe_dump(data, sort_keys=False)


async def test_the_story_calls_approvers_and_tells_operations(
    services: Services, admin: Caller, mailbox: Mailbox
) -> None:
    await apply_text(services, admin, example())
    for name in COMPONENTS:
        await releases_of(services, admin, name)
    await releases.create_release(services, admin, "Deploy All", version="1.0.0")
    test_task = await deploy(services, admin, "Deploy All", "Test", "1.0.0")
    result = await ended(services, admin, test_task)
    assert result["state"] == "success", await log_of(services, admin, test_task)

    ops, qa, owner = [await caller_of(services, n) for n in ("ops", "qa", "owner")]
    task = await deploy(services, ops, "Deploy All", "Staging", "1.0.0")
    assert (await ended(services, admin, task))["state"] == "waiting"
    link = f"{BASE_URL}/tasks/{task}"

    # The Notify approvers step mails both teams; the QA approval calls QA's members.
    for address in ("qa@octopetshop.example", "owner@octopetshop.example"):
        asked = await mailbox.arrival(address, "waits for your approval in Staging")
        assert link in asked.body
    call = await mailbox.arrival("qa@octopetshop.example", '"QA approval"')
    assert link in call.body and "Waiting for you" in call.subject
    assert call.message["From"] == "conveyor@octopetshop.example"
    assert not mailbox.about("owner@octopetshop.example", '"QA approval"')
    assert not mailbox.about("ops@octopetshop.example", "approval")

    [qa_step] = await interruptions.list_interruptions(services, admin, task=task)
    await interruptions.take(services, qa, qa_step["id"])
    await interruptions.submit(services, qa, qa_step["id"], "proceed")
    call = await mailbox.arrival("owner@octopetshop.example", '"Business Owner approval"')
    assert link in call.body
    pending = await interruptions.list_interruptions(services, admin, task=task, pending_only=True)
    await interruptions.submit(services, owner, pending[0]["id"], "proceed")
    assert (await ended(services, admin, task, "success", "failed"))["state"] == "success"
    outcome = await mailbox.arrival("ops@octopetshop.example", "to Staging: success")
    assert link in outcome.body

    # Every failed deployment reaches Operations through the subscription, and only them.
    await apply_text(services, admin, example(Website="exit 3"))
    failing = await deploy(services, admin, "Website", "Development")
    assert (await ended(services, admin, failing, "failed"))["state"] == "failed"
    failed = await mailbox.arrival("ops@octopetshop.example", "DeploymentFailed")
    assert "Website" in failed.body and f"{BASE_URL}/tasks/{failing}" in failed.body
    # In the outbox: the two calls and the one failure, each delivered once.
    rows = await settled(services, admin, 3)
    assert sorted((r["reason"], r["target"], r["state"]) for r in rows) == [
        ("interruption", "owner@octopetshop.example", "succeeded"),
        ("interruption", "qa@octopetshop.example", "succeeded"),
        ("subscription", "ops@octopetshop.example", "succeeded"),
    ]


async def log_of(services: Services, admin: Caller, task: str) -> str:
    lines = (await tasks.task_log(services, admin, task))["lines"]
    return "\n".join(line["line"] for line in lines)


async def releases_of(services: Services, admin: Caller, project: str) -> None:
    """A component release; it deploys itself to Development (the lifecycle says so)."""
    await deployments.create_release(services, admin, project, version="1.0.0")
    await quiet(services)


async def test_an_opted_out_member_is_not_called_and_may_opt_out_alone(
    services: Services, admin: Caller, mailbox: Mailbox
) -> None:
    await apply_text(services, admin, example())
    qa = await caller_of(services, "qa")
    dev = await caller_of(services, "dev")
    with pytest.raises(PermissionDenied):
        await preferences.set_preferences(services, dev, "qa", {"notify_interruptions": False})
    mine = await preferences.set_preferences(services, qa, "qa", {"notify_interruptions": False})
    assert mine == {"username": "qa", "notify_interruptions": False}
    # Applying the example again (it does not say) changes nothing and keeps the person's
    # choice; export shows it.
    assert not (await apply_text(services, admin, example())).changed
    assert not (await load(services)).model.get("users", "qa").notify_interruptions
    assert "notify_interruptions: false" in await export_text(services, admin)
    for name in COMPONENTS:
        await releases_of(services, admin, name)
    await releases.create_release(services, admin, "Deploy All", version="1.0.0")
    first = await deploy(services, admin, "Deploy All", "Test", "1.0.0")
    assert (await ended(services, admin, first))["state"] == "success"
    ops = await caller_of(services, "ops")
    task = await deploy(services, ops, "Deploy All", "Staging", "1.0.0")
    await ended(services, admin, task)
    await mailbox.arrival("owner@octopetshop.example", "waits for your approval")
    await settled(services, admin, 0)
    assert not mailbox.to("qa@octopetshop.example")


STEP = """
environments:
  - name: Dev
lifecycles:
  - name: Dev
    phases:
      - name: Dev
        environments: [Dev]
project_groups:
  - name: Apps
users:
  - username: ann
    email: ann@example.com
  - username: bo
    email: bo@example.com
    notify_interruptions: false
  - username: cy
    email: cy@example.com
    active: false
teams:
  - name: Ops
    members: [ann, bo, cy]
projects:
  - name: Shop
    group: Apps
    lifecycle: Dev
    variables:
      - name: HookSecret
        value: ${{env:HOOK_SECRET}}
        sensitive: true
    process:
      steps:
        - name: Tell
          type: notification
          to_teams: [Ops]
          to_addresses: [list@example.com, ANN@example.com]
          webhooks:
            - url: {url}
              headers: {{X-Team: "#{{Conveyor.Environment.Name}}"}}
              secret_variable: HookSecret
          subject: "Shop #{{Conveyor.Release.Number}} in #{{Conveyor.Environment.Name}}"
          body: "Deployed: #{{Conveyor.Web.TaskLink}}"
          warn_only: {warn_only}
"""


async def test_the_step_mails_each_recipient_once_and_signs_its_webhook(
    services: Services, admin: Caller, mailbox: Mailbox
) -> None:
    receiver = Receiver().start()
    try:
        config = STEP.format(url=receiver.url, warn_only="false")
        await apply_text(services, admin, config, secrets={"HOOK_SECRET": "s3cret-value"})
        task = await deploy(services, admin, "Shop", "Dev")
        assert (await ended(services, admin, task))["state"] == "success"
    finally:
        receiver.stop()
    got = sorted(address for m in mailbox.mails for address in m.to)
    # bo opted out of team mail, cy is inactive; ANN@ and ann@ are one address.
    assert got == ["ann@example.com", "list@example.com"]
    assert all(
        m.subject.startswith("Shop ") and m.subject.endswith(" in Dev") for m in mailbox.mails
    )
    assert f"Deployed: {BASE_URL}/tasks/{task}" in mailbox.mails[0].body
    [hook] = receiver.requests
    assert hook.signed_by("s3cret-value") and not hook.signed_by("wrong")
    assert hook.headers["x-team"] == "Dev"
    body: dict[str, Any] = json.loads(hook.body)
    assert body["text"].startswith("Shop ") and body["task"] == task
    assert body["link"] == f"{BASE_URL}/tasks/{task}" and body["environment"] == "Dev"
    log = "\n".join(line["line"] for line in (await tasks.task_log(services, admin, task))["lines"])
    assert "s3cret-value" not in log


@pytest.mark.parametrize("warn_only", [False, True])
async def test_a_failed_delivery_fails_the_step_unless_it_only_warns(
    services: Services, admin: Caller, warn_only: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(senders, "STEP_BACKOFF", 0.01)
    receiver = Receiver(statuses=[500, 502, 503]).start()
    try:
        config = STEP.format(url=receiver.url, warn_only=str(warn_only).lower())
        await apply_text(services, admin, config, secrets={"HOOK_SECRET": "s3cret-value"})
        task = await deploy(services, admin, "Shop", "Dev")
        result = await ended(services, admin, task, "success", "failed")
    finally:
        receiver.stop()
    assert len(receiver.requests) == 3
    assert result["state"] == ("success" if warn_only else "failed")
    log = "\n".join(line["line"] for line in (await tasks.task_log(services, admin, task))["lines"])
    assert "attempt 1 of 3 failed" in log and "attempt 3 of 3 failed" in log
    assert "was answered 503" in log
