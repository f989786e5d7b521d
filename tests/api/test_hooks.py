"""Webhooks in, on SQLite and PostgreSQL, with a real git repository: GitHub, GitLab and generic
deliveries verified by their secret; a push to a watched branch records its build information
and releases the projects that allow it and whose watch paths changed; replays and bad
signatures are refused with 409 and 401, and everything is audited."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conveyor.domain.hooks import sign_generic
from conveyor.domain.throttling import MAX_RECORDED_REFUSALS
from conveyor.services.configfile import apply_text
from conveyor.services.core import Services, system_caller
from conveyor.services.users import add_user
from conveyor.store import tables as t
from tests.api.conftest import ClientFor, UserFactory
from tests.api.helpers import assert_problem, events
from tests.gitrepos import GitRepo

SECRET = "a-shared-secret-of-some-length"
CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Shop
projects:
  - name: Database
    group: Shop
    lifecycle: Anywhere
    watch_paths: ["database/**"]
    process: {steps: [{name: Migrate, type: script, script: echo migrate}]}
  - name: Website
    group: Shop
    lifecycle: Anywhere
    watch_paths: ["src/Web/**"]
    process: {steps: [{name: Publish, type: script, script: echo publish}]}
  - name: Cart
    group: Shop
    lifecycle: Anywhere
    watch_paths: ["src/Cart/**"]
    process: {steps: [{name: Publish, type: script, script: echo publish}]}
teams:
  - name: CI
    members: [ci]
    roles: [{role: Build Server}]
"""


def github_headers(body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
    }


def push_body(before: str, after: str, ref: str = "refs/heads/main") -> bytes:
    payload: dict[str, Any] = {
        "ref": ref,
        "before": before,
        "after": after,
        "repository": {"full_name": "acme/shop"},
        "commits": [
            {
                "id": after,
                "message": "Add the orders table",
                "timestamp": "2024-05-01T12:00:09+00:00",
                "author": {"name": "Dana Developer", "email": "dev@octopetshop.example"},
            }
        ],
    }
    return json.dumps(payload).encode()


@pytest.fixture
async def shop(services: Services, tmp_path: Path) -> GitRepo:
    """The configuration, a service account for the hooks, and the repository with its first
    commit (every project's folder)."""
    await add_user(services, system_caller(), "ci", service_account=True)
    await apply_text(services, system_caller(), CONFIG)
    repo = GitRepo(tmp_path / "shop")
    repo.commit(
        "Initial",
        {
            "database/schema.sql": "create table pets;",
            "src/Web/index.html": "<h1>Pets</h1>",
            "src/Cart/cart.py": "cart = []",
        },
    )
    return repo


async def add_source(client: httpx.AsyncClient, repo: GitRepo, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "shop-github",
        "provider": "github",
        "secret": SECRET,
        "repository": "acme/shop",
        "branches": ["main", "release/*"],
        "repo_path": str(repo.root),
        "run_as": "ci",
        **fields,
    }
    made = await client.post("/hooks/sources", json=body)
    assert made.status_code == 201, made.text
    data: dict[str, Any] = made.json()
    return data


