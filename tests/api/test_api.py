"""The HTTP API skeleton: authentication, OpenAPI, the error mapping, process and variables,
permissions and the audit trail of every write, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from conveyor.services import documents as docs
from conveyor.services.config import load
from conveyor.services.core import Services, system_caller
from conveyor.services.secrets import KEY_FILE
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.documents import reveal
from tests.api.conftest import BASE_URL, ClientFor, UserFactory
from tests.api.helpers import assert_problem, events, row_text

pytestmark = pytest.mark.usefixtures("shop")


# ---------------------------------------------------------------- authentication


async def test_bad_revoked_and_deactivated_keys_are_401(
    client: httpx.AsyncClient, client_for: ClientFor, user_with: UserFactory, services: Services
) -> None:
    assert_problem(await client_for("not-a-key").get("/projects"), 401, "unauthenticated")

    key = await user_with("dev", roles=[{"role": "Project Viewer"}])
    dev = client_for(key)
    assert (await dev.get("/projects")).status_code == 200
    listed = (await client.get("/users/dev/api-keys")).json()
    assert len(listed) == 1
    response = await client.delete(f"/users/dev/api-keys/{listed[0]['id']}")
    assert response.status_code == 204
    assert_problem(await dev.get("/projects"), 401, "unauthenticated")

    key = await user_with("ops", roles=[{"role": "Project Viewer"}])
    ops = client_for(key)
    assert (await ops.get("/me")).json()["username"] == "ops"
    assert (await client.delete("/users/ops")).status_code == 204
    body = assert_problem(await ops.get("/me"), 401, "unauthenticated")
    assert "inactive" in body["message"]
    assert (await client.get("/users/ops")).json()["active"] is False
    deactivated = (await events(services, "DocumentModified"))[-1]
    assert deactivated.message == 'admin deactivated user "ops"'


# ---------------------------------------------------------------- OpenAPI


async def test_public_root_openapi_and_a_missing_key(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("http://conveyor.test/api/v1")
    assert response.status_code == 200
    assert response.json()["openapi"] == "/api/v1/openapi.json"
    response = await anonymous.get("/projects")
    body = assert_problem(response, 401, "unauthenticated")
    assert "X-Api-Key" in body["message"]
    assert response.headers["www-authenticate"] == "ApiKey"

    response = await anonymous.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    for segment in (
        "environments",
        "lifecycles",
        "project-groups",
        "projects",
        "targets",
        "teams",
        "user-roles",
        "users",
    ):
        assert set(paths[f"/api/v1/{segment}"]) == {"get", "post"}
        assert set(paths[f"/api/v1/{segment}/{{ref}}"]) == {"get", "put", "delete"}
    assert set(paths["/api/v1/projects/{ref}/process"]) == {"get", "put"}
    assert set(paths["/api/v1/projects/{ref}/variables"]) == {"get", "put"}
    assert "/api/v1/permissions/explain" in paths
    assert "/api/v1/config/apply" in paths
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("name") == "X-Api-Key" and s.get("in") == "header" for s in schemes.values())


# ---------------------------------------------------------------- errors


async def test_unknown_routes_and_ids_are_404_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/no-such-thing"), 404, "not_found")
    assert_problem(await client.get("/projects/NoSuchProject"), 404, "not_found")
    assert_problem(await client.patch("/projects"), 405, "method_not_allowed")
    # ids that are no row ids are simply not found
    for path in (
        "/environments/Environments-\u00b2",
        "/environments/Environments-99999999999999999999999",
        "/users/Users-\u00b2",
        "/users/admin/api-keys/ApiKeys-\u00b2",
        "/users/admin/api-keys/ApiKeys-99999999999999999999",
    ):
        assert_problem(await client.delete(path), 404, "not_found")
    environment = (await client.get("/environments/Dev")).json()
    assert (await client.get(f"/environments/{environment['id'].lower()}")).json() == environment


async def test_a_bug_is_a_500_problem_not_a_stack_trace(
    app: FastAPI, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(docs, "list_documents", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, headers={"X-Api-Key": admin_key}
    ) as client:
        body = assert_problem(await client.get("/projects"), 500, "internal_error")
    assert "a bug" not in body["message"]


# (body, path of the first problem, words of its message)
BAD_BODIES: list[tuple[bytes, str, str]] = [
    (b"{not json", "", "not valid JSON"),
    (b"", "", "a JSON body is required"),
    (b'{"name": ["a list"]}', "name", "must be text"),
    (b'{"name": "X", "guided_failure": "yes"}', "guided_failure", "true or false"),
    (b'{"name": "X", "colour": "blue"}', "colour", "not a known field"),
    (b'"a string"', "", "expected a mapping"),
    (b"[1, 2]", "", "expected a mapping"),
]


async def test_bad_input_is_422_with_the_field_path(client: httpx.AsyncClient) -> None:
    for content, path, words in BAD_BODIES:
        response = await client.post(
            "/environments", content=content, headers={"content-type": "application/json"}
        )
        body = assert_problem(response, 422, "validation_failed")
        assert body["problems"][0]["path"] == path, content
        assert words in body["problems"][0]["message"], content
        assert words in body["message"]

    # wrong types deep in a document are located
    response = await client.post(
        "/lifecycles",
        json={"name": "L", "phases": [{"name": "P", "environments": "Dev", "optional": 3}]},
    )
    body = assert_problem(response, 422, "validation_failed")
    assert [p["path"] for p in body["problems"]] == ["phases[0].optional"]
    response = await client.put("/projects/Web/process", json={"version": "one", "steps": {}})
    body = assert_problem(response, 422, "validation_failed")
    assert {p["path"] for p in body["problems"]} == {"steps", "version"}
    response = await client.get("/permissions/matrix", params={"user": "admin", "permission": "X"})
    assert_problem(response, 422, "validation_failed")
    response = await client.post("/users/admin/api-keys", json={"name": 3})
    body = assert_problem(response, 422, "validation_failed")
    assert body["problems"][0]["path"] == "name"


TOO_LONG: list[tuple[str, dict[str, Any], str]] = [
    ("environments", {"name": "x" * 201}, "environments"),
    # a name within the limit whose slug ("ffi" for each ligature) is not
    ("environments", {"name": "\ufb03" * 100}, "environments"),
    ("users", {"username": "eve", "email": "e" * 320 + "@x.io"}, "users[eve].email"),
    ("users", {"username": "eve", "display_name": "E" * 201}, "users[eve].display_name"),
    ("users", {"username": "e" * 101}, "users"),
]


async def test_text_the_database_cannot_store_is_422_not_500(client: httpx.AsyncClient) -> None:
    for kind, document, path in TOO_LONG:
        response = await client.post(f"/{kind}", json=document)
        body = assert_problem(response, 422, "validation_failed")
        assert body["problems"][0]["path"].startswith(path), body
    # A NUL in any JSON string is refused at the door (conveyor/api/hardening.py), with 400.
    nul = [
        client.post("/environments", json={"name": "Nul\u0000Env"}),
        client.post("/users", json={"username": "eve", "email": "e\u0000@x.io"}),
        client.post("/environments", json={"name": "E", "description": "a\u0000b"}),
        client.post("/users/admin/api-keys", json={"name": "a\u0000b"}),
        client.put(
            "/projects/Web/variables", json={"variables": [{"name": "V", "value": "a\u0000"}]}
        ),
    ]
    for sent in nul:
        body = assert_problem(await sent, 400, "invalid_character")
        assert "NUL character" in body["message"], body


async def test_name_conflicts_and_missing_references(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/environments", json={"name": "dev"}), 409, "conflict")
    assert "Dev" in body["message"] or "dev" in body["message"]
    # renaming onto another document's name is a conflict too
    response = await client.put("/environments/Test", json={"name": "Prod"})
    assert_problem(response, 409, "conflict")

    # a reference to a lifecycle that does not exist names where it is made
    response = await client.post(
        "/projects", json={"name": "X", "group": "Shop", "lifecycle": "Nope"}
    )
    body = assert_problem(response, 422, "validation_failed")
    assert [p["path"] for p in body["problems"]] == ["projects[X].lifecycle"]
    assert "Nope" in body["problems"][0]["message"]

    # a project's process and variables have their own endpoints
    document = {"name": "Web", "group": "Shop", "lifecycle": "Main", "variables": []}
    body = assert_problem(
        await client.put("/projects/Web", json=document), 422, "validation_failed"
    )
    assert "/variables" in body["message"]


# ---------------------------------------------------------------- process


STEP = {"name": "Migrate", "type": "script", "script": "echo migrate"}


async def test_process_edits_are_versioned_and_stale_edits_refused(
    client: httpx.AsyncClient,
) -> None:
    read = (await client.get("/projects/Database/process")).json()
    assert read["project"] == "Database"
    assert read["steps"] == []
    version = read["version"]

    # a read-modify-write round trip of the document as read
    edited = {**read, "steps": [STEP]}
    response = await client.put("/projects/Database/process", json=edited)
    assert response.status_code == 200, response.text
    first = response.json()
    assert first["version"] > version
    assert first["steps"] == [STEP]

    stale = {"version": version, "steps": [STEP, {**STEP, "name": "Seed"}]}
    body = assert_problem(
        await client.put("/projects/Database/process", json=stale), 409, "conflict"
    )
    assert body["current_version"] == first["version"]
    assert "changed since you read it" in body["message"]
    assert (await client.get("/projects/Database/process")).json()["steps"] == [STEP]

    response = await client.put(
        "/projects/Database/process", json={**stale, "version": first["version"]}
    )
    assert response.status_code == 200
    assert response.json()["version"] > first["version"]

    body = assert_problem(
        await client.put("/projects/Database/process", json={"steps": [STEP]}),
        422,
        "validation_failed",
    )
    assert body["problems"][0]["path"] == "version"

    # a step scoped to an environment that does not exist
    step = {**STEP, "environments": ["Nowhere"]}
    response = await client.put("/projects/Web/process", json={"version": 0, "steps": [step]})
    body = assert_problem(response, 422, "validation_failed")
    assert body["problems"][0]["path"] == "projects[Web].process.steps[Migrate].environments[0]"


# ---------------------------------------------------------------- variables


SECRET = "s3cr3t-P@ssw0rd-value"


async def test_sensitive_variables_are_encrypted_masked_and_kept(
    client: httpx.AsyncClient, services: Services, settings: Settings
) -> None:
    variables = [
        {"name": "Url", "value": "https://dev.example", "environments": ["Dev"]},
        {"name": "DbPassword", "value": SECRET, "sensitive": True},
    ]
    response = await client.put("/projects/Database/variables", json={"variables": variables})
    assert response.status_code == 200, response.text
    for body in (response.json(), (await client.get("/projects/Database/variables")).json()):
        secret = next(v for v in body["variables"] if v["name"] == "DbPassword")
        assert secret == {"name": "DbPassword", "sensitive": True}
        assert SECRET not in json.dumps(body)

    async with services.read() as session:
        rows = (await session.execute(select(t.variable_sets))).all()
    assert len(rows) == 1
    assert SECRET not in row_text(rows[0])
    assert "https://dev.example" in row_text(rows[0])
    key_file = Path(settings.data_dir) / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # sent back without its value, the sensitive variable keeps it
    read = (await client.get("/projects/Database/variables")).json()
    read["variables"].append({"name": "Extra", "value": "1"})
    response = await client.put("/projects/Database/variables", json=read)
    assert response.status_code == 200, response.text
    project = (await load(services)).model.get("projects", "Database")
    kept = {v.name: v.value for v in project.variables}["DbPassword"]
    assert reveal(services.box, kept) == SECRET  # read back sealed, it opens to the secret

    # the edit read before the last change is refused as stale (optimistic concurrency)
    read["variables"].append({"name": "Token", "value": "x"})
    stale = await client.put("/projects/Database/variables", json=read)
    assert_problem(stale, 409, "conflict")
    # a new sensitive variable needs a value
    read = (await client.get("/projects/Database/variables")).json()
    read["variables"].append({"name": "Token", "sensitive": True})
    body = assert_problem(
        await client.put("/projects/Database/variables", json=read), 422, "validation_failed"
    )
    assert body["problems"][0]["path"] == "variables[3].value"

    for row in await events(services):
        assert SECRET not in row_text(row)


# ---------------------------------------------------------------- permissions and audit


async def test_refused_write_is_403_naming_the_permission_and_audited(
    client_for: ClientFor, user_with: UserFactory, services: Services
) -> None:
    viewer = client_for(await user_with("viewer", roles=[{"role": "Project Viewer"}]))
    before = (await viewer.get("/projects/Web")).json()
    document = {k: v for k, v in before.items() if k not in ("id", "slug")}
    response = await viewer.put("/projects/Web", json={**document, "description": "mine now"})
    body = assert_problem(response, 403, "permission_denied")
    assert "ProjectEdit" in body["message"]
    assert "Web" in body["message"]
    response = await viewer.put("/projects/Web/process", json={"version": 0, "steps": [STEP]})
    assert "ProcessEdit" in assert_problem(response, 403, "permission_denied")["message"]
    response = await viewer.post("/environments", json={"name": "Staging"})
    assert "EnvironmentCreate" in assert_problem(response, 403, "permission_denied")["message"]

    denied = await events(services, "AccessDenied")
    assert len(denied) == 3
    assert all(e.actor == "viewer" for e in denied)
    assert "ProjectEdit" in denied[0].message
    assert "ProcessEdit" in denied[1].message
    # nothing changed
    assert (await viewer.get("/projects/Web")).json() == before
    assert not await events(services, "DocumentModified")


async def test_every_write_is_audited_with_before_and_after(
    client: httpx.AsyncClient, services: Services
) -> None:
    start = len(await events(services))
    created = (await client.post("/environments", json={"name": "Staging"})).json()
    response = await client.put(
        "/environments/Staging", json={"name": "Staging", "description": "pre-production"}
    )
    assert response.status_code == 200
    assert (await client.delete("/environments/Staging")).status_code == 204

    new = (await events(services))[start:]
    assert [e.category for e in new] == ["DocumentCreated", "DocumentModified", "DocumentDeleted"]
    for event in new:
        assert event.actor == "admin"
        assert event.actor_id is not None
        assert "Staging" in event.message
        assert event.documents == [created["id"]]
    assert new[0].details["after"] == {"name": "Staging"}
    assert new[1].details["fields"] == [
        {"field": "description", "before": None, "after": "pre-production"}
    ]
    assert new[2].details["before"] == {"name": "Staging", "description": "pre-production"}

    await client.put(
        "/projects/Web/variables",
        json={"variables": [{"name": "Key", "value": SECRET, "sensitive": True}]},
    )
    await client.put(
        "/projects/Web/variables",
        json={"variables": [{"name": "Key", "value": SECRET + "2", "sensitive": True}]},
    )
    changed = (await events(services, "DocumentModified"))[-2:]
    for event in changed:
        assert "variables" in event.message
        assert SECRET not in row_text(event)
        assert event.details["fields"][0]["after"] == "********"
    assert changed[1].details["fields"][0]["before"] == "********"


async def test_the_audit_event_is_written_in_the_same_transaction(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.services import core

    async def broken(*_: Any, **__: Any) -> int:
        raise RuntimeError("the audit log is unavailable")

    monkeypatch.setattr(core, "write_event", broken)
    with pytest.raises(RuntimeError):
        await docs.create_document(services, system_caller(), "environments", {"name": "Lost"})
    monkeypatch.undo()
    assert not (await load(services)).model.has("environments", "Lost")


async def test_lists_show_only_what_the_caller_may_view(
    client: httpx.AsyncClient, client_for: ClientFor, user_with: UserFactory
) -> None:
    scoped = client_for(
        await user_with("web-dev", roles=[{"role": "Project Viewer", "projects": ["Web"]}])
    )
    assert [p["name"] for p in (await scoped.get("/projects")).json()] == ["Web"]
    assert_problem(await scoped.get("/projects/Database"), 403, "permission_denied")
    assert (await scoped.get("/projects/Web")).status_code == 200
    assert [p["name"] for p in (await client.get("/projects")).json()] == ["Web", "Database"]

    nobody = client_for(await user_with("nobody"))
    assert (await nobody.get("/projects")).json() == []
    assert (await nobody.get("/environments")).json() == []
    assert (await nobody.get("/teams")).json() == []


async def test_explain_and_matrix(
    client: httpx.AsyncClient, client_for: ClientFor, user_with: UserFactory
) -> None:
    await user_with("dev", roles=[{"role": "Project Contributor", "projects": ["Database"]}])
    nobody = client_for(await user_with("nobody"))

    body = assert_problem(
        await nobody.get(
            "/permissions/explain", params={"user": "dev", "permission": "ProcessEdit"}
        ),
        403,
        "permission_denied",
    )
    assert "UserView" in body["message"]
    assert_problem(
        await nobody.get("/permissions/matrix", params={"user": "dev"}), 403, "permission_denied"
    )
    response = await nobody.get(
        "/permissions/explain", params={"user": "nobody", "permission": "ProjectView"}
    )
    assert response.status_code == 200
    assert response.json()["allowed"] is False
    assert (await nobody.get("/permissions/matrix", params={"user": "nobody"})).status_code == 200

    # with UserView: which team and role grant it, or what is missing
    params = {"user": "dev", "permission": "ProcessEdit", "project": "Database"}
    allowed = (await client.get("/permissions/explain", params=params)).json()
    assert allowed["allowed"] is True
    assert allowed["granted_by"] == [{"team": "dev team", "role": "Project Contributor"}]
    refused = (await client.get("/permissions/explain", params={**params, "project": "Web"})).json()
    assert refused["allowed"] is False
    assert "Database" in refused["reason"]
    assert_problem(
        await client.get("/permissions/explain", params={**params, "permission": "Fly"}),
        422,
        "validation_failed",
    )
    assert_problem(
        await client.get("/permissions/explain", params={**params, "project": "Nope"}),
        404,
        "not_found",
    )
    matrix = (
        await client.get("/permissions/matrix", params={"user": "dev", "permission": "ProcessEdit"})
    ).json()
    cells = {c["project"]: c["allowed"] for c in matrix["cells"]}
    assert cells == {"Web": False, "Database": True}


async def test_me_and_api_keys_shown_once_listed_without_secret_and_revocable(
    client: httpx.AsyncClient, client_for: ClientFor, user_with: UserFactory, services: Services
) -> None:
    me = (await client.get("/me")).json()
    assert me == {
        "username": "admin",
        "teams": ["Administrators"],
        "roles": ["System Administrator"],
    }
    dev_key = await user_with("dev", roles=[{"role": "Project Viewer"}])
    dev = client_for(dev_key)
    assert (await dev.get("/me")).json() == {
        "username": "dev",
        "teams": ["dev team"],
        "roles": ["Project Viewer"],
    }
    response = await dev.post("/users/dev/api-keys", json={"name": "laptop"})
    assert response.status_code == 201
    created = response.json()
    new_key = created["api_key"]
    assert created["name"] == "laptop"
    assert (await client_for(new_key).get("/me")).json()["username"] == "dev"

    listed = (await dev.get("/users/dev/api-keys")).json()
    assert [k["name"] for k in listed] == ["test", "laptop"]
    text = json.dumps(listed)
    assert new_key not in text and dev_key not in text
    for item in listed:
        assert set(item) == {"id", "name", "prefix", "created", "last_used", "revoked"}

    # someone else's keys need UserEdit
    assert_problem(await dev.get("/users/admin/api-keys"), 403, "permission_denied")
    assert_problem(await dev.post("/users/admin/api-keys", json={}), 403, "permission_denied")

    laptop = listed[1]["id"]
    assert (await dev.delete(f"/users/dev/api-keys/{laptop}")).status_code == 204
    assert_problem(await client_for(new_key).get("/me"), 401, "unauthenticated")
    assert (await dev.get("/users/dev/api-keys")).json()[1]["revoked"] is not None
    assert_problem(await dev.delete("/users/dev/api-keys/ApiKeys-999"), 404, "not_found")
    assert_problem(await dev.delete("/users/dev/api-keys/nonsense"), 404, "not_found")
    categories = [e.category for e in await events(services, "ApiKeyCreated", "ApiKeyRevoked")]
    assert categories[-2:] == ["ApiKeyCreated", "ApiKeyRevoked"]
    for row in await events(services):
        assert new_key not in row_text(row)
