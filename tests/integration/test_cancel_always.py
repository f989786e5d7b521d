"""A canceled deployment still runs its "always" notification and script steps: Operations hear
that Deploy All was canceled (issue 14). Real SMTP server, real engine, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from conveyor.services import deployments, interruptions, releases, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.conftest import EXAMPLE, caller_of
from tests.integration.notifying import deploy, ended, notifying, quiet
from tests.receivers import Mailbox

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


def example() -> str:
    """The example with script components, and an "always" script after Notify outcome."""
    data = yaml.safe_load(EXAMPLE.read_text())
    for project in data["projects"]:
        if project["name"] in COMPONENTS:
            project["process"] = {
                "steps": [{"name": "Deploy", "type": "script", "script": "echo deployed"}]
            }
        if project["name"] == "Deploy All":
            project["process"]["steps"].append(
                {
                    "name": "Clean up",
                    "type": "script",
                    "condition": "always",
                    "script": "echo cleaning up after #{Conveyor.Deployment.State}",
                }
            )
    return yaml.safe_dump(data, sort_keys=False)


async def log_of(services: Services, admin: Caller, task: str) -> str:
    lines = (await tasks.task_log(services, admin, task))["lines"]
    return "\n".join(line["line"] for line in lines)


async def test_canceling_a_waiting_deploy_all_still_tells_operations(
    services: Services, admin: Caller, mailbox: Mailbox
) -> None:
    await apply_text(services, admin, example())
    for name in COMPONENTS:
        await deployments.create_release(services, admin, name, version="1.0.0")
        await quiet(services)
    await releases.create_release(services, admin, "Deploy All", version="1.0.0")
    test_task = await deploy(services, admin, "Deploy All", "Test", "1.0.0")
    assert (await ended(services, admin, test_task))["state"] == "success"

    ops = await caller_of(services, "ops")
    task = await deploy(services, ops, "Deploy All", "Staging", "1.0.0")
    assert (await ended(services, admin, task))["state"] == "waiting"
    await tasks.cancel_task(services, ops, task)
    result = await ended(services, admin, task, "canceled", "success", "failed")
    text = await log_of(services, admin, task)
    assert result["state"] == "canceled", text

    # Operations are told, with the state "canceled"; the deploying steps did not run.
    outcome = await mailbox.arrival("ops@octopetshop.example", "to Staging: canceled")
    assert "ended canceled" in outcome.body
    steps = {s["name"]: s["state"] for s in result["steps"]}
    assert steps["Notify outcome"] == "success", steps
    assert steps["Clean up"] == "success", steps
    assert "cleaning up after canceled" in text, text
    for name in COMPONENTS:
        assert steps[f"Deploy {name}"] == "canceled", steps
    assert steps["QA approval"] == "canceled", steps
    # The approval it waited for ends canceled (docs/deployments.md), not answered.
    [approval] = await interruptions.list_interruptions(services, admin, task=task)
    assert approval["state"] == "canceled", approval
    assert not result["children"], result["children"]
