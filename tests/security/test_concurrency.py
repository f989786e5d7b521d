"""One answer wins: the same change sent many times at once, to a real `conveyor server`.

Each test fires its requests together (one connection each) and checks what an attacker racing
the server would get: exactly one success, the rest refused with 409 (never a 5xx), exactly
one audit event, and state that agrees with the audit log. On SQLite a single writer made this
hold already; on PostgreSQL it needs row locks and upserts, and these tests failed without them
(ten submits gave seven 200s; twenty first deployments a 500 on ``pk_dashboard``).
"""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections import Counter
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Server

# The real server of the end-to-end tests, one per module and database.
e2e_database, server = e2e.e2e_database, e2e.server

pytestmark = pytest.mark.e2e

RACERS = 10
CONFIG = """
environments:
  - name: Race
lifecycles:
  - name: Race only
    phases:
      - name: Race
        environments: [Race]
project_groups:
  - name: Races
projects:
"""
APPROVAL = """
  - name: {name}
    group: Races
    lifecycle: Race only
    process:
      steps:
        - name: Approve
          type: manual_intervention
          instructions: Say yes or no
"""
PROJECTS = ("Answer", "Take", "Cancel", "Cancel or answer", "First", "Versions", "Process")


def at_once(
    server: Server, requests: list[tuple[str, str, dict[str, Any]]]
) -> list[httpx.Response]:
    """Send every request together, each on its own connection, and wait for all answers."""

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
        headers = {"X-Api-Key": server.api_key}
        async with httpx.AsyncClient(
            base_url=f"{server.url}/api/v1", headers=headers, limits=limits, timeout=60
        ) as client:
            return list(
                await asyncio.gather(
                    *(client.request(method, path, **kw) for method, path, kw in requests)
                )
            )

    return asyncio.run(send_all())


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    assert all(r.status_code < 500 for r in responses), [r.text for r in responses]
    return Counter(r.status_code for r in responses)


def events(server: Server, category: str, document: str) -> list[dict[str, Any]]:
    page = server.get(f"/events?category={category}&document={document}&limit=500").json()
    found: list[dict[str, Any]] = page["events"]
    return found


def api(server: Server, method: str, path: str, **kw: Any) -> Any:
    response = loopback.request(
        method,
        f"{server.url}/api/v1{path}",
        headers={"X-Api-Key": server.api_key},
        timeout=60,
        **kw,
    )
    assert response.status_code < 400, response.text
    return response.json() if response.content else None


@pytest.fixture(scope="module")
def races(server: Server) -> Server:
    text = CONFIG + "".join(APPROVAL.format(name=name) for name in PROJECTS)
    api(server, "POST", "/config/apply", json={"text": text})
    return server


