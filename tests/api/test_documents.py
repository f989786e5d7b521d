"""Create, list, read (by name, slug and id), update, rename and delete every document kind
through the API; renames carry references along; a referenced document cannot be deleted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conveyor.services.config import load
from conveyor.services.core import Services
from conveyor.store.documents import reveal
from tests.api.conftest import BASE_URL, ClientFor, UserFactory
from tests.api.helpers import assert_problem, events

pytestmark = pytest.mark.usefixtures("shop")

ORIGIN = BASE_URL.removesuffix("/api/v1")


@dataclass(frozen=True)
class Case:
    segment: str
    created: dict[str, Any]
    updated: dict[str, Any]
    renamed: str
    name_field: str = "name"


CASES = [
    Case(
        "environments",
        {"name": "Staging Area", "description": "before production"},
        {"name": "Staging Area", "description": "pre-production", "guided_failure": True},
        "Pre Production",
    ),
    Case(
        "lifecycles",
        {"name": "Hot Fix", "phases": [{"name": "Prod", "environments": ["Prod"]}]},
        {
            "name": "Hot Fix",
            "phases": [
                {"name": "Test", "environments": ["Test"], "optional": True},
                {"name": "Prod", "environments": ["Prod"]},
            ],
        },
        "Emergency Fix",
    ),
    Case(
        "project-groups",
        {"name": "Back Office"},
        {"name": "Back Office", "description": "internal tools"},
        "Internal Tools",
    ),
    Case(
        "projects",
        {"name": "Api Gateway", "group": "Shop", "lifecycle": "Main"},
        {"name": "Api Gateway", "group": "Shop", "lifecycle": "Main", "watch_paths": ["api/**"]},
        "Edge Gateway",
    ),
    Case(
        "targets",
        {"name": "Web 01", "environments": ["Dev"], "roles": ["web"]},
        {"name": "Web 01", "kind": "local", "environments": ["Dev", "Test"], "roles": ["web"]},
        "Web 02",
    ),
    Case(
        "teams",
        {"name": "Web Devs", "members": ["admin"], "roles": [{"role": "Project Viewer"}]},
        {
            "name": "Web Devs",
            "members": ["admin"],
            "roles": [{"role": "Project Contributor", "projects": ["Web"]}],
        },
        "Frontend Devs",
    ),
    Case(
        "user-roles",
        {"name": "Read Only", "permissions": ["ProjectView"]},
        {"name": "Read Only", "permissions": ["ProjectView", "EnvironmentView"]},
        "Just Looking",
    ),
    Case(
        "users",
        {"username": "Carol.K", "email": "carol@example.com"},
        {"username": "Carol.K", "email": "carol@example.com", "display_name": "Carol K"},
        "Caroline.K",
        name_field="username",
    ),
]


def slug(name: str) -> str:
    return name.lower().replace(" ", "-").replace(".", "-")


def names(response: httpx.Response, field: str = "name") -> list[str]:
    assert response.status_code == 200, response.text
    return [item[field] for item in response.json()]


@pytest.mark.parametrize("case", CASES, ids=[c.segment for c in CASES])
async def test_crud_round_trip(client: httpx.AsyncClient, case: Case) -> None:
    name = case.created[case.name_field]
    segment = case.segment

    response = await client.post(f"/{segment}", json=case.created)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == name
    assert created["slug"] == slug(name)
    assert created["id"].split("-")[1].isdigit()
    for key, value in case.created.items():
        assert created[key] == value
    location = response.headers["location"]
    assert location == f"/api/v1/{segment}/{slug(name)}"
    assert (await client.get(ORIGIN + location)).json() == created

    assert name in names(await client.get(f"/{segment}"))
    for ref in (name, slug(name), name.upper(), created["id"]):
        response = await client.get(f"/{segment}/{ref}")
        assert response.status_code == 200, (ref, response.text)
        assert response.json() == created

    response = await client.put(f"/{segment}/{created['id']}", json=case.updated)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["id"] == created["id"]
    for key, value in case.updated.items():
        assert updated[key] == value
    assert (await client.get(f"/{segment}/{slug(name)}")).json() == updated

    # a document as read may be sent back unchanged
    response = await client.put(f"/{segment}/{name}", json=updated)
    assert response.status_code == 200, response.text
    assert response.json() == updated

    renamed = {**case.updated, case.name_field: case.renamed}
    response = await client.put(f"/{segment}/{name}", json=renamed)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == created["id"]
    assert response.json()["slug"] == slug(case.renamed)
    assert_problem(await client.get(f"/{segment}/{name}"), 404, "not_found")
    assert (await client.get(f"/{segment}/{created['id']}")).json()["name"] == case.renamed
    listed = names(await client.get(f"/{segment}"))
    assert case.renamed in listed and name not in listed

    response = await client.delete(f"/{segment}/{case.renamed}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    if segment == "users":
        # users are deactivated, never deleted, so the audit log keeps its meaning
        assert (await client.get(f"/users/{case.renamed}")).json()["active"] is False
    else:
        assert_problem(await client.get(f"/{segment}/{case.renamed}"), 404, "not_found")
        assert case.renamed not in names(await client.get(f"/{segment}"))
        assert_problem(await client.delete(f"/{segment}/{case.renamed}"), 404, "not_found")
    assert_problem(await client.put(f"/{segment}/Nope", json=case.created), 404, "not_found")


async def linked(client: httpx.AsyncClient) -> None:
    """Documents that refer to each other in every way a rename must follow."""
    posts: list[tuple[str, dict[str, Any]]] = [
        ("users", {"username": "dana"}),
        ("user-roles", {"name": "Reader", "permissions": ["ProjectView"]}),
        ("targets", {"name": "box", "environments": ["Dev"], "roles": ["web"]}),
        (
            "teams",
            {
                "name": "Builders",
                "members": ["dana"],
                "roles": [
                    {"role": "Reader", "projects": ["Database"], "environments": ["Dev"]},
                    {"role": "Project Viewer", "project_groups": ["Shop"]},
                ],
            },
        ),
    ]
    for segment, document in posts:
        response = await client.post(f"/{segment}", json=document)
        assert response.status_code == 201, response.text
    steps = [
        {"name": "Deploy DB", "type": "deploy_release", "project": "Database"},
        {
            "name": "Approve",
            "type": "manual_intervention",
            "instructions": "Look first",
            "responsible_teams": ["Builders"],
            "environments": ["Dev"],
        },
        {"name": "Tell", "type": "notification", "subject": "s", "body": "b", "to_users": ["dana"]},
    ]
    response = await client.put("/projects/Web/process", json={"version": 0, "steps": steps})
    assert response.status_code == 200, response.text
    variables = [{"name": "Url", "value": "http://dev", "environments": ["Dev"]}]
    response = await client.put("/projects/Web/variables", json={"variables": variables})
    assert response.status_code == 200, response.text


async def rename(client: httpx.AsyncClient, segment: str, old: str, new: str) -> None:
    document = (await client.get(f"/{segment}/{old}")).json()
    field = "username" if segment == "users" else "name"
    response = await client.put(f"/{segment}/{old}", json={**document, field: new})
    assert response.status_code == 200, response.text


async def test_renames_carry_references_along(
    client: httpx.AsyncClient, services: Services
) -> None:
    await linked(client)
    start = len(await events(services))
    await rename(client, "environments", "Dev", "Development")
    # the rename and every reference it rewrote are audited
    new = (await events(services))[start:]
    assert {e.category for e in new} == {"DocumentModified"}
    assert new[0].message == 'admin renamed environment "Dev" to "Development"'
    assert new[0].details["fields"] == [{"field": "name", "before": "Dev", "after": "Development"}]
    assert {e.message for e in new[1:]} == {
        'admin changed lifecycle "Main"',
        'admin changed target "box"',
        'admin changed team "Builders"',
        'admin changed the deployment process of project "Web"',
        'admin changed the variables of project "Web"',
    }
    phases = next(e for e in new if "lifecycle" in e.message).details["fields"][0]
    assert phases["field"] == "phases"
    assert phases["before"][0]["environments"] == ["Dev"]
    assert phases["after"][0]["environments"] == ["Development"]

    await rename(client, "lifecycles", "Main", "Standard")
    await rename(client, "project-groups", "Shop", "Pet Shop")
    await rename(client, "projects", "Database", "Data Store")
    await rename(client, "teams", "Builders", "Makers")
    await rename(client, "users", "dana", "dana.s")
    await rename(client, "user-roles", "Reader", "Looker")

    lifecycle = (await client.get("/lifecycles/Standard")).json()
    assert lifecycle["phases"][0]["environments"] == ["Development"]
    assert (await client.get("/targets/box")).json()["environments"] == ["Development"]
    web = (await client.get("/projects/Web")).json()
    assert (web["lifecycle"], web["group"]) == ("Standard", "Pet Shop")
    team = (await client.get("/teams/Makers")).json()
    assert team["members"] == ["dana.s"]
    assert team["roles"] == [
        {"role": "Looker", "projects": ["Data Store"], "environments": ["Development"]},
        {"role": "Project Viewer", "project_groups": ["Pet Shop"]},
    ]
    steps = (await client.get("/projects/Web/process")).json()["steps"]
    assert steps[0]["project"] == "Data Store"
    assert steps[1]["responsible_teams"] == ["Makers"]
    assert steps[1]["environments"] == ["Development"]
    assert steps[2]["to_users"] == ["dana.s"]
    variables = (await client.get("/projects/Web/variables")).json()["variables"]
    assert variables[0]["environments"] == ["Development"]


async def test_deleting_a_referenced_document_is_409_naming_where_it_is_used(
    client: httpx.AsyncClient,
) -> None:
    await linked(client)
    used = [
        ("environments", "Dev", "lifecycles[Main].phases[Dev].environments[0]"),
        ("lifecycles", "Main", "projects[Web].lifecycle"),
        ("project-groups", "Shop", "projects[Web].group"),
        ("projects", "Database", "projects[Web].process.steps[Deploy DB].project"),
        ("teams", "Builders", "projects[Web].process.steps[Approve].responsible_teams[0]"),
        ("user-roles", "Reader", "teams[Builders].roles[0].role"),
    ]
    for segment, name, where in used:
        body = assert_problem(await client.delete(f"/{segment}/{name}"), 409, "conflict")
        assert where in body["message"], body
        assert where in [p["path"] for p in body["problems"]], body
        assert (await client.get(f"/{segment}/{name}")).status_code == 200


async def test_built_in_roles_and_the_last_administrator_are_protected(
    client: httpx.AsyncClient,
) -> None:
    role = (await client.get("/user-roles/Project Viewer")).json()
    assert role["built_in"] is True
    edited = {"name": "Project Viewer", "permissions": ["ProjectView"]}
    body = assert_problem(
        await client.put("/user-roles/Project Viewer", json=edited), 409, "conflict"
    )
    assert "built in" in body["message"]
    renamed = {"name": "Viewer", "permissions": role["permissions"]}
    assert_problem(await client.put("/user-roles/project-viewer", json=renamed), 409, "conflict")
    assert_problem(await client.delete("/user-roles/Project Viewer"), 409, "conflict")
    assert (await client.get("/user-roles/Project Viewer")).json() == role
    body = assert_problem(
        await client.post("/user-roles", json={"name": "Mine", "built_in": True}),
        422,
        "validation_failed",
    )
    assert body["problems"][0]["path"] == "built_in"

    # nor can the last way to administer Conveyor be deleted
    for path in ("/users/admin", "/teams/Administrators"):
        body = assert_problem(await client.delete(path), 409, "conflict")
        assert "cannot be deleted" in body["message"]
        assert "AdministerSystem" in body["message"]
    assert (await client.get("/me")).status_code == 200


async def test_updating_a_project_keeps_its_process_and_variables(
    client: httpx.AsyncClient,
) -> None:
    step = {"name": "Hello", "type": "script", "script": "echo hi"}
    await client.put("/projects/Web/process", json={"version": 0, "steps": [step]})
    await client.put("/projects/Web/variables", json={"variables": [{"name": "A", "value": "1"}]})
    web = (await client.get("/projects/Web")).json()
    assert "process" not in web and "variables" not in web
    response = await client.put("/projects/Web", json={**web, "description": "the shop front"})
    assert response.status_code == 200, response.text
    assert (await client.get("/projects/Web/process")).json()["steps"] == [step]
    assert (await client.get("/projects/Web/variables")).json()["variables"] == [
        {"name": "A", "value": "1"}
    ]


async def test_a_rename_needs_the_permission_on_the_current_name_only(
    client: httpx.AsyncClient, client_for: ClientFor, user_with: UserFactory
) -> None:
    keeper = {"name": "Keeper", "permissions": ["EnvironmentView", "EnvironmentEdit"]}
    assert (await client.post("/user-roles", json=keeper)).status_code == 201
    assert (await client.post("/environments", json={"name": "Scratch"})).status_code == 201
    user = client_for(
        await user_with("kim", roles=[{"role": "Keeper", "environments": ["Scratch"]}])
    )
    # kim's own team names the environment: the rename rewrites it without needing TeamEdit
    response = await user.put("/environments/Scratch", json={"name": "Sandbox"})
    assert response.status_code == 200, response.text
    team = (await client.get("/teams/kim team")).json()
    assert team["roles"] == [{"role": "Keeper", "environments": ["Sandbox"]}]
    response = await user.put("/environments/Sandbox", json={"name": "Playground"})
    assert response.status_code == 200, response.text

    response = await user.put("/environments/Test", json={"name": "QA"})
    body = assert_problem(response, 403, "permission_denied")
    assert "EnvironmentEdit" in body["message"]
    assert "Test" in body["message"]
    # the description is an edit of its own, refused likewise for a team without TeamEdit
    team = (await client.get("/teams/kim team")).json()
    response = await user.put(
        "/teams/kim team", json={**team, "description": "we keep the playground"}
    )
    assert "TeamEdit" in assert_problem(response, 403, "permission_denied")["message"]


KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAA-not-a-real-key\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhZc0dmY2Z0cV9rZXlfZm9yX3Rlc3RzX29ubHk="


async def test_an_ssh_targets_key_is_never_read_back_and_kept_when_left_out(
    client: httpx.AsyncClient, services: Services
) -> None:
    target = {
        "name": "Db 01",
        "kind": "ssh",
        "environments": ["Dev"],
        "roles": ["db"],
        "host": "10.0.0.5",
        "user": "deploy",
        "host_key": HOST_KEY,
        "private_key": KEY,
    }
    created = await client.post("/targets", json=target)
    assert created.status_code == 201, created.text
    assert "private_key" not in created.json()
    read = (await client.get("/targets/db-01")).json()
    assert "private_key" not in read and read["host_key"] == HOST_KEY
    # An edit that leaves the key out (as every read gives it) keeps the stored one.
    edited = await client.put("/targets/db-01", json={**read, "port": 2222})
    assert edited.status_code == 200, edited.text
    model = (await load(services)).model
    stored = model.get("targets", "Db 01")
    assert stored is not None and stored.port == 2222
    assert reveal(services.box, stored.private_key) == KEY
    for event in await events(services):
        assert "OPENSSH" not in str(event) and "not-a-real-key" not in str(event)
    # Without a key (and without a pinned host key) an ssh target is refused, field by field.
    bare = {k: v for k, v in target.items() if k not in ("private_key", "host_key")}
    refused = await client.post("/targets", json={**bare, "name": "Db 02"})
    body = assert_problem(refused, 422, "validation_failed")
    said = str(body)
    assert "private_key" in said and "ssh-keyscan" in said
