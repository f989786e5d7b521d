"""People and access administered in the browser, in process, on both databases (issue 14,
item 2): add a person or a service account (the password or key shown once), set a password
(optionally to be changed at the next sign-in, which then comes before anything else),
deactivate and reactivate (the web sessions end), team membership and the scope of a team's
roles. The administrator may; dev is refused each, with a sentence, and the refusal audited;
each change is audited as the same change through the API is.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import set_password
from conveyor.store import tables as t
from tests.api.helpers import events
from tests.api.test_web import PASSWORD, browser, form_token, sign_in
from tests.conftest import EXAMPLE

SECRET = re.compile(r'<code class="secret">([^<]+)</code>')


@pytest.fixture
async def shop(services: Services, admin: Caller) -> None:
    """The example's people and teams; admin and dev sign in with PASSWORD."""
    await apply_text(services, admin, EXAMPLE.read_text(encoding="utf-8"))
    for person in ("admin", "dev", "qa"):
        await set_password(services, system_caller(), person, PASSWORD)


@asynccontextmanager
async def signed_in(app: FastAPI, username: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A browser signed in as ``username``, and its form token."""
    async with browser(app) as client:
        answer = await sign_in(client, username)
        assert answer.status_code == 303, answer.text
        yield client, form_token(await client.get("/account"))


async def post(
    client: httpx.AsyncClient, csrf: str, url: str, **data: str | list[str]
) -> httpx.Response:
    return await client.post(url, data={"csrf": csrf, **data})


async def sessions_of(services: Services, username: str) -> int:
    async with services.read() as session:
        count = await session.execute(
            select(func.count())
            .select_from(t.web_sessions)
            .join(t.users, t.users.c.id == t.web_sessions.c.user_id)
            .where(t.users.c.username == username)
        )
        return int(count.scalar_one())


async def test_adding_a_person_shows_the_password_once_and_the_first_sign_in_asks_for_a_new_one(
    app: FastAPI, services: Services, shop: None
) -> None:
    async with signed_in(app, "admin") as (admin, csrf):
        people = await admin.get("/people")
        assert "Add a person" in people.text
        added = await post(
            admin,
            csrf,
            "/people/users",
            username="erin",
            display_name="Erin Engineer",
            email="erin@example.com",
            must_change="1",
        )
        assert added.status_code == 303 and added.headers["location"].startswith(
            "/people/users/erin"
        )
        page = await admin.get(added.headers["location"])
        found = SECRET.search(page.text)
        assert found and "shown only this once" in page.text, page.text
        password = html.unescape(found.group(1))
        assert "must choose their own when they next sign in" in page.text
        assert "must be changed at the next sign-in" in page.text
        again = await admin.get(added.headers["location"])
        assert password not in again.text and not SECRET.search(again.text)
        # A name taken: said on the form, with what was typed kept.
        taken = await post(admin, csrf, "/people/users", username="erin", display_name="Other")
        assert taken.status_code == 409 and "already exists" in taken.text
        assert 'value="Other"' in taken.text

    created = await events(services, "DocumentCreated")
    assert any(e.message == 'admin created user "erin"' for e in created)
    changed = (await events(services, "PasswordChanged"))[-1]
    assert changed.details["must_change"] is True and password not in str(changed.details)

    async with browser(app) as erin:
        first = await sign_in(erin, "erin", password)
        assert first.status_code == 303
        # Before anything else: the new password, for pages and for the API the pages use.
        home = await erin.get("/")
        assert home.status_code == 303
        assert home.headers["location"] == "/account/new-password?next=%2F"
        assert (await erin.get("/api/v1/me")).json()["code"] == "password_change_required"
        asked = await erin.get("/account/new-password?next=/projects")
        assert "Choose a new password" in asked.text
        token = form_token(asked)
        differ = await post(
            erin,
            token,
            "/account/new-password",
            new_password="a-new-long-password",
            confirm_password="another-long-password",
            next="/projects",
        )
        assert differ.status_code == 422 and "differ" in differ.text
        chosen = await post(
            erin,
            token,
            "/account/new-password",
            new_password="a-new-long-password",
            confirm_password="a-new-long-password",
            next="/projects",
        )
        assert chosen.status_code == 303 and chosen.headers["location"] == "/projects"
        assert (await erin.get("/")).status_code == 200
        # Asked once: afterwards the account page (with the current password) is the way.
        later = await erin.get("/account/new-password")
        assert later.status_code == 303 and later.headers["location"] == "/account"
    async with browser(app) as erin:
        assert (await sign_in(erin, "erin", password)).status_code == 401
        assert (await sign_in(erin, "erin", "a-new-long-password")).status_code == 303
        assert (await erin.get("/")).status_code == 200
    own = (await events(services, "PasswordChanged"))[-1]
    assert own.details["own"] is True and "must_change" not in own.details


async def test_a_service_account_gets_an_api_key_shown_once(
    app: FastAPI, services: Services, shop: None
) -> None:
    async with signed_in(app, "admin") as (admin, csrf):
        added = await post(admin, csrf, "/people/users", username="ci", service_account="1")
        page = await admin.get(added.headers["location"])
        found = SECRET.search(page.text)
        assert found and "The API key of ci" in page.text
        assert "API keys only" in page.text and "Set a new password" not in page.text
        api_key = html.unescape(found.group(1))
    async with browser(app) as script:
        me = await script.get("/api/v1/me", headers={"X-API-Key": api_key})
        assert me.status_code == 200 and me.json()["username"] == "ci"


async def test_setting_a_password_without_a_required_change(
    app: FastAPI, services: Services, shop: None
) -> None:
    async with signed_in(app, "qa") as (qa, _), signed_in(app, "admin") as (admin, csrf):
        done = await post(admin, csrf, "/people/users/qa/password")
        assert done.status_code == 303
        page = await admin.get(done.headers["location"])
        found = SECRET.search(page.text)
        assert found and "must choose their own when they next sign in" not in page.text
        # qa's session ended with the old password.
        assert (await qa.get("/")).status_code == 303
    async with browser(app) as again:
        assert (await sign_in(again, "qa", html.unescape(found.group(1)))).status_code == 303
        assert (await again.get("/")).status_code == 200


async def test_deactivating_ends_the_web_sessions_and_reactivating_allows_sign_in(
    app: FastAPI, services: Services, shop: None
) -> None:
    async with signed_in(app, "dev") as (dev, _), signed_in(app, "admin") as (admin, csrf):
        assert (await dev.get("/")).status_code == 200
        off = await post(admin, csrf, "/people/users/dev/active", active="0")
        assert off.status_code == 303
        page = await admin.get(off.headers["location"])
        assert "Deactivated" in page.text and "Reactivate dev" in page.text
        assert await sessions_of(services, "dev") == 0
        gone = await dev.get("/")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/sign-in")
        async with browser(app) as retry:
            assert (await sign_in(retry, "dev")).status_code == 401
        # Nobody locks themselves out: not offered, and refused.
        own = await admin.get("/people/users/admin")
        assert "Deactivate admin" not in own.text and 'href="/account"' in own.text
        self_off = await post(admin, csrf, "/people/users/admin/active", active="0")
        assert self_off.status_code == 409 and "cannot deactivate yourself" in self_off.text
        on = await post(admin, csrf, "/people/users/dev/active", active="1")
        assert on.status_code == 303
    async with browser(app) as back:
        assert (await sign_in(back, "dev")).status_code == 303
    modified = [e.message for e in await events(services, "DocumentModified")]
    assert 'admin deactivated user "dev"' in modified
    assert 'admin changed user "dev"' in modified


async def test_team_membership_from_the_person_and_the_team_page(
    app: FastAPI, services: Services, shop: None
) -> None:
    async with signed_in(app, "admin") as (admin, csrf):
        person = await admin.get("/people/users/qa")
        assert 'href="/people/teams/qa"' in person.text and "Add to the team" in person.text
        joined = await post(admin, csrf, "/people/users/qa/teams", team="Developer", member="1")
        assert joined.status_code == 303
        team = await admin.get("/people/teams/developer")
        assert 'href="/people/users/qa"' in team.text
        left = await post(admin, csrf, "/people/teams/developer/members", username="qa")
        assert left.status_code == 303
        team = await admin.get(left.headers["location"])
        assert 'href="/people/users/qa"' not in team.text and "Removed" in team.text
    changes = [e for e in await events(services, "DocumentModified") if "team" in e.message]
    assert [e.message for e in changes[-2:]] == ['admin changed team "Developer"'] * 2
    members = [f for f in changes[-2].details["fields"] if f["field"] == "members"]
    assert members == [{"field": "members", "before": ["dev"], "after": ["dev", "qa"]}]


async def test_the_scope_of_a_teams_roles(app: FastAPI, services: Services, shop: None) -> None:
    async with signed_in(app, "admin") as (admin, csrf):
        page = await admin.get("/people/teams/qa")
        assert "Save the scope of Approver" in page.text
        saved = await post(
            admin,
            csrf,
            "/people/teams/qa/roles/1",
            role="Approver",
            environments=["Production"],
        )
        assert saved.status_code == 303
        added = await post(
            admin,
            csrf,
            "/people/teams/qa/roles",
            role="Project Deployer",
            projects=["Website"],
            environments=["Test"],
        )
        assert added.status_code == 303
        # The form was for Approver at 1: a stale form is refused, not applied to another role.
        stale = await post(admin, csrf, "/people/teams/qa/roles/2", role="Approver", remove="1")
        assert stale.status_code == 409 and "changed meanwhile" in stale.text
        unknown = await post(admin, csrf, "/people/teams/qa/roles", role="Nope")
        assert unknown.status_code == 422 and "Traceback" not in unknown.text
        # Named as the person chose it, not as a path into the team's document.
        assert "user role &#34;Nope&#34; does not exist" in unknown.text, unknown.text
        assert "roles[" not in unknown.text, unknown.text
        removed = await post(
            admin, csrf, "/people/teams/qa/roles/2", role="Project Deployer", remove="1"
        )
        assert removed.status_code == 303
    answer = await admin_api_team(app, services)
    assert answer["roles"] == [
        {"role": "Project Viewer"},
        {"role": "Approver", "environments": ["Production"]},
    ]
    fields = (await events(services, "DocumentModified"))[-1].details["fields"]
    assert fields[0]["field"] == "roles"


async def admin_api_team(app: FastAPI, services: Services) -> dict[str, object]:
    from conveyor.services import documents

    doc = await documents.get_document(services, system_caller(), "teams", "QA")
    return doc.data


async def test_dev_is_refused_every_change_with_a_sentence_and_it_is_audited(
    app: FastAPI, services: Services, shop: None
) -> None:
    async with signed_in(app, "dev") as (dev, csrf):
        people = await dev.get("/people")
        assert people.status_code == 200 and "Add a person" not in people.text
        person = await dev.get("/people/users/qa")
        assert "Set a new password" not in person.text and "Deactivate" not in person.text
        team = await dev.get("/people/teams/qa")
        assert team.status_code == 200 and "Save the scope" not in team.text
        attempts = {
            # Authorised before validating: an empty name is not what dev is told about.
            "/people/users": {"username": ""},
            "/people/users/qa/password": {"must_change": "1"},
            "/people/users/qa/api-keys": {"name": "mine"},
            "/people/users/qa/active": {"active": "0"},
            "/people/users/qa/teams": {"team": "Developer", "member": "1"},
            "/people/teams/qa/members": {"username": "dev", "member": "1"},
            "/people/teams/qa/roles": {"role": "System Administrator"},
            "/people/teams/qa/roles/0": {"role": "Project Viewer", "remove": "1"},
        }
        for url, data in attempts.items():
            refused = await post(dev, csrf, url, **data)
            assert refused.status_code == 403, (url, refused.text)
            assert "UserEdit" in refused.text or "TeamEdit" in refused.text, url
            assert "Traceback" not in refused.text
    denied = await events(services, "AccessDenied")
    assert len([e for e in denied if e.message.startswith("dev was refused")]) >= len(attempts)
    async with services.read() as session:
        active = await session.execute(select(t.users.c.active).where(t.users.c.username == "qa"))
        assert active.scalar_one() is True
    assert (await admin_api_team(app, services))["members"] == ["qa"]
