"""Blocking, pinning and refreshing a release through the API: who may, what is refused, and the
release view (the deployments themselves are tests/integration/test_train_rollback.py)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from conveyor.services.core import Services
from tests.api.conftest import ClientFor, UserFactory
from tests.api.helpers import assert_problem, events
from tests.api.test_web import browser, form_token, person, sign_in

RELEASE = "/projects/Database/releases/1.0.0"
PIN = "/projects/Database/environments/Dev/pin"


async def test_only_those_who_may_block_pin_or_refresh_a_release_can(
    client: httpx.AsyncClient,
    client_for: ClientFor,
    user_with: UserFactory,
    services: Services,
    shop: None,
) -> None:
    assert (await client.post("/projects/Database/releases", json={"version": "1.0.0"})).is_success
    viewer = client_for(await user_with("viewer", [{"role": "Project Viewer"}]))
    deployer = client_for(await user_with("deployer", [{"role": "Project Deployer"}]))

    # Blocking and refreshing need ReleaseEdit, which a deployer does not have.
    for who in (viewer, deployer):
        refused = await who.post(f"{RELEASE}/block", json={"reason": "broken"})
        assert "ReleaseEdit" in assert_problem(refused, 403, "permission_denied")["message"]
        refused = await who.post(f"{RELEASE}/update-variables")
        assert_problem(refused, 403, "permission_denied")
    # Pinning needs DeploymentCreate there, which a viewer does not have.
    refused = await viewer.post(PIN, json={"version": "1.0.0", "reason": "keep"})
    assert "DeploymentCreate" in assert_problem(refused, 403, "permission_denied")["message"]
    assert_problem(await viewer.delete(PIN), 403, "permission_denied")
    denied = await events(services, "AccessDenied")
    assert {r.actor for r in denied} == {"viewer", "deployer"}

    # Those who may: refused for what is wrong, not for who they are.
    nothing_there = await deployer.post(PIN, json={"version": "1.0.0", "reason": "keep"})
    assert (
        "not the current release in Dev"
        in assert_problem(nothing_there, 409, "conflict")["message"]
    )
    assert_problem(await deployer.delete(PIN), 404, "not_found")
    assert_problem(
        await client.post(f"{RELEASE}/block", json={"reason": "   "}), 422, "validation_failed"
    )
    assert_problem(
        await client.post("/projects/Database/releases/9.9.9/block", json={"reason": "x"}),
        404,
        "not_found",
    )

    blocked = await client.post(f"{RELEASE}/block", json={"reason": "breaks checkout"})
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["blocked"]["reason"] == "breaks checkout"
    shown = (await viewer.get(RELEASE)).json()
    assert shown["blocked"]["by"] == "admin" and shown["pins"] == []
    plan = (await viewer.get(f"{RELEASE}/plan", params={"to": "Dev"})).json()
    assert "blocked by admin: breaks checkout" in plan["refused"]
    assert plan["rollback"] is False
    assert (await client.delete(f"{RELEASE}/block")).json()["blocked"] is None
    assert_problem(await client.delete(f"{RELEASE}/block"), 409, "conflict")
    assert (await client.post(f"{RELEASE}/update-variables")).json()["changed"] == []
    assert (await viewer.get("/projects/Database/pins")).json() == []


async def test_the_release_page_blocks_and_unblocks_for_those_who_may(
    app: FastAPI, client: httpx.AsyncClient, user_with: UserFactory, services: Services, shop: None
) -> None:
    assert (await client.post("/projects/Database/releases", json={"version": "1.0.0"})).is_success
    await person(user_with, services, "reader")
    async with browser(app) as reader:
        await sign_in(reader, "reader")
        page = await reader.get("/projects/database/releases/1.0.0")
        assert page.status_code == 200
        assert 'id="block-form"' not in page.text  # a viewer sees no controls
        refused = await reader.post(
            "/projects/database/releases/1.0.0/block",
            data={"csrf": form_token(page), "reason": "mine"},
        )
        assert refused.status_code == 403
    from conveyor.services.core import system_caller
    from conveyor.services.users import set_password

    await set_password(services, system_caller(), "admin", "a-long-enough-password")
    async with browser(app) as admin:
        await sign_in(admin, "admin")
        page = await admin.get("/projects/database/releases/1.0.0")
        assert 'id="block-form"' in page.text and 'id="blocked-banner"' not in page.text
        done = await admin.post(
            "/projects/database/releases/1.0.0/block",
            data={"csrf": form_token(page), "action": "block", "reason": "breaks <checkout>"},
            follow_redirects=True,
        )
        assert 'id="blocked-banner"' in done.text
        assert "breaks &lt;checkout&gt;" in done.text
        assert "The release is blocked" in done.text
        deploy = await admin.get("/projects/database/releases/1.0.0/deploy", params={"to": "Dev"})
        assert 'id="refused"' in deploy.text and 'value="deploy"' not in deploy.text
        again = await admin.post(
            "/projects/database/releases/1.0.0/block",
            data={"csrf": form_token(done), "action": "unblock"},
            follow_redirects=True,
        )
        assert 'id="blocked-banner"' not in again.text
        assert "The release is unblocked" in again.text


async def test_pinning_from_the_release_page_shows_on_the_dashboard(
    app: FastAPI, client: httpx.AsyncClient, services: Services, shop: None
) -> None:
    from conveyor.engine.node import Node
    from conveyor.services.core import system_caller
    from conveyor.services.users import set_password

    node = Node(services, slots=2, name="pin-page")
    await node.start()
    try:
        for version in ("1.0.0", "1.1.0"):
            made = await client.post("/projects/Database/releases", json={"version": version})
            assert made.is_success
            body = {"project": "Database", "version": version, "environment": "Dev"}
            task = (await client.post("/deployments", json=body)).json()["task"]
            ended = (await client.get(f"/tasks/{task}/wait", params={"timeout": 30})).json()
            assert ended["state"] == "success", ended
    finally:
        await node.stop()
    await set_password(services, system_caller(), "admin", "a-long-enough-password")
    async with browser(app) as admin:
        await sign_in(admin, "admin")
        page = await admin.get("/projects/database/releases/1.1.0")
        assert 'aria-label="Pin in Dev"' in page.text
        assert 'aria-label="Pin in Test"' not in page.text  # not current there: nothing to pin
        done = await admin.post(
            "/projects/database/releases/1.1.0/pin",
            data={
                "csrf": form_token(page),
                "action": "pin",
                "environment": "Dev",
                "reason": "demo on Friday",
            },
            follow_redirects=True,
        )
        assert 'id="pin-banner-dev"' in done.text and "demo on Friday" in done.text
        assert "Pinned in Dev." in done.text
        board = await admin.get("/")
        assert 'class="tag pin" title="Pinned by admin: demo on Friday"' in board.text
        # Going back to 1.0.0 is a rollback, and the pin refuses it until unpinned.
        back = await admin.get("/projects/database/releases/1.0.0/deploy", params={"to": "Dev"})
        assert 'id="rollback"' in back.text and 'id="refused"' in back.text
        assert "unpin" in back.text and 'value="deploy"' not in back.text
        undone = await admin.post(
            "/projects/database/releases/1.1.0/pin",
            data={"csrf": form_token(done), "action": "unpin", "environment": "Dev"},
            follow_redirects=True,
        )
        assert 'id="pin-banner-dev"' not in undone.text and "Unpinned in Dev." in undone.text
        assert 'class="tag pin"' not in (await admin.get("/")).text
