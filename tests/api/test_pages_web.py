"""The pages of issue 14, item 4, in process on both databases: environments (checks in words,
what each project has there), lifecycles, project settings, the package feed (and the refusal to
delete a pinned version), the deployments list's filters and durations, the audit log's
before/after diff and paging both ways, and the navigation's count of what waits for me (cheap:
a bounded number of queries, the same with a longer history).
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert, select, update

from conveyor.domain.errors import Conflict
from conveyor.domain.runtime import TaskState
from conveyor.services import deployments, documents, packages
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import set_password
from conveyor.services.waiting import waiting_count
from conveyor.store import tables as t
from tests.api.conftest import UserFactory
from tests.api.test_packages_api import zip_bytes
from tests.api.test_release_web import Person, _chunks, as_person, ended, shop
from tests.api.test_web import PASSWORD, form_token

__all__ = ["as_person", "shop"]  # fixtures, shared with the release pages' tests
DATABASE_PACKAGE = "OctoPetShop.Database"


def text_of(page: httpx.Response | str) -> str:
    """The page's text without tags, spaces collapsed: what a person reads."""
    markup = page if isinstance(page, str) else page.text
    words = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", markup)))
    return re.sub(r" ([,.:;])", r"\1", words)


async def _nobody(user_with: UserFactory, services: Services, admin: Caller) -> None:
    """A person with no role at all."""
    await user_with("nobody")
    await set_password(services, admin, "nobody", PASSWORD)


# ---------------------------------------------------------------- environments and lifecycles


