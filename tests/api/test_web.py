"""The web UI in process: sign-in and sessions, form tokens, throttling, errors as pages.

The browser tests (tests/e2e/test_web.py) walk the story; these pin down the security rules
quickly, on both databases.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conveyor.api.app import create_app
from conveyor.domain.errors import Unauthenticated
from conveyor.services import sessions
from conveyor.services.core import Services, system_caller
from conveyor.services.users import add_user
from conveyor.settings import Settings
from conveyor.web.session import COOKIE
from tests.api.conftest import UserFactory
from tests.api.helpers import events

BASE = "http://conveyor.test"
PASSWORD = "a-long-enough-password"
VIEWER = [{"role": "Project Viewer"}]


def browser(app: FastAPI, base: str = BASE) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


def form_token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> Any:
    page = await client.get("/sign-in")
    return await client.post(
        "/sign-in",
        data={"csrf": form_token(page), "username": username, "password": password, "next": "/"},
    )


async def person(user_with: UserFactory, services: Services, name: str) -> None:
    await user_with(name, VIEWER)
    from conveyor.services.users import set_password

    await set_password(services, system_caller(), name, PASSWORD)


async def test_signing_in_sets_a_protected_cookie_and_pages_carry_security_headers(
    app: FastAPI, services: Services, user_with: UserFactory
) -> None:
    await person(user_with, services, "dana")
    async with browser(app) as client:
        first = await client.get("/", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/sign-in?next=%2F"
        signed = await sign_in(client, "dana")
        assert signed.status_code == 303, signed.text
        cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
        page = await client.get("/")
        assert page.status_code == 200 and "Dashboard" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "<script>" not in page.text and 'style="' not in page.text
        me = await client.get("/api/v1/me")
        assert me.json()["username"] == "dana"
    # Only the hash of the session id is stored.
    token = client.cookies.get(COOKIE) or ""
    async with services.read() as session:
        from sqlalchemy import select

        from conveyor.store import tables as t

        stored = (await session.execute(select(t.web_sessions.c.token_hash))).scalars().all()
    assert token and token not in stored and sessions.token_hash(token) in stored


async def test_the_cookie_is_secure_when_the_public_url_is_https(
    settings: Settings, services: Services, user_with: UserFactory
) -> None:
    await person(user_with, services, "dana")
    app = create_app(settings.model_copy(update={"public_url": "https://cd.example"}), services)
    # A browser sends Secure cookies back only over https.
    async with browser(app, "https://cd.example") as client:
        signed = await sign_in(client, "dana")
    cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "Secure" in cookie


async def test_every_post_needs_the_form_token(
    app: FastAPI, services: Services, user_with: UserFactory
) -> None:
    await person(user_with, services, "dana")
    async with browser(app) as client:
        # Even the sign-in form: another site cannot sign a browser in.
        forged = await client.post("/sign-in", data={"username": "dana", "password": PASSWORD})
        assert forged.status_code == 403 and "did not come from this Conveyor" in forged.text
        await sign_in(client, "dana")
        refused = await client.post("/account/api-keys", data={"name": "x", "csrf": "wrong"})
        assert refused.status_code == 403 and "Traceback" not in refused.text
        # The API honours the session, but a change needs the page's token in a header.
        api = await client.post("/api/v1/users/dana/api-keys", json={"name": "cli"})
        assert api.status_code == 403 and api.json()["code"] == "csrf_token_missing"
        token = form_token(await client.get("/account"))
        ok = await client.post(
            "/api/v1/users/dana/api-keys", json={"name": "cli"}, headers={"X-CSRF-Token": token}
        )
        assert ok.status_code == 201, ok.text


async def test_throttling_per_username_and_its_window(services: Services) -> None:
    await add_user(services, system_caller(), "erin", password=PASSWORD)
    start = services.clock()
    for _ in range(sessions.MAX_PER_USER):
        with pytest.raises(Unauthenticated):
            await sessions.sign_in(services, "erin", "wrong", "10.0.0.1")
    # The name is throttled from the address that guessed it, even with the right password...
    with pytest.raises(sessions.SignInThrottled) as throttled:
        await sessions.sign_in(services, "erin", PASSWORD, "10.0.0.1")
    assert "Wait 5 minutes" in throttled.value.message
    assert 0 < throttled.value.retry_after <= 301
    refused = await events(services, "LoginFailed")
    assert refused[-1].details["reason"] == "throttled"
    # ...but the guesser cannot lock erin out: from her own address she signs in.
    assert (await sessions.sign_in(services, "erin", PASSWORD, "10.0.0.2")).caller.username
    services.clock = lambda: start + timedelta(minutes=5, seconds=2)
    session = await sessions.sign_in(services, "erin", PASSWORD, "10.0.0.1")
    assert session.caller.username == "erin"


async def test_throttling_per_address(services: Services) -> None:
    await add_user(services, system_caller(), "finn", password=PASSWORD)
    for i in range(sessions.MAX_PER_ADDRESS):
        with pytest.raises(Unauthenticated):
            await sessions.sign_in(services, f"guess{i}", "wrong", "10.9.9.9")
    with pytest.raises(sessions.SignInThrottled):
        await sessions.sign_in(services, "finn", PASSWORD, "10.9.9.9")
    assert (await sessions.sign_in(services, "finn", PASSWORD, "10.1.1.1")).caller.username


async def test_a_throttled_sign_in_page_says_how_long_to_wait(
    app: FastAPI, services: Services
) -> None:
    await add_user(services, system_caller(), "gus", password=PASSWORD)
    async with browser(app) as client:
        for _ in range(sessions.MAX_PER_USER):
            assert (await sign_in(client, "gus", "wrong")).status_code == 401
        page = await sign_in(client, "gus")
    assert page.status_code == 429 and int(page.headers["retry-after"]) > 0
    assert "Too many failed sign-ins. Wait 5 minutes, then try again." in page.text


async def test_sessions_expire_and_end_at_sign_out(
    app: FastAPI, services: Services, settings: Settings
) -> None:
    await add_user(services, system_caller(), "hana", password=PASSWORD)
    session = await sessions.sign_in(services, "hana", PASSWORD)
    assert await sessions.resume(services, session.token) is not None
    later = services.clock() + timedelta(hours=settings.session_hours, seconds=1)
    clock = services.clock
    services.clock = lambda: later
    assert await sessions.resume(services, session.token) is None
    services.clock = clock
    async with browser(app) as client:
        await sign_in(client, "hana")
        page = await client.get("/account")
        out = await client.post("/sign-out", data={"csrf": form_token(page)})
        assert out.status_code == 303 and out.headers["location"] == "/sign-in"
        assert (await client.get("/account")).status_code == 303
    assert [e.actor for e in await events(services, "LoggedOut")] == ["hana"]


async def test_changing_ones_password_ends_the_other_sessions(
    app: FastAPI, services: Services
) -> None:
    await add_user(services, system_caller(), "ivy", password=PASSWORD)
    other = await sessions.sign_in(services, "ivy", PASSWORD)
    async with browser(app) as client:
        await sign_in(client, "ivy")
        token = form_token(await client.get("/account"))
        wrong = await client.post(
            "/account/password",
            data={
                "csrf": token,
                "current_password": "nope",
                "new_password": "another-long-password",
                "confirm_password": "another-long-password",
            },
        )
        assert wrong.status_code == 422 and "The current password is wrong." in wrong.text
        changed = await client.post(
            "/account/password",
            data={
                "csrf": token,
                "current_password": PASSWORD,
                "new_password": "another-long-password",
                "confirm_password": "another-long-password",
            },
        )
        assert changed.status_code == 303
        assert (await client.get("/account")).status_code == 200  # this session goes on
    assert await sessions.resume(services, other.token) is None


async def test_own_api_keys_are_shown_once_listed_and_revoked(
    app: FastAPI, services: Services
) -> None:
    await add_user(services, system_caller(), "jo", password=PASSWORD)
    async with browser(app) as client:
        await sign_in(client, "jo")
        token = form_token(await client.get("/account"))
        created = await client.post("/account/api-keys", data={"csrf": token, "name": "laptop"})
        assert created.status_code == 303  # redirect after post; the page shows the key once
        shown = await client.get(created.headers["location"])
        key = re.search(r'id="new-key">(API-[0-9A-F]+)<', shown.text)
        assert key
        listed = await client.get("/account")
        assert key.group(1) not in listed.text and key.group(1)[:8] in listed.text
        ident = re.search(r'/account/api-keys/(ApiKeys-\d+)/revoke"', listed.text)
        assert ident
        revoked = await client.post(
            f"/account/api-keys/{ident.group(1)}/revoke", data={"csrf": token}
        )
        assert revoked.status_code == 303
    using = await httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"X-Api-Key": key.group(1)}
    ).get("/api/v1/me")
    assert using.status_code == 401


async def test_domain_errors_are_pages_with_a_sentence_and_the_right_status(
    app: FastAPI, services: Services, user_with: UserFactory, shop: None
) -> None:
    await person(user_with, services, "kim")
    async with browser(app) as client:
        await sign_in(client, "kim")
        missing = await client.get("/projects/no-such-project")
        assert missing.status_code == 404
        assert 'Project "no-such-project" does not exist.' in html.unescape(missing.text)
        assert missing.headers["content-type"].startswith("text/html")
        variables = await client.get("/projects/web/variables")
        assert variables.status_code == 403 and "kim may not VariableView" in variables.text
        board = await client.get("/dashboard/board")
        etag = board.headers["etag"]
        again = await client.get("/dashboard/board", headers={"If-None-Match": etag})
        assert again.status_code == 304
    async with browser(app) as stranger:
        assert (await stranger.get("/dashboard/board")).status_code == 401
        # Unknown API paths stay problem+json.
        api = await stranger.get("/api/v1/no-such-thing")
        assert api.status_code == 404 and api.headers["content-type"].startswith(
            "application/problem+json"
        )


async def test_process_edits_are_checked_by_version_permission_and_validation(
    app: FastAPI, services: Services, user_with: UserFactory, shop: None
) -> None:
    from conveyor.services import documents

    steps = [
        {"name": "Migrate", "type": "script", "script": "echo migrate"},
        {"name": "Smoke test", "type": "script", "script": "echo ok"},
    ]
    await documents.update_process(services, system_caller(), "Web", {"version": 0, "steps": steps})
    await user_with("lee", [{"role": "Project Contributor"}])
    await person(user_with, services, "max")  # a viewer
    from conveyor.services.users import set_password

    await set_password(services, system_caller(), "lee", PASSWORD)
    async with browser(app) as client:
        await sign_in(client, "lee")
        page = await client.get("/projects/web/process")
        assert page.status_code == 200 and "Save step 1" in page.text
        token = form_token(page)
        version = re.search(r'name="version" value="(\d+)"', page.text)
        assert version
        form = {"csrf": token, "version": version.group(1), "name": "Migrate the database"}
        form |= {"script": "echo migrate", "syntax": "bash", "condition": "success"}
        form |= {"start": "after_previous", "timeout": "120"}
        saved = await client.post("/projects/web/process/steps/0", data=form)
        assert saved.status_code == 303, saved.text
        # The same form again: the process changed since it was read.
        stale = await client.post("/projects/web/process/steps/0", data=form)
        assert stale.status_code == 409 and "changed since you read it" in stale.text
        fresh = await client.get("/projects/web/process")
        current = re.search(r'name="version" value="(\d+)"', fresh.text)
        assert current and "Migrate the database" in fresh.text and "120" in fresh.text
        moved = await client.post(
            "/projects/web/process/steps/0/move",
            data={"csrf": token, "version": current.group(1), "direction": "down"},
        )
        assert moved.status_code == 303
        order = await documents.get_process(services, system_caller(), "Web")
        assert [s["name"] for s in order["steps"]] == ["Smoke test", "Migrate the database"]
        bad = await client.post(
            "/projects/web/process/steps/0",
            data={**form, "version": str(order["version"]), "name": ""},
        )
        assert bad.status_code == 422 and "must not be empty" in bad.text
    async with browser(app) as viewer:
        await sign_in(viewer, "max")
        page = await viewer.get("/projects/web/process")
        assert page.status_code == 200 and "Save step" not in page.text
        refused = await viewer.post(
            "/projects/web/process/steps/0/remove",
            data={"csrf": form_token(page), "version": str(order["version"])},
        )
        assert refused.status_code == 403 and "max may not ProcessEdit" in refused.text
