"""Build information as data (docs/build-servers.md), on SQLite and PostgreSQL: pushed through the
service and Conveyor's own API (``/api/v1/packages/{id}/{version}/build-information``), one row
per package version with the overwrite modes, refused before it is looked at when the caller
may not push, audited with a summary only, shown on the package page, and taken by a release
that pins the package (its commit, branch and commits with their times), which change
detection and plans then read."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from conveyor.api.app import create_app
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from conveyor.services import build_information as builds
from conveyor.services import buildinfo, deployments
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import create_api_key, set_password
from conveyor.settings import Settings
from conveyor.store import tables as t
from tests.api.helpers import events
from tests.api.test_web import PASSWORD, browser, sign_in
from tests.integration.test_packages import make_zip, push, user_with_role

SHA = "0123456789abcdef0123456789abcdef01234567"
OLDER = "89abcdef0123456789abcdef0123456789abcdef"

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Main
    phases:
      - name: Dev
        environments: [Dev]
project_groups:
  - name: Shop
projects:
  - name: Web
    group: Shop
    lifecycle: Main
    process:
      steps:
        - name: Deploy site
          type: package
          package: Hello
          target_roles: [web]
        - name: Deploy api
          type: package
          package: GoodBye
          target_roles: [web]
"""

PUSHED = {
    "branch": "refs/heads/main",
    "build_number": 42,
    "build_url": "https://ci.example.com/runs/42",
    "vcs_type": "Git",
    "vcs_root": "https://robot:s3cret-token@git.example.com/shop.git",
    "vcs_commit": SHA,
    "commits": [
        {
            "id": SHA,
            "comment": "Faster checkout: the secret sauce",
            "author": "Ada",
            "timestamp": "2026-11-30T10:15:00+01:00",
            "link": "https://git.example.com/shop/commit/0123456",
        },
        {"sha": OLDER, "message": "Earlier work", "timestamp": "2026-11-29T08:00:00Z"},
    ],
}


async def rows(services: Services) -> int:
    async with services.read() as session:
        query = select(func.count()).select_from(t.build_information)
        return int((await session.execute(query)).scalar_one())


async def test_push_read_and_the_overwrite_modes(services: Services, admin: Caller) -> None:
    first = await builds.push(services, admin, "Hello", "1.0.0", PUSHED)
    assert first.outcome == "created"
    # Any spelling of the version and any case of the id finds it.
    got = await builds.get(services, admin, "hello", "1.0")
    shown = got.as_dict()
    assert (shown["package_id"], shown["version"], shown["pushed_by"]) == (
        "Hello",
        "1.0.0",
        "admin",
    )
    assert shown["branch"] == "refs/heads/main" and shown["build_number"] == "42"
    # A token in a repository address is not kept.
    assert shown["vcs_root"] == "https://git.example.com/shop.git"
    assert shown["commits"] == [
        {
            "id": SHA,
            "comment": "Faster checkout: the secret sauce",
            "author": "Ada",
            "timestamp": "2026-11-30T09:15:00Z",
            "link": "https://git.example.com/shop/commit/0123456",
        },
        {"id": OLDER, "comment": "Earlier work", "timestamp": "2026-11-29T08:00:00Z"},
    ]

    with pytest.raises(Conflict, match="mode=overwrite"):
        await builds.push(services, admin, "HELLO", "1.0", {"vcs_commit": OLDER})
    kept = await builds.push(services, admin, "Hello", "1.0.0.0", {"vcs_commit": OLDER}, "ignore")
    assert kept.outcome == "kept" and kept.found.record.vcs_commit == SHA
    replaced = await builds.push(
        services, admin, "Hello", "1.0.0", {"vcs_commit": OLDER}, "OverwriteExisting"
    )
    assert replaced.outcome == "replaced" and replaced.found.row_id == first.found.row_id
    now = await builds.get(services, admin, "Hello", "1.0.0")
    assert now.record.vcs_commit == OLDER and now.record.commits == ()
    assert await rows(services) == 1
    with pytest.raises(NotFound, match=r"no build information was pushed for Hello 2\.0\.0"):
        await builds.get(services, admin, "Hello", "2.0.0")

    # Bad input names every field that is wrong; nothing is stored.
    with pytest.raises(ValidationFailed) as bad:
        await builds.push(
            services,
            admin,
            "Other",
            "1.x",
            {
                "colour": "blue",
                "build_url": "javascript:alert(1)",
                "commits": [{"id": SHA, "timestamp": "yesterday"}, {"comment": "no id"}],
            },
            "sometimes",
        )
    paths = {p.path for p in bad.value.problems}
    assert {
        ("version",),
        ("mode",),
        (),
        ("build_url",),
        ("commits", 0, "timestamp"),
        ("commits", 1, "id"),
    } <= paths
    assert await rows(services) == 1

    # Each push that stored something is audited, with a summary and never the commits.
    pushed = await events(services, "BuildInformationPushed")
    assert len(pushed) == 2
    details = pushed[0].details
    assert details["build"]["commits"] == 2 and details["build"]["vcs_commit"] == SHA
    assert pushed[1].details["replaced"]["vcs_commit"] == SHA
    text = json.dumps([e.details for e in pushed]) + "".join(e.message for e in pushed)
    assert "secret sauce" not in text and "Earlier work" not in text and "s3cret" not in text