async def test_a_push_records_build_information_and_releases_what_changed(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, services: Services, shop: GitRepo
) -> None:
    # The server reads a clone of its own, fetched when a pushed commit is not in it yet.
    clone = shop.root.parent / "clone"
    shop.git("clone", "-q", "--no-checkout", str(shop.root), str(clone))
    await add_source(client, shop, repo_path=str(clone))
    for project in ("Database", "Cart"):  # Website keeps the default: off
        allowed = await client.put(
            f"/projects/{project}/hook-settings", json={"release_on_push": True}
        )
        assert allowed.status_code == 200, allowed.text
    assert (await client.get("/projects/Website/hook-settings")).json()["release_on_push"] is False
    before = shop.git("rev-parse", "HEAD")
    for project in ("Database", "Cart"):  # released before, from the first commit
        made = await client.post(
            f"/projects/{project}/releases",
            json={"version": "1.0.0", "build": {"commit": before, "branch": "main"}},
        )
        assert made.status_code == 201, made.text
    after = shop.commit(
        "Add the orders table",
        {"database/orders.sql": "create table orders;", "src/Web/orders.html": "<p>Orders</p>"},
    )

    body = push_body(before, after)
    answer = await anonymous.post(
        "/hooks/github", content=body, headers=github_headers(body, "d-1")
    )

    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["outcome"] == "recorded" and result["branch"] == "main"
    assert result["after"] == after and result["commits"] == 1
    # Database changed and allows it; Website changed but does not; Cart allows it, unchanged.
    (made,) = result["releases"]
    assert made["project"] == "Database" and made["version"] == "1.0.1"
    release = (await client.get(f"/projects/Database/releases/{made['version']}")).json()
    assert release["build"]["commit"] == after and release["build"]["branch"] == "main"
    assert [c["sha"] for c in release["build"]["commits"]] == [after]
    # With its committer date read from the clone, in UTC as every release keeps it.
    assert release["build"]["commits"][0]["timestamp"].startswith("2024-05-01T12:00:")
    assert release["build"]["commits"][0]["timestamp"].endswith("Z")
    assert release["created_by"] == "ci"
    assert (await client.get("/projects/Website/releases")).json() == []
    assert len((await client.get("/projects/Cart/releases")).json()) == 1
    # The build information of the push: commits, authors, timestamps.
    (delivery,) = (await client.get("/hooks/deliveries")).json()
    assert delivery["delivery"] == "d-1" and delivery["source"] == "shop-github"
    (commit,) = delivery["commits"]
    assert commit["sha"] == after and commit["author"] == "Dana Developer"
    assert commit["timestamp"] == "2024-05-01T12:00:09+00:00"
    (received,) = await events(services, "WebhookReceived")
    assert received.actor == "ci" and received.user_agent == "GitHub-Hookshot/test"

    # The next push compares Database with the commit of its new release: nothing changed.
    later = shop.commit("Cart only", {"src/Cart/cart.py": "cart = [1]"})
    body = push_body(after, later)
    again = await anonymous.post("/hooks/github", content=body, headers=github_headers(body, "d-2"))
    assert again.status_code == 200, again.text
    (cart,) = again.json()["releases"]
    assert cart["project"] == "Cart"


async def test_replays_and_bad_signatures_are_refused_and_audited(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, services: Services, shop: GitRepo
) -> None:
    await add_source(client, shop)
    head = shop.git("rev-parse", "HEAD")
    body = push_body("0" * 40, head)

    forged = github_headers(body, "d-9", secret="not-the-secret-at-all")
    assert_problem(
        await anonymous.post("/hooks/github", content=body, headers=forged), 401, "unauthenticated"
    )
    unsigned = {k: v for k, v in github_headers(body, "d-9").items() if k != "X-Hub-Signature-256"}
    assert_problem(
        await anonymous.post("/hooks/github", content=body, headers=unsigned),
        401,
        "unauthenticated",
    )
    tampered = github_headers(body, "d-9")
    changed = body.replace(b"acme/shop", b"evil/shop")
    assert_problem(
        await anonymous.post("/hooks/github", content=changed, headers=tampered),
        401,
        "unauthenticated",
    )

    first = await anonymous.post("/hooks/github", content=body, headers=github_headers(body, "d-9"))
    assert first.status_code == 200, first.text
    replay = await anonymous.post(
        "/hooks/github", content=body, headers=github_headers(body, "d-9")
    )
    assert_problem(replay, 409, "conflict")

    refused = await events(services, "WebhookRefused")
    reasons = [r.details["reason"] for r in refused]
    assert len(refused) == 4, reasons
    assert all(r.actor == "webhook:github" for r in refused)
    assert "does not match" in reasons[0] and "no X-Hub-Signature-256" in reasons[1]
    assert "replay" in reasons[3]
    assert len(await events(services, "WebhookReceived")) == 1


async def test_a_flood_of_forged_deliveries_is_refused_but_recorded_only_so_often(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, services: Services, shop: GitRepo
) -> None:
    """Every forged delivery is a 401, but one address's refusals are recorded at most
    MAX_RECORDED_REFUSALS times in five minutes (the last one says so); the real sender, from
    that same address (GitHub's are shared by everyone), is still received."""
    await add_source(client, shop)
    body = push_body("0" * 40, shop.git("rev-parse", "HEAD"))
    for n in range(MAX_RECORDED_REFUSALS + 10):
        forged = github_headers(body, f"f-{n}", secret="not-the-secret-at-all")
        answer = await anonymous.post("/hooks/github", content=body, headers=forged)
        assert_problem(answer, 401, "unauthenticated")
    refused = await events(services, "WebhookRefused")
    assert len(refused) == MAX_RECORDED_REFUSALS
    assert "further refusals from this address are not recorded" in refused[-1].message
    real = await anonymous.post("/hooks/github", content=body, headers=github_headers(body, "r-1"))
    assert real.status_code == 200, real.text
    assert len(await events(services, "WebhookReceived")) == 1


