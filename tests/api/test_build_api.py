"""Build information over the API: checked on release creation, read back as change-detection
baselines, and compared in the plan ("what this deployment brings"); SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import ClientFor, UserFactory
from tests.api.helpers import assert_problem, events

pytestmark = pytest.mark.usefixtures("shop")

A, B, C = ("a" * 40, "b" * 40, "c" * 40)


def commit(sha: str, message: str) -> dict[str, str]:
    return {"sha": sha, "author": "Dana <dev@example.com>", "message": message}


async def release(
    client: httpx.AsyncClient, project: str, version: str, build: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post(
        f"/projects/{project}/releases", json={"version": version, "build": build or {}}
    )


async def watch(client: httpx.AsyncClient, project: str, paths: list[str]) -> None:
    doc = (await client.get(f"/projects/{project}")).json()
    doc["watch_paths"] = paths
    assert (await client.put(f"/projects/{project}", json=doc)).status_code == 200


async def test_build_information_is_checked_completed_and_kept(
    client: httpx.AsyncClient, services: Any
) -> None:
    build = {"commit": A.upper(), "branch": "main", "commits": [commit(A, "  First  ")]}
    created = await release(client, "Web", "1.0.0", build)
    assert created.status_code == 201, created.text
    kept = {"commit": A, "branch": "main", "build_url": None, "commits": [commit(A, "First")]}
    assert created.json()["build"] == kept
    assert (await client.get("/projects/Web/releases/1.0.0")).json()["build"] == kept
    # The audit event says how many commits, not all of them.
    (event,) = await events(services, "ReleaseCreated")
    assert event.details["build"]["commits"] == 1
    assert (await release(client, "Web", "1.0.1")).json()["build"] == {}


@pytest.mark.parametrize(
    ("build", "path"),
    [
        ({"commit": "not-a-sha"}, "build.commit"),
        ({"commit": A, "build_url": "javascript:alert(1)"}, "build.build_url"),
        ({"commit": A, "commits": [{"sha": "zz"}]}, "build.commits[0].sha"),
        ({"commit": A, "commits": [commit(A, "x")] * 1001}, "build.commits"),
        ({"commit": A, "pipeline": 7}, "build"),
    ],
)
async def test_bad_build_information_is_refused_with_its_field(
    client: httpx.AsyncClient, build: dict[str, Any], path: str
) -> None:
    body = assert_problem(await release(client, "Web", "1.0.0", build), 422, "validation_failed")
    assert body["problems"][0]["path"] == path, body
    assert (await client.get("/projects/Web/releases")).json() == []


async def test_baselines_are_the_newest_release_or_the_current_one(
    client: httpx.AsyncClient,
) -> None:
    await watch(client, "Web", ["web/**"])
    rows = (await client.get("/changes/baselines")).json()
    assert rows == [
        {
            "project": "Web",
            "watch_paths": ["web/**"],
            "disabled": False,
            "release": None,
            "commit": None,
            "reason": "no release yet",
        },
        {
            "project": "Database",
            "watch_paths": [],
            "disabled": False,
            "release": None,
            "commit": None,
            "reason": "no release yet",
        },
    ]
    await release(client, "Web", "1.0.0", {"commit": A})
    await release(client, "Web", "1.0.10", {"commit": C})
    await release(client, "Web", "1.0.9", {"commit": B})
    await release(client, "Database", "1.0.0")
    rows = (await client.get("/changes/baselines")).json()
    # The newest is the highest version, not the last created.
    assert (rows[0]["release"], rows[0]["commit"], rows[0]["reason"]) == ("1.0.10", C, None)
    assert rows[1]["reason"] == "its release 1.0.0 recorded no commit"
    in_dev = (await client.get("/changes/baselines", params={"environment": "dev"})).json()
    assert in_dev[0]["reason"] == "it has no successful deployment in Dev"
    only = (await client.get("/changes/baselines", params={"project": "web"})).json()
    assert [r["project"] for r in only] == ["Web"]
    missing = await client.get("/changes/baselines", params={"environment": "Moon"})
    assert_problem(missing, 404, "not_found")


async def test_baselines_show_only_what_the_caller_may_view(
    client_for: ClientFor, user_with: UserFactory
) -> None:
    key = await user_with("web", roles=[{"role": "Project Viewer", "projects": ["Web"]}])
    rows = (await client_for(key).get("/changes/baselines")).json()
    assert [r["project"] for r in rows] == ["Web"]
    refused = await client_for(key).get("/changes/baselines", params={"project": "Database"})
    assert_problem(refused, 403, "permission_denied")


async def test_the_plan_says_what_the_deployment_brings(client: httpx.AsyncClient) -> None:
    await release(client, "Web", "1.0.0", {"commit": A, "commits": [commit(A, "one")]})
    await release(
        client, "Web", "1.0.1", {"commit": B, "commits": [commit(B, "two"), commit(A, "one")]}
    )
    await release(client, "Web", "1.0.2")
    plan = (await client.get("/projects/Web/releases/1.0.2/plan", params={"to": "Dev"})).json()
    (entry,) = plan["changes"]
    assert entry == {
        "project": "Web",
        "release": "1.0.2",
        "current": None,
        "commits": [
            {**commit(B, "two"), "release": "1.0.1"},
            {**commit(A, "one"), "release": "1.0.1"},
        ],
        "releases": ["1.0.2", "1.0.1", "1.0.0"],
        "without_commits": ["1.0.2"],
        "rollback": False,
        "truncated": False,
    }
