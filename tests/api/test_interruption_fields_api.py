"""Structured input over HTTP and in the browser: the API refuses a person who may not answer
(403) before it looks at the fields (422); the web form asks each question, shows a refused
answer next to its question, and the step form keeps (and edits) a manual step's questions."""

from __future__ import annotations

import html
import os
import re
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from conveyor.engine.node import Node
from conveyor.services import documents
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import create_api_key, set_password
from tests.api.conftest import ClientFor
from tests.api.helpers import assert_problem
from tests.api.test_web import PASSWORD, browser, form_token, sign_in
from tests.integration.test_interruption_fields import stored, waiting


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=2, name=f"test-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_403_before_422_and_a_right_answer_over_the_api(
    services: Services, admin: Caller, engine: Node, client_for: ClientFor
) -> None:
    _, ident, _ = await waiting(services, admin)
    alice = client_for(await create_api_key(services, system_caller(), "alice", "t"))
    bob = client_for(await create_api_key(services, system_caller(), "bob", "t"))
    path = f"/interruptions/{ident}/submit"

    refused = await alice.post(path, json={"result": "proceed", "fields": {"Risk": "medium"}})
    body = assert_problem(refused, 403, "permission_denied")
    assert "Risk" not in refused.text and "ChangeTicket" not in str(body)

    wrong = await bob.post(path, json={"result": "proceed", "fields": {"ChangeTicket": "CHG"}})
    problems = {
        p["path"]: p["message"] for p in assert_problem(wrong, 422, "validation_failed")["problems"]
    }
    assert problems["fields.ChangeTicket"] == "must match ^CHG-[0-9]+$"
    assert problems["fields.Risk"].startswith("is required")
    assert (await stored(services, ident)).answers == []

    shown = (await bob.get(f"/interruptions/{ident}")).json()
    assert [f["name"] for f in shown["fields"]] == ["ChangeTicket", "Risk", "Remark"]
    right = await bob.post(
        path, json={"result": "proceed", "fields": {"ChangeTicket": "CHG-7", "Risk": "low"}}
    )
    assert right.status_code == 200, right.text
    assert right.json()["field_values"]["ChangeTicket"] == "CHG-7"


async def test_the_web_form_asks_each_question_and_shows_a_refusal_next_to_it(
    app: FastAPI, services: Services, admin: Caller, engine: Node
) -> None:
    task, ident, _ = await waiting(services, admin)
    await set_password(services, system_caller(), "bob", PASSWORD)
    number = task.rsplit("-", 1)[-1]
    async with browser(app) as client:
        await sign_in(client, "bob")
        page = await client.get(f"/tasks/{number}")
        assert page.status_code == 200
        ticket = re.search(
            r'<input id="q-\d+-ChangeTicket" name="field.ChangeTicket"[^>]*>', page.text
        )
        assert (
            ticket and 'pattern="^CHG-[0-9]+$"' in ticket.group(0) and "required" in ticket.group(0)
        )
        assert re.search(r'<select id="q-\d+-Risk" name="field.Risk" required>', page.text)
        assert "formnovalidate" in page.text  # abort needs no answers

        form = {
            "csrf": form_token(page),
            "result": "proceed",
            "notes": "looked",
            "field.ChangeTicket": "TICKET-1",
            "field.Risk": "high",
            "field.Remark": "",
        }
        submit = f"/interruptions/{ident.rsplit('-', 1)[-1]}/submit"
        refused = await client.post(submit, data=form)
        text = html.unescape(refused.text)
        assert refused.status_code == 422 and "Your answer was not recorded" in text
        assert "Change ticket must match ^CHG-[0-9]+$" in text
        assert 'value="TICKET-1"' in text and '<option value="high" selected>' in text
        assert (await stored(services, ident)).answers == []

        answered = await client.post(submit, data=form | {"field.ChangeTicket": "CHG-9"})
        assert answered.status_code == 303, answered.text
        after = html.unescape((await client.get(f"/tasks/{number}")).text)
        assert "<dt>Change ticket</dt><dd>CHG-9</dd>" in after


async def test_editing_a_manual_step_in_the_browser_keeps_and_edits_its_questions(
    app: FastAPI, services: Services, admin: Caller
) -> None:
    await waiting_config_only(services, admin)
    await set_password(services, system_caller(), "admin", PASSWORD)
    async with browser(app) as client:
        await sign_in(client, "admin")
        page = await client.get("/projects/shop/process")
        text = html.unescape(page.text)
        assert "ChangeTicket | ^CHG-[0-9]+$ | Change ticket\nRisk | low, high\nRemark? |" in text
        version = re.search(r'name="version" value="(\d+)"', page.text)
        assert version
        form = {
            "csrf": form_token(page),
            "version": version.group(1),
            "name": "Approve",
            "instructions": "Check it",
            "responsible_teams": "Approvers",
            "required_approvals": "1",
        }
        # An older form without the questions leaves them alone.
        before = await documents.get_process(services, admin, "Shop")
        saved = await client.post("/projects/shop/process/steps/0", data=form)
        assert saved.status_code == 303, saved.text
        process = await documents.get_process(services, admin, "Shop")
        assert process["steps"][0]["fields"] == before["steps"][0]["fields"]
        # Saved as shown, the questions untouched: they are all kept (round trip).
        page = await client.get("/projects/shop/process")
        version = re.search(r'name="version" value="(\d+)"', page.text)
        assert version
        form |= {"csrf": form_token(page), "version": version.group(1)}
        lines = "ChangeTicket | ^CHG-[0-9]+$ | Change ticket\nRisk | low, high\nRemark? |"
        saved = await client.post("/projects/shop/process/steps/0", data=form | {"fields": lines})
        assert saved.status_code == 303, saved.text
        process = await documents.get_process(services, admin, "Shop")
        fields = process["steps"][0]["fields"]
        assert (
            fields
            == before["steps"][0]["fields"]
            == [
                {"name": "ChangeTicket", "label": "Change ticket", "pattern": "^CHG-[0-9]+$"},
                {"name": "Risk", "choices": ["low", "high"]},
                {"name": "Remark", "required": False},
            ]
        )
        page = await client.get("/projects/shop/process")
        version = re.search(r'name="version" value="(\d+)"', page.text)
        assert version
        form |= {"csrf": form_token(page), "version": version.group(1)}
        bad = await client.post(
            "/projects/shop/process/steps/0", data=form | {"fields": "Ticket|^T-[0-9]+$"}
        )
        assert bad.status_code == 422
        assert "line 1: write NAME | PATTERN or CHOICES | LABEL" in html.unescape(bad.text)
        edited = await client.post(
            "/projects/shop/process/steps/0", data=form | {"fields": "Ticket | ^T-[0-9]+$"}
        )
        assert edited.status_code == 303
        process = await documents.get_process(services, admin, "Shop")
        assert process["steps"][0]["fields"] == [{"name": "Ticket", "pattern": "^T-[0-9]+$"}]


async def waiting_config_only(services: Services, admin: Caller) -> None:
    from conveyor.services.configfile import apply_text
    from tests.integration.test_interruption_fields import CONFIG

    await apply_text(services, admin, CONFIG.format(approvals=1))