async def test_gitlab_token_and_generic_signature(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, services: Services, shop: GitRepo
) -> None:
    await add_source(client, shop, name="shop-gitlab", provider="gitlab", repository="acme/shop")
    made = await add_source(client, shop, name="shop-ci", provider="generic", secret=None)
    generic_secret = made["secret"]  # made by Conveyor, shown once
    assert len(generic_secret) >= 32
    head = shop.git("rev-parse", "HEAD")
    gitlab = json.dumps(
        {
            "object_kind": "push",
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": head,
            "project": {"path_with_namespace": "acme/shop"},
            "commits": [{"id": head, "message": "Initial", "author": {"name": "Dana"}}],
        }
    ).encode()
    lab = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "g-1"}
    wrong = await anonymous.post(
        "/hooks/gitlab", content=gitlab, headers={**lab, "X-Gitlab-Token": "nope"}
    )
    assert_problem(wrong, 401, "unauthenticated")
    right = await anonymous.post(
        "/hooks/gitlab", content=gitlab, headers={**lab, "X-Gitlab-Token": SECRET}
    )
    assert right.status_code == 200 and right.json()["commits"] == 1, right.text

    generic = json.dumps({"ref": "main", "after": head, "repository": "acme/shop"}).encode()
    now = int(time.time())

    def signed(stamp: int, delivery: str) -> dict[str, str]:
        return {
            "X-Conveyor-Timestamp": str(stamp),
            "X-Conveyor-Signature": sign_generic(generic_secret, stamp, generic),
            "X-Conveyor-Delivery": delivery,
        }

    stale = await anonymous.post(
        "/hooks/generic", content=generic, headers=signed(now - 3600, "x-1")
    )
    assert "X-Conveyor-Timestamp" in assert_problem(stale, 401, "unauthenticated")["message"]
    fine = await anonymous.post("/hooks/generic", content=generic, headers=signed(now, "x-1"))
    assert fine.status_code == 200 and fine.json()["branch"] == "main", fine.text
    other = json.dumps({"ref": "feature/x", "after": head, "repository": "acme/shop"}).encode()
    stamp = int(time.time())
    ignored = await anonymous.post(
        "/hooks/generic",
        content=other,
        headers={
            "X-Conveyor-Timestamp": str(stamp),
            "X-Conveyor-Signature": sign_generic(generic_secret, stamp, other),
            "X-Conveyor-Delivery": "x-2",
        },
    )
    assert ignored.status_code == 202 and "not watched" in ignored.json()["notes"][0]


async def test_sources_keep_their_secret_encrypted_and_need_an_administrator(
    client: httpx.AsyncClient,
    services: Services,
    shop: GitRepo,
    user_with: UserFactory,
    client_for: ClientFor,
) -> None:
    await add_source(client, shop)
    async with services.read() as session:
        stored = (await session.execute(select(t.hook_sources.c.secret))).scalar_one()
    assert SECRET not in stored and services.box.decrypt(stored) == SECRET
    (listed,) = (await client.get("/hooks/sources")).json()
    assert "secret" not in listed and listed["url"] == "/api/v1/hooks/github?source=shop-github"
    bad = await client.post(
        "/hooks/sources",
        json={"name": "x", "provider": "svn", "secret": "short", "run_as": "admin"},
    )
    body = assert_problem(bad, 422, "validation_failed")
    assert "provider" in json.dumps(body) and "secret" in json.dumps(body)

    viewer = client_for(await user_with("viewer", roles=[{"role": "Project Viewer"}]))
    assert_problem(await viewer.get("/hooks/sources"), 403, "permission_denied")
    made = await viewer.post(
        "/hooks/sources", json={"name": "mine", "provider": "github", "run_as": "ci"}
    )
    assert_problem(made, 403, "permission_denied")
    flipped = await viewer.put("/projects/Database/hook-settings", json={"release_on_push": True})
    assert_problem(flipped, 403, "permission_denied")
    assert (await client.delete("/hooks/sources/shop-github")).status_code == 204
    assert (await client.get("/hooks/sources")).json() == []