def waiting_interruption(server: Server, project: str, version: str) -> tuple[str, str]:
    """Release ``version`` deployed to Race, waiting at its approval: (task, interruption)."""
    api(server, "POST", f"/projects/{project}/releases", json={"version": version})
    queued = api(
        server,
        "POST",
        "/deployments",
        json={"project": project, "version": version, "environment": "Race"},
    )
    task = queued["task"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pending = api(server, "GET", f"/interruptions?task={task}&pending=true")
        if pending:
            return task, pending[0]["id"]
        time.sleep(0.1)
    raise AssertionError(
        f"{task} never asked for its approval: {api(server, 'GET', f'/tasks/{task}')}"
    )


def test_ten_answers_at_once_one_is_accepted(races: Server) -> None:
    _, interruption = waiting_interruption(races, "Answer", "1.0.0")
    answers = ["proceed" if i % 2 else "abort" for i in range(RACERS)]
    responses = at_once(
        races,
        [
            (
                "POST",
                f"/interruptions/{interruption}/submit",
                {"json": {"result": a, "notes": str(i)}},
            )
            for i, a in enumerate(answers)
        ],
    )
    assert statuses(responses) == {200: 1, 409: RACERS - 1}
    [won] = [r.json() for r in responses if r.status_code == 200]
    refused = [r.json() for r in responses if r.status_code == 409]
    assert all("already answered" in p["message"] for p in refused), refused
    submitted = events(races, "InterruptionSubmitted", interruption)
    resumed = events(races, "DeploymentResumed", interruption)
    assert len(submitted) == 1 and len(resumed) == 1, (submitted, resumed)
    stored = api(races, "GET", f"/interruptions/{interruption}")
    assert stored["state"] == "answered"
    assert stored["result"] == won["result"] == submitted[0]["details"]["result"]
    assert len(stored["answers"]) == 1


def test_ten_takes_at_once_by_one_person_are_one_take(races: Server) -> None:
    _, interruption = waiting_interruption(races, "Take", "1.0.0")
    responses = at_once(races, [("POST", f"/interruptions/{interruption}/take", {})] * RACERS)
    assert statuses(responses) == {200: RACERS}
    assert all(r.json()["taken_by"] == "admin" for r in responses)
    assert len(events(races, "InterruptionTaken", interruption)) == 1


def test_ten_cancels_at_once_are_one_cancel(races: Server) -> None:
    task, _ = waiting_interruption(races, "Cancel", "1.0.0")
    responses = at_once(races, [("POST", f"/tasks/{task}/cancel", {})] * RACERS)
    codes = statuses(responses)
    # Once the engine has ended the task, a late cancel is told so (409): never a second cancel.
    assert set(codes) <= {200, 409} and codes[200] >= 1, codes
    assert len(events(races, "TaskCanceled", task)) == 1


@pytest.mark.parametrize("round_", range(3))
def test_cancel_and_answer_at_once_agree_with_the_audit_log(races: Server, round_: int) -> None:
    task, interruption = waiting_interruption(races, "Cancel or answer", f"1.0.{round_}")
    submit = ("POST", f"/interruptions/{interruption}/submit", {"json": {"result": "proceed"}})
    cancel = ("POST", f"/tasks/{task}/cancel", {})
    answered, canceled = at_once(races, [submit, cancel])
    statuses([answered, canceled])
    stored = api(races, "GET", f"/interruptions/{interruption}")
    submitted = events(races, "InterruptionSubmitted", interruption)
    if answered.status_code == 200:
        assert stored["state"] == "answered" and len(submitted) == 1
    else:
        assert answered.status_code == 409 and stored["state"] == "canceled" and not submitted
    assert len(events(races, "TaskCanceled", task)) == (1 if canceled.status_code == 200 else 0)


def test_twenty_first_deployments_at_once_all_queue(races: Server) -> None:
    api(races, "POST", "/projects/First/releases", json={"version": "1.0.0"})
    body = {"project": "First", "version": "1.0.0", "environment": "Race"}
    responses = at_once(races, [("POST", "/deployments", {"json": body})] * 20)
    assert statuses(responses) == {201: 20}
    deployments = {r.json()["deployment"] for r in responses}
    assert len(deployments) == 20
    project = api(races, "GET", "/projects/First")["id"]
    queued = events(races, "DeploymentQueued", project)
    assert {e["documents"][0] for e in queued} <= deployments | {project} and len(queued) == 20
    cells = [
        c
        for c in api(races, "GET", "/dashboard")["cells"]
        if c["project"] == "First" and c["environment"] == "Race"
    ]
    assert len(cells) == 1 and cells[0]["release"] == "1.0.0"


def test_one_version_created_ten_times_at_once_is_one_release(races: Server) -> None:
    body = {"version": "7.0.0", "notes": "racing"}
    responses = at_once(races, [("POST", "/projects/Versions/releases", {"json": body})] * RACERS)
    assert statuses(responses) == {201: 1, 409: RACERS - 1}
    project = api(races, "GET", "/projects/Versions")["id"]
    created = [
        e for e in events(races, "ReleaseCreated", project) if e["details"]["version"] == "7.0.0"
    ]
    assert len(created) == 1
    assert [r["version"] for r in api(races, "GET", "/projects/Versions/releases")] == ["7.0.0"]


def test_ten_edits_of_one_process_version_keep_one(races: Server) -> None:
    process = api(races, "GET", "/projects/Process/process")
    project = api(races, "GET", "/projects/Process")["id"]
    before = len(events(races, "DocumentModified", project))
    edits = [
        {**process, "steps": [{**process["steps"][0], "instructions": f"edit {i}"}]}
        for i in range(RACERS)
    ]
    responses = at_once(races, [("PUT", "/projects/Process/process", {"json": e}) for e in edits])
    assert statuses(responses) == {200: 1, 409: RACERS - 1}
    assert len(events(races, "DocumentModified", project)) == before + 1
    [kept] = [r.json() for r in responses if r.status_code == 200]
    now = api(races, "GET", "/projects/Process/process")
    assert now["steps"][0]["instructions"] == kept["steps"][0]["instructions"]


def test_one_package_version_pushed_ten_times_at_once_is_one_package(races: Server) -> None:
    def archive(i: int) -> bytes:
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w") as zf:
            zf.writestr("app.txt", f"build {i}\n")
        return data.getvalue()

    responses = at_once(
        races,
        [
            ("POST", "/packages", {"files": {"file": ("Race.App.1.2.3.zip", archive(i))}})
            for i in range(RACERS)
        ],
    )
    assert statuses(responses) == {201: 1, 409: RACERS - 1}
    [pushed] = [r.json() for r in responses if r.status_code == 201]
    assert len(events(races, "PackagePushed", pushed["id"])) == 1
    listed = api(races, "GET", "/packages/Race.App/1.2.3")
    assert listed["sha256"] == pushed["sha256"]


def test_one_user_created_ten_times_at_once_is_one_user(races: Server) -> None:
    body = {"username": "racer", "email": "racer@example.com"}
    responses = at_once(races, [("POST", "/users", {"json": body})] * RACERS)
    assert statuses(responses) == {201: 1, 409: RACERS - 1}
    user = api(races, "GET", "/users/racer")["id"]
    assert len(events(races, "DocumentCreated", user)) == 1


def test_api_keys_created_at_once_are_each_made_once(races: Server) -> None:
    responses = at_once(
        races,
        [("POST", "/users/admin/api-keys", {"json": {"name": f"race {i}"}}) for i in range(RACERS)],
    )
    assert statuses(responses) == {201: RACERS}
    assert len({r.json()["api_key"] for r in responses}) == RACERS
    keys = api(races, "GET", "/users/admin/api-keys")
    assert sorted(k["name"] for k in keys if k["name"].startswith("race ")) == sorted(
        f"race {i}" for i in range(RACERS)
    )


def test_one_api_key_revoked_ten_times_at_once_is_one_revocation(races: Server) -> None:
    made = api(races, "POST", "/users/admin/api-keys", json={"name": "to revoke"})
    [key] = [
        k for k in api(races, "GET", "/users/admin/api-keys") if k["prefix"] == made["api_key"][:8]
    ]
    responses = at_once(races, [("DELETE", f"/users/admin/api-keys/{key['id']}", {})] * RACERS)
    assert statuses(responses) == {204: RACERS}
    assert len(events(races, "ApiKeyRevoked", key["id"])) == 1


def test_one_package_deleted_ten_times_at_once_is_one_deletion(races: Server) -> None:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("app.txt", "doomed\n")
    files = {"file": ("Race.Doomed.1.0.0.zip", data.getvalue())}
    pushed = api(races, "POST", "/packages", files=files)
    responses = at_once(races, [("DELETE", "/packages/Race.Doomed/1.0.0", {})] * RACERS)
    assert statuses(responses) == {204: 1, 404: RACERS - 1}
    assert len(events(races, "PackageDeleted", pushed["id"])) == 1