async def test_a_push_is_refused_before_what_was_sent_is_looked_at(
    services: Services, settings: Settings
) -> None:
    viewer = await user_with_role(services, "viewer", "Release Creator")  # FeedView, no push
    with pytest.raises(PermissionDenied, match="BuildInformationPush"):
        await builds.push(services, viewer, "not a package", "nonsense", {"commits": 3})
    refused = await events(services, "AccessDenied")
    assert refused and refused[-1].actor == "viewer"
    outsider = await user_with_role(services, "outsider", "Environment Viewer")  # no FeedView
    with pytest.raises(PermissionDenied, match="FeedView"):
        await builds.get(services, outsider, "Hello", "1.0.0")

    # The same through the API: 403 for a body that would be refused, then 201 / 200 / 409.
    app = create_app(settings, services)
    keys = {
        name: await create_api_key(services, system_caller(), name, "test")
        for name in ("admin", "viewer", "outsider")
    }

    def client(name: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://conveyor.test/api/v1",
            headers={"X-Api-Key": keys[name]},
        )

    url = "/packages/Hello/1.0.0/build-information"
    async with client("viewer") as v, client("admin") as a, client("outsider") as o:
        denied = await v.post(url, json=[1, 2])
        assert denied.status_code == 403 and "BuildInformationPush" in denied.text
        created = await a.post(url, json={"vcs_commit": SHA, "commits": [{"id": SHA}]})
        assert created.status_code == 201, created.text
        assert created.json()["outcome"] == "created"
        assert created.json()["commits"] == [{"id": SHA}]
        again = await a.post(url, json={"vcs_commit": OLDER})
        assert again.status_code == 409 and "mode=overwrite" in again.json()["message"]
        ignored = await a.post(url, params={"mode": "ignore"}, json={"vcs_commit": OLDER})
        assert ignored.status_code == 200 and ignored.json()["vcs_commit"] == SHA
        bad = await a.post(url, json={"commits": "many"})
        assert bad.status_code == 422 and bad.json()["problems"][0]["path"] == "commits"
        read = await v.get(url)
        assert read.status_code == 200 and read.json()["vcs_commit"] == SHA
        assert (await o.get(url)).status_code == 403
        missing = await a.get("/packages/Hello/9.9.9/build-information")
        assert missing.status_code == 404


async def test_a_release_takes_the_build_of_the_packages_it_pins(
    services: Services, admin: Caller, settings: Settings, tmp_path: Path
) -> None:
    await apply_text(services, admin, CONFIG)
    for package, version in (("Hello", "1.0.0"), ("Hello", "1.1.0"), ("GoodBye", "2.0.0")):
        zipped = make_zip(tmp_path / f"{package}.{version}.zip", {"index.html": b"hi"})
        await push(services, admin, zipped)
    await builds.push(services, admin, "Hello", "1.0.0", PUSHED)
    await builds.push(
        services,
        admin,
        "GoodBye",
        "2.0.0",
        {"branch": "other", "commits": [{"id": "fedcba9876543210", "comment": "Bye"}]},
    )

    release, _ = await deployments.create_release(
        services, admin, "Web", version="1.0.0", packages={"Hello": "1.0", "GoodBye": "2.0.0"}
    )
    assert release.build == {
        "commit": SHA,
        "branch": "main",
        "build_url": "https://ci.example.com/runs/42",
        "commits": [
            {
                "sha": SHA,
                "author": "Ada",
                "message": "Faster checkout: the secret sauce",
                "timestamp": "2026-11-30T09:15:00Z",
            },
            {
                "sha": OLDER,
                "author": "",
                "message": "Earlier work",
                "timestamp": "2026-11-29T08:00:00Z",
            },
            {"sha": "fedcba9876543210", "author": "", "message": "Bye"},
        ],
    }
    # Change detection (--since last-release) starts from that commit.
    [web] = await buildinfo.baselines(services, admin, project="Web")
    assert (web["release"], web["commit"]) == ("1.0.0", SHA)

    # A release with a commit of its own keeps it; one with only a branch takes the packages'.
    own, _ = await deployments.create_release(
        services, admin, "Web", version="1.0.1", build={"commit": OLDER}
    )
    assert own.build["commit"] == OLDER and own.build["commits"] == []
    branch, _ = await deployments.create_release(
        services,
        admin,
        "Web",
        version="1.0.2",
        packages={"Hello": "1.0.0"},
        build={"branch": "hotfix"},
    )
    assert (branch.build["commit"], branch.build["branch"]) == (SHA, "hotfix")
    # Hello 1.1.0 has none: the build of the other package it pins (GoodBye's highest, 2.0.0).
    other, _ = await deployments.create_release(
        services, admin, "Web", version="1.0.3", packages={"Hello": "1.1.0"}
    )
    assert (other.build["commit"], other.build["branch"]) == (None, "other")
    assert [c["sha"] for c in other.build["commits"]] == ["fedcba9876543210"]

    # The package page shows each version's build information.
    await set_password(services, system_caller(), "admin", PASSWORD)
    async with browser(create_app(settings, services)) as page_client:
        assert (await sign_in(page_client, "admin")).status_code == 303
        page = await page_client.get("/packages")
    assert page.status_code == 200, page.text
    hello = page.text.split('id="package-hello"')[1].split("</section>")[0]
    row = hello.split('data-version="1.0.0">')[1].split("</tr>")[0]
    assert "refs/heads/main" in row and SHA[:12] in row and "2 commits, build 42" in row
    assert 'href="https://ci.example.com/runs/42"' in row
    assert "none pushed" in hello.split('data-version="1.1.0">')[1].split("</tr>")[0]
