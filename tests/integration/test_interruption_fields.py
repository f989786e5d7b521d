"""A manual intervention that asks for input: a change ticket matching a pattern and a choice.

The answer is validated (a wrong one is refused naming the field, and nothing is stored), kept
with each approver's answer and on the audit event, shown in the release evidence, and read by a
later script step as Conveyor.Action[Approve].Output.Manual.<Field>. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.domain.errors import PermissionDenied, ValidationFailed
from conveyor.engine.node import Node
from conveyor.services import deployments, interruptions, releases
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.services.evidence import release_evidence
from conveyor.store import tables as t
from tests.conftest import caller_of
from tests.integration.test_engine import finished, log_text

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Apps
users:
  - username: alice
  - username: bob
  - username: carol
teams:
  - name: Deployers
    members: [alice, bob, carol]
    roles:
      - role: Project Deployer
      - role: Release Creator
  - name: Approvers
    members: [bob, carol]
    roles:
      - role: Approver
projects:
  - name: Shop
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Approve
          type: manual_intervention
          instructions: Check the change
          responsible_teams: [Approvers]
          required_approvals: {approvals}
          fields:
            - name: ChangeTicket
              label: Change ticket
              pattern: "^CHG-[0-9]+$"
            - name: Risk
              choices: [low, high]
            - name: Remark
              required: false
        - name: After
          type: script
          script: |
            echo "ticket=#{{Conveyor.Action[Approve].Output.Manual.ChangeTicket}}"
            echo "risk=#{{Conveyor.Action[Approve].Output.Manual.Risk}}"
            echo "remark=[#{{Conveyor.Action[Approve].Output.Manual.Remark}}]"
            echo "by=#{{Conveyor.Action[Approve].Output.Manual.ResponsibleUser.Username}}"
"""


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=2, name=f"test-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def waiting(services: Services, admin: Caller, approvals: int = 1) -> tuple[str, str, str]:
    """Deploy Shop; (task, interruption, release version) once it waits at Approve."""
    await apply_text(services, admin, CONFIG.format(approvals=approvals))
    release = await releases.create_release(services, admin, "Shop")
    queued = await deployments.deploy(services, admin, "Shop", release.version, "Dev")
    task = queued.as_dict()["task"]
    assert (await finished(services, admin, task))["state"] == "waiting"
    [pending] = await interruptions.list_interruptions(services, admin, task=task)
    return task, pending["id"], release.version


async def submitted_events(services: Services) -> list[Any]:
    async with services.read() as session:
        query = select(t.events).where(t.events.c.category == "InterruptionSubmitted")
        return list((await session.execute(query)).all())


async def stored(services: Services, ident: str) -> Any:
    async with services.read() as session:
        number = int(ident.rsplit("-", 1)[-1])
        query = select(t.interruptions).where(t.interruptions.c.id == number)
        return (await session.execute(query)).one()


async def test_answers_are_checked_kept_audited_in_evidence_and_variables(
    services: Services, admin: Caller, engine: Node
) -> None:
    task, ident, version = await waiting(services, admin, approvals=2)
    bob = await caller_of(services, "bob")
    carol = await caller_of(services, "carol")

    shown = await interruptions.get_interruption(services, bob, ident)
    asked = {f["name"]: f for f in shown["fields"]}
    assert asked["ChangeTicket"]["pattern"] == "^CHG-[0-9]+$"
    assert asked["ChangeTicket"]["label"] == "Change ticket"
    assert asked["Risk"]["choices"] == ["low", "high"]
    assert asked["Remark"]["required"] is False

    # Wrong answers: every problem named by its field, nothing stored, nothing audited.
    with pytest.raises(ValidationFailed) as wrong:
        await interruptions.submit(
            services, bob, ident, "proceed", fields={"ChangeTicket": "JIRA-1", "Risk": "medium"}
        )
    where = {p.where: p.message for p in wrong.value.problems}
    assert where["fields.ChangeTicket"] == "must match ^CHG-[0-9]+$"
    assert where["fields.Risk"] == "must be one of low, high"
    with pytest.raises(ValidationFailed, match=r"fields.ChangeTicket: is required"):
        await interruptions.submit(services, bob, ident, "proceed", fields={"Risk": "low"})
    with pytest.raises(ValidationFailed, match=r"fields.Ticket: is not asked here"):
        await interruptions.submit(
            services,
            bob,
            ident,
            "proceed",
            fields={"ChangeTicket": "CHG-1", "Risk": "low", "Ticket": "x"},
        )
    row = await stored(services, ident)
    assert row.answers == [] and row.fields is None and row.state == "pending"
    assert await submitted_events(services) == []

    # A quorum of two: each approver's answers stay with their answer; the last one's stand.
    first = await interruptions.submit(
        services, bob, ident, "proceed", "first look", {"ChangeTicket": "CHG-1", "Risk": "low"}
    )
    assert first["state"] == "pending" and first["field_values"] == {}
    done = await interruptions.submit(
        services,
        carol,
        ident,
        "proceed",
        fields={"changeticket": " CHG-42 ", "Risk": "high"},  # names as declared, trimmed
    )
    assert done["state"] == "answered"
    assert done["field_values"] == {"ChangeTicket": "CHG-42", "Risk": "high", "Remark": ""}
    assert [a["fields"] for a in done["answers"]] == [
        {"ChangeTicket": "CHG-1", "Risk": "low", "Remark": ""},
        {"ChangeTicket": "CHG-42", "Risk": "high", "Remark": ""},
    ]
    assert {f["name"]: f["answer"] for f in done["fields"]}["ChangeTicket"] == "CHG-42"

    events = await submitted_events(services)
    assert [e.details["fields"]["ChangeTicket"] for e in events] == ["CHG-1", "CHG-42"]

    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success", result
    log = await log_text(services, admin, task)
    assert "ticket=CHG-42" in log and "risk=high" in log and "remark=[]" in log
    assert "by=carol" in log

    evidence = await release_evidence(services, admin, "Shop", version)
    [approval] = evidence["approvals"]
    assert approval["fields"] == {"ChangeTicket": "CHG-42", "Risk": "high", "Remark": ""}
    assert [a["fields"]["ChangeTicket"] for a in approval["answers"]] == ["CHG-1", "CHG-42"]


async def test_who_may_not_answer_is_refused_before_the_fields_are_checked(
    services: Services, admin: Caller, engine: Node
) -> None:
    task, ident, _ = await waiting(services, admin)
    alice = await caller_of(services, "alice")
    bob = await caller_of(services, "bob")
    with pytest.raises(PermissionDenied, match="only members of Approvers"):
        await interruptions.submit(services, alice, ident, "proceed", fields={"Risk": "?"})

    # An abort needs no answers, but what it gives is still checked.
    with pytest.raises(ValidationFailed, match=r"fields\.Risk: must be one of low, high"):
        await interruptions.submit(services, bob, ident, "abort", fields={"Risk": "medium"})
    aborted = await interruptions.submit(services, bob, ident, "abort", "not today")
    assert aborted["state"] == "answered" and aborted["result"] == "abort"
    assert aborted["field_values"] == {"ChangeTicket": "", "Risk": "", "Remark": ""}
    assert (await finished(services, admin, task, waiting=False))["state"] == "failed"