async def test_environments_show_their_checks_in_words_and_what_each_project_has_there(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    await documents.update_document(
        services,
        admin,
        "environments",
        "Production",
        {
            "name": "Production",
            "checks": [
                {
                    "approval": {"teams": [{"team": "QA", "quorum": 1}, "Business Owner"]},
                    "windows": [
                        {
                            "days": ["mon", "tue"],
                            "start": "09:00",
                            "end": "16:00",
                            "time_zone": "Europe/London",
                        }
                    ],
                    "freezes": [
                        {
                            "name": "Year end",
                            "start": "2026-12-21T00:00:00Z",
                            "end": "2027-01-04T00:00:00Z",
                        }
                    ],
                    "run_latest": True,
                }
            ],
        },
    )
    await ended(services, admin, "Database", "1.0.1", "Development", TaskState.SUCCESS)
    qa = await as_person("qa")
    page = await qa.get("/environments")
    assert page.status_code == 200, page.text
    words = text_of(page)
    assert "Approval by QA and Business Owner (not the person who queued it nor the authors" in (
        words
    )
    assert "Deployments start only in: Mon, Tue 09:00 to 16:00 (Europe/London)." in words
    assert "Freeze Year end: from 2026-12-21T00:00:00Z until 2027-01-04T00:00:00Z." in words
    assert "Run latest: queuing a deployment cancels the older queued ones" in words
    assert "No checks: a deployment starts as soon as it is queued." in words  # Development
    development = page.text.split('id="env-development"')[1].split("</section>")[0]
    assert "/projects/database/releases/1.0.1" in development and "Success" in development
    assert 'href="/environments"' in page.text  # in the navigation
    assert 'class="table-wrap"' in development


async def test_lifecycles_show_phases_and_what_each_environment_holds(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    await ended(services, admin, "Database", "1.0.0", "Development", TaskState.SUCCESS)
    await ended(services, admin, "Database", "1.0.0", "Test", TaskState.FAILED)
    dev = await as_person("dev")
    page = await dev.get("/lifecycles")
    assert page.status_code == 200, page.text
    components = page.text.split('id="lifecycle-components"')[1].split("</section>")[0]
    words = text_of(components)
    assert "Used by: Database, Shopping Cart Service, Product Service, Website." in words
    assert "Development Required Development automatic Database 1.0.0 Success" in words
    assert "Test Required Test Database 1.0.0 Failed" in words
    assert "Staging Required Staging nothing yet" in words
    assert "Deploy All" in text_of(page)  # the Orchestration lifecycle


async def test_pages_of_environments_lifecycles_and_the_feed_refuse_who_may_not_view_them(
    shop: None, services: Services, admin: Caller, as_person: Person, user_with: UserFactory
) -> None:
    await _nobody(user_with, services, admin)
    nobody = await as_person("nobody")
    for address, permission in (
        ("/environments", "EnvironmentView"),
        ("/lifecycles", "LifecycleView"),
        ("/packages", "FeedView"),
    ):
        page = await nobody.get(address)
        assert page.status_code == 403, (address, page.text)
        assert permission in page.text and "Traceback" not in page.text
    home = await nobody.get("/")
    for address in ('href="/environments"', 'href="/packages"', 'href="/targets"'):
        assert address not in home.text


# ---------------------------------------------------------------- project settings


async def test_project_settings_are_edited_by_those_with_project_edit_only(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    dev = await as_person("dev")
    page = await dev.get("/projects/database/settings")
    assert page.status_code == 200, page.text
    assert 'href="/projects/database/settings" aria-current="page"' in page.text
    assert "Save settings" in page.text and "<fieldset disabled" not in page.text
    fields = {
        "csrf": form_token(page),
        "name": "Database",
        "group": "Octo Pet Shop",
        "lifecycle": "Components",
        "description": "The schema and its migrations",
        "watch_paths": "src/Database/**\n\nexamples/db/**\n",
        "guided_failure": "on",
        "disabled": "yes",
    }
    saved = await dev.post("/projects/database/settings", data=fields)
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/projects/database/settings?done=saved"
    after = await dev.get(saved.headers["location"])
    assert "Saved" in after.text and "The schema and its migrations" in after.text
    doc = await documents.get_document(services, admin, "projects", "Database")
    assert doc.data["watch_paths"] == ["src/Database/**", "examples/db/**"]
    assert doc.data["guided_failure"] == "on" and doc.data["disabled"] is True
    # What the service refuses shows the form again, as typed, with the reason.
    bad = await dev.post(
        "/projects/database/settings",
        data={**fields, "csrf": form_token(after), "name": "", "description": "Typed again"},
    )
    assert bad.status_code == 422, bad.text
    assert "must not be empty" in text_of(bad)
    assert "Typed again" in bad.text and 'name="watch_paths"' in bad.text
    assert "Save settings" in bad.text
    # Operations may edit Deploy All only: refused before the form is looked at (even if bad).
    ops = await as_person("ops")
    read_only = await ops.get("/projects/database/settings")
    assert read_only.status_code == 200 and "Save settings" not in read_only.text
    assert "<fieldset disabled" in read_only.text
    refused = await ops.post(
        "/projects/database/settings", data={"csrf": form_token(read_only), "name": ""}
    )
    assert refused.status_code == 403, refused.text
    assert "ProjectEdit" in refused.text
    again = await documents.get_document(services, admin, "projects", "Database")
    assert again.data["description"] == "The schema and its migrations"


# ---------------------------------------------------------------- the package feed


async def test_the_feed_lists_versions_with_their_pins_and_keeps_a_pinned_version(
    shop: None, services: Services, admin: Caller, as_person: Person, app: Any
) -> None:
    ops = await as_person("ops")
    page = await ops.get("/packages")
    assert page.status_code == 200, page.text
    section = page.text.split(f'id="package-{DATABASE_PACKAGE.lower().replace(".", "-")}"')
    assert len(section) == 2, page.text
    database = section[1].split("</section>")[0]
    rows = {v: r for v, r in re.findall(r'data-version="([^"]+)">(.*?)</tr>', database, re.S)}
    assert list(rows) == ["1.0.1", "1.0.0"]  # highest first
    info = await packages.get_package(services, admin, DATABASE_PACKAGE, "1.0.0")
    assert info.sha256 in rows["1.0.0"] and "by admin" in rows["1.0.0"]
    assert "/projects/database/releases/1.0.0" in rows["1.0.0"]  # Database 1.0.0 pinned it
    assert "/projects/database/releases/1.0.1" in rows["1.0.1"]
    assert "Delete" not in database  # ops does not administer the feed
    forged = await ops.post(
        "/packages/delete",
        data={"csrf": form_token(page), "package": DATABASE_PACKAGE, "version": "1.0.0"},
    )
    assert forged.status_code == 403 and "BuiltInFeedAdminister" in forged.text

    # The administrator: a pinned version is kept, with the reason; an unpinned one goes.
    await set_password(services, system_caller(), "admin", PASSWORD)
    boss = await as_person("admin")
    page = await boss.get("/packages")
    kept = await boss.post(
        "/packages/delete",
        data={"csrf": form_token(page), "package": DATABASE_PACKAGE, "version": "1.0.0"},
    )
    assert kept.status_code == 303
    told = await boss.get(kept.headers["location"])
    assert (
        f"{DATABASE_PACKAGE} 1.0.0 was not deleted: Database 1.0.0 pinned it, and a release "
        "deploys exactly the package versions it pinned." in html.unescape(told.text)
    )
    await packages.get_package(services, admin, DATABASE_PACKAGE, "1.0.0")  # still there
    await push_loose(services, admin, "1.0.2")
    page = await boss.get("/packages")
    assert 'aria-label="Delete OctoPetShop.Database 1.0.2"' in page.text
    gone = await boss.post(
        "/packages/delete",
        data={"csrf": form_token(page), "package": DATABASE_PACKAGE, "version": "1.0.2"},
    )
    assert gone.status_code == 303
    assert "Deleted OctoPetShop.Database 1.0.2." in (await boss.get(gone.headers["location"])).text
    infos = await packages.list_packages(services, admin, DATABASE_PACKAGE)
    assert [i.version for i in infos] == ["1.0.1", "1.0.0"]


async def push_loose(services: Services, admin: Caller, version: str) -> None:
    await packages.push_package(
        services,
        admin,
        _chunks(zip_bytes({"README": version.encode()})),
        file_name=f"{DATABASE_PACKAGE}.{version}.zip",
    )


async def test_the_service_refuses_to_delete_a_version_a_release_pinned(
    shop: None, services: Services, admin: Caller
) -> None:
    # Deploy All pins no package; Database 1.0.0 pinned 1.0.0 by name, another spelling too.
    with pytest.raises(Conflict) as refused:
        await packages.delete_package(services, admin, DATABASE_PACKAGE.lower(), "1.0.0.0")
    assert "Database 1.0.0 pinned it" in refused.value.message
    await push_loose(services, admin, "2.0.0")
    await packages.delete_package(services, admin, DATABASE_PACKAGE, "2.0.0")  # no release
    assert [i.version for i in await packages.list_packages(services, admin, DATABASE_PACKAGE)] == [
        "1.0.1",
        "1.0.0",
    ]


# ---------------------------------------------------------------- the deployments list


async def test_the_deployments_list_filters_and_shows_durations(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    await ended(services, admin, "Database", "1.0.0", "Development", TaskState.SUCCESS)
    await ended(services, admin, "Website", "1.0.0", "Development", TaskState.FAILED)
    ops = await as_person("ops")
    await deployments.deploy(services, admin, "Database", "1.0.1", "Development")
    # Durations: the first took 75 s; the second started but has not ended.
    async with services.tx(admin) as tx:
        start = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
        rows = (
            (await tx.session.execute(select(t.deployments.c.id).order_by(t.deployments.c.id)))
            .scalars()
            .all()
        )
        await tx.session.execute(
            update(t.deployments)
            .where(t.deployments.c.id == rows[0])
            .values(started_at=start, completed_at=start + timedelta(seconds=75))
        )
    page = await ops.get("/tasks")
    assert page.status_code == 200, page.text
    assert len(re.findall(r"<tr>", page.text)) == 1 + 3
    assert "1m 15s" in page.text
    by_project = await ops.get("/tasks", params={"project": "Website"})
    assert "/projects/website/releases/1.0.0" in by_project.text
    assert "/projects/database/" not in by_project.text.split("<tbody>")[1]
    assert "<option selected>Website</option>" in by_project.text
    failed = await ops.get("/tasks", params={"state": "failed", "environment": "Development"})
    body = failed.text.split("<tbody>")[1]
    assert "website" in body and "database" not in body
    nobody_did = await ops.get("/tasks", params={"who": "qa"})
    assert "No deployment matches." in nobody_did.text
    mine = await ops.get("/tasks", params={"who": "ADMIN", "project": "Database"})
    assert len(re.findall(r"<tr>", mine.text)) == 1 + 2
    wrong = await ops.get("/tasks", params={"state": "sleeping"})
    assert wrong.status_code == 422 and "is not a deployment state" in wrong.text


async def test_the_deployments_list_keeps_its_filters_when_paging(
    shop: None, services: Services, admin: Caller, as_person: Person, monkeypatch: Any
) -> None:
    from conveyor.web.routes import tasks as task_routes

    monkeypatch.setattr(task_routes, "PER_PAGE", 4)
    for _ in range(task_routes.PER_PAGE + 2):
        await deployments.deploy(services, admin, "Database", "1.0.1", "Development")
    await deployments.deploy(services, admin, "Website", "1.0.0", "Development")
    dev = await as_person("dev")
    first = await dev.get("/tasks", params={"project": "Database"})
    older = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert older, first.text
    link = html.unescape(older.group(1))
    assert link.startswith("/tasks?project=Database&before=")
    second = await dev.get(link)
    body = second.text.split("<tbody>")[1]
    assert len(re.findall(r"<tr>", body)) == 2 and "website" not in body
    assert 'href="/tasks?project=Database" rel="prev"' in second.text


# ---------------------------------------------------------------- the audit log


async def test_the_audit_log_shows_a_readable_diff_with_times_to_the_second(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    await documents.update_document(
        services,
        admin,
        "projects",
        "Website",
        {
            "name": "Website",
            "group": "Octo Pet Shop",
            "lifecycle": "Components",
            "description": "The shop front",
            "watch_paths": ["src/Web/**"],
        },
    )
    await documents.update_variables(
        services,
        admin,
        "Website",
        {"variables": [{"name": "Api.Key", "value": "hunter2-secret", "sensitive": True}]},
    )
    await set_password(services, system_caller(), "admin", PASSWORD)
    page = await (await as_person("admin")).get("/audit", params={"project": "Website"})
    assert page.status_code == 200, page.text
    assert "hunter2-secret" not in page.text
    rows = re.findall(
        r'<th scope="row">([^<]*)</th>'
        r'<td class="before">([^<]*)</td><td class="after">([^<]*)</td>',
        page.text,
    )
    assert ("description", "", "The shop front") in rows, rows
    assert ("variables[Api.Key]", "", "********") in rows  # masked, and said to have changed
    assert any(
        field.startswith("watch_paths") and after == "src/Web/**" for field, _, after in rows
    )
    assert '"fields"' not in page.text  # no raw JSON
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", page.text)


async def test_the_audit_log_pages_to_older_and_back_to_newer(
    shop: None, services: Services, admin: Caller, as_person: Person, monkeypatch: Any
) -> None:
    from conveyor.web.routes import audit as audit_routes

    monkeypatch.setattr(audit_routes, "PER_PAGE", 4)
    await set_password(services, system_caller(), "admin", PASSWORD)
    for i in range(audit_routes.PER_PAGE + 5):
        await documents.update_document(
            services, admin, "environments", "Test", {"name": "Test", "description": f"round {i}"}
        )
    boss = await as_person("admin")
    first = await boss.get("/audit", params={"category": "DocumentModified"})
    assert 'rel="prev"' not in first.text
    newest = re.findall(r'<span class="hint block">(Events-\d+)</span>', first.text)
    older = html.unescape(re.search(r'href="([^"]+)" rel="next"', first.text).group(1))
    assert "category=DocumentModified" in older and "before=" in older
    second = await boss.get(older)
    on_second = re.findall(r'<span class="hint block">(Events-\d+)</span>', second.text)
    assert on_second and not set(on_second) & set(newest)
    newer = html.unescape(re.search(r'href="([^"]+)" rel="prev"', second.text).group(1))
    assert "category=DocumentModified" in newer and "after=" in newer
    back = await boss.get(newer)
    assert re.findall(r'<span class="hint block">(Events-\d+)</span>', back.text) == newest
    assert 'rel="prev"' not in back.text and 'rel="next"' in back.text
    # A cursor that is no event's id is refused, naming the link's own parameter.
    for cursor in ("before", "after"):
        wrong = await boss.get("/audit", params={cursor: "garbage"})
        assert wrong.status_code == 422 and f"{cursor}: " in text_of(wrong), text_of(wrong)


# ---------------------------------------------------------------- what waits for me


async def test_the_navigation_counts_what_waits_for_me_and_stays_cheap(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    await documents.update_document(
        services,
        admin,
        "environments",
        "Staging",
        {"name": "Staging", "checks": [{"approval": {"teams": ["QA"]}}]},
    )
    for env in ("Development", "Test"):
        await ended(services, admin, "Database", "1.0.1", env, TaskState.SUCCESS)
    qa = await as_person("qa")
    assert '<span class="count">' not in (await qa.get("/")).text
    queued = await deployments.deploy(services, admin, "Database", "1.0.1", "Staging")
    page = await qa.get("/")
    assert '<span class="count">1<span class="sr-only"> waiting</span></span>' in page.text
    # An interruption QA may answer counts too.
    async with services.tx(admin) as tx:
        row = (
            await tx.session.execute(
                select(t.deployments).where(t.deployments.c.id == queued.deployment_id)
            )
        ).one()
        await tx.session.execute(insert(t.interruptions).values(**_interruption(row, tx.now)))
    assert '<span class="count">2<span' in (await qa.get("/projects")).text
    dev_page = await (await as_person("dev")).get("/")
    assert '<span class="count">' not in dev_page.text

    # Cheap: a few queries, as many with a long history as with a short one.
    caller = await _caller(services, "qa")
    few = await _queries(services, lambda: waiting_count(services, caller))
    async with services.tx(admin) as tx:
        for _ in range(40):
            values = _interruption(row, tx.now) | {"state": "answered", "result": "proceed"}
            await tx.session.execute(insert(t.interruptions).values(**values))
    assert await waiting_count(services, caller) == 2
    many = await _queries(services, lambda: waiting_count(services, caller))
    assert many == few and few <= 8, (few, many)


def _interruption(deployment: Any, now: datetime) -> dict[str, Any]:
    return {
        "task_id": deployment.task_id,
        "deployment_id": deployment.id,
        "project_id": deployment.project_id,
        "environment_id": deployment.environment_id,
        "step_idx": 0,
        "step_name": "Sign off",
        "kind": "manual_intervention",
        "title": "Sign off the release",
        "instructions": "Look at it",
        "responsible_teams": ["QA"],
        "settings": {},
        "state": "pending",
        "created_at": now,
        "answers": [],
    }


async def _caller(services: Services, username: str) -> Caller:
    from conveyor.services.access import caller_for_user, get_user

    async with services.read() as session:
        return await caller_for_user(session, await get_user(session, username))


async def _queries(services: Services, run: Any) -> int:
    counted: list[str] = []

    def count(*args: Any) -> None:
        counted.append(str(args[2]))

    engine = services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        await run()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(counted)
