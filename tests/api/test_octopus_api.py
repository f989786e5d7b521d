"""The Octopus API under /api (docs/octopus-compatibility.md), in process on both databases:
the shapes the official clients read, authentication, errors, and that every permission,
lifecycle and audit rule of Conveyor's own API applies to it too."""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conveyor.api.app import create_app
from conveyor.domain import octopus
from conveyor.domain.errors import ValidationFailed
from conveyor.services.configfile import apply_text
from conveyor.services.core import Services, system_caller
from conveyor.settings import Settings
from tests.api.conftest import UserFactory
from tests.api.helpers import events

ROOT = "http://conveyor.test"
SHA = "0123456789abcdef0123456789abcdef01234567"

CONFIG = """
environments:
  - name: Dev
  - name: Test
  - name: Prod
lifecycles:
  - name: Main
    phases:
      - name: Dev
        environments: [Dev]
      - name: Test
        environments: [Test]
      - name: Prod
        environments: [Prod]
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
  - name: Database
    group: Shop
    lifecycle: Main
"""

Client = Callable[..., httpx.AsyncClient]


def archive(name: str = "index.html", text: str = "hello") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(name, text)
    return buffer.getvalue()


def assert_octopus_error(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    """An error as the clients read it: ErrorMessage, then Errors."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"ErrorMessage", "Errors"}, body
    assert isinstance(body["Errors"], list)
    text = "\n".join([body["ErrorMessage"], *body["Errors"]])
    for needle in needles:
        assert needle in text, text
    return body


@pytest.fixture
async def shop(services: Services) -> None:
    await apply_text(services, system_caller(), CONFIG, source="shop.yaml")


@pytest.fixture
async def octo(app: FastAPI, admin_key: str, shop: None) -> AsyncIterator[Client]:
    """Clients of the Octopus API that send a key as the Octopus clients do."""
    opened: list[httpx.AsyncClient] = []

    def make(key: str | None = admin_key, header: str = "X-Octopus-ApiKey") -> httpx.AsyncClient:
        headers = {}
        if key is not None:
            headers = {header: f"Bearer {key}" if header == "Authorization" else key}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=ROOT, headers=headers
        )
        opened.append(client)
        return client

    try:
        yield make
    finally:
        for client in opened:
            await client.aclose()


async def push(client: httpx.AsyncClient, name: str, mode: str | None = None) -> httpx.Response:
    params = {"overwriteMode": mode} if mode else {}
    return await client.post(
        "/api/Spaces-1/packages/raw",
        params=params,
        files={"fileToUpload": (name, archive(text=name), "application/octet-stream")},
    )


async def test_root_spaces_keys_and_who_i_am(octo: Client, admin_key: str) -> None:
    client = octo()
    root = (await octo(None).get("/api")).json()  # the root needs no key, as in Octopus
    # Strict semver, not below what the clients need for the Executions API.
    assert re.fullmatch(r"\d+\.\d+\.\d+", root["Version"])
    assert tuple(map(int, root["Version"].split("."))) >= (2022, 3, 5512)
    assert (
        root["InstallationId"]
        and root["InstallationId"] == (await client.get("/api")).json()["InstallationId"]
    )
    spaces = await client.get(
        "/api/spaces", params={"partialName": "def", "skip": 0, "take": octopus.TAKE_ALL}
    )
    page = spaces.json()
    assert page["TotalResults"] == 1 and page["Items"][0]["Id"] == "Spaces-1"
    assert page["Items"][0]["Name"] == "Default" and page["Items"][0]["IsDefault"] is True
    none = (await client.get("/api/spaces", params={"partialName": "Other"})).json()
    assert none["TotalResults"] == 0 and none["Items"] == []
    assert (await client.get("/api/capabilities")).json() == {
        "Capabilities": ["GetAllSpacesRequest"]
    }
    me = (await client.get("/api/users/me")).json()
    assert me["Username"] == "admin" and me["Id"].startswith("Users-")
    # A key in every header the clients use, or Conveyor's own.
    for other in (octo(admin_key, "Authorization"), octo(admin_key, "X-Api-Key")):
        assert (await other.get("/api/users/me")).json()["Username"] == "admin"
    # The clients send an empty X-Octopus-ApiKey when they were given none.
    for nobody in (octo(""), octo(None), octo("API-WRONG")):
        assert_octopus_error(await nobody.get("/api/Spaces-1/projects"), 401, "API key")


async def test_lookups_by_partial_name(octo: Client, user_with: UserFactory) -> None:
    client = octo()
    projects = (await client.get("/api/Spaces-1/projects", params={"partialName": "WE"})).json()
    assert [p["Name"] for p in projects["Items"]] == ["Web"] and projects["TotalResults"] == 1
    web = projects["Items"][0]
    assert web["Id"].startswith("Projects-") and web["SpaceId"] == "Spaces-1"
    group = (await client.get(f"/api/Spaces-1/projectgroups/{web['ProjectGroupId']}")).json()
    assert group["Name"] == "Shop"
    envs = (await client.get("/api/Spaces-1/environments")).json()["Items"]
    assert [e["Name"] for e in envs] == ["Dev", "Test", "Prod"]
    by_ids = await client.get(
        "/api/Spaces-1/environments/v2", params={"ids": f"{envs[0]['Id']},{envs[2]['Id']}"}
    )
    assert [(e["Name"], e["Type"]) for e in by_ids.json()["Items"]] == [
        ("Dev", "Static"),
        ("Prod", "Static"),
    ]
    lifecycle = (await client.get(f"/api/Spaces-1/lifecycles/{web['LifecycleId']}")).json()
    assert [p["OptionalDeploymentTargets"] for p in lifecycle["Phases"]] == [
        [envs[0]["Id"]],
        [envs[1]["Id"]],
        [envs[2]["Id"]],
    ]
    feeds = (await client.get("/api/Spaces-1/feeds", params={"take": 1})).json()
    assert feeds["Items"][0]["Id"] == "feeds-builtin"
    assert feeds["Items"][0]["FeedType"] == "BuiltIn"
    # What a caller may not view is left out, as in Conveyor's own lists.
    viewer = octo(
        await user_with("viewer", roles=[{"role": "Project Viewer", "projects": ["Database"]}])
    )
    seen = (await viewer.get("/api/Spaces-1/projects")).json()
    assert [p["Name"] for p in seen["Items"]] == ["Database"]
    assert (await viewer.get("/api/Spaces-1/feeds")).json()["TotalResults"] == 0
    # One space; our own API's unknown paths stay its own 404.
    assert_octopus_error(await client.get("/api/Spaces-2/projects"), 404, "one space")
    for path in ("/api/v1/no-such-thing", "/api/v1/feeds"):  # /api/{space}/feeds: no space "v1"
        own = await client.get(path, headers={"X-Api-Key": "x"})
        assert own.status_code == 404
        assert own.headers["content-type"].startswith("application/problem+json")


async def test_release_deploy_and_tasks(octo: Client, services: Services, admin_key: str) -> None:
    key = admin_key
    client = octo()
    for name in ("Hello.1.0.0.zip", "GoodBye.2.0.0.zip", "Hello.1.1.0.zip"):
        assert (await push(client, name)).status_code == 201
    info = {
        "PackageId": "Hello",
        "Version": "1.0.0",
        "OctopusBuildInformation": {
            "Branch": "refs/heads/main",
            "BuildUrl": "https://ci.example.com/runs/7",
            "BuildNumber": "7",
            "VcsCommitNumber": SHA,
            "VcsType": "Git",
            "Commits": [{"Id": SHA, "Comment": "Say hello"}],
        },
    }
    assert (await client.post("/api/Spaces-1/build-information", json=info)).status_code == 201
    space = {"spaceId": "Spaces-1", "spaceIdOrName": "Default", "spaceName": "Default"}
    created = await client.post(
        "/api/Spaces-1/releases/create/v1",
        json={**space, "ProjectName": "Web", "Packages": ["Deploy site:1.0.0", "GoodBye:2.0.0"]},
    )
    assert created.status_code == 201, created.text
    assert created.json()["ReleaseVersion"] == "0.0.1"  # allocated, as Octopus's first is
    release = (await client.get(f"/api/Spaces-1/releases/{created.json()['ReleaseId']}")).json()
    assert {(p["ActionName"], p["Version"]) for p in release["SelectedPackages"]} == {
        ("Deploy site", "1.0.0"),
        ("Deploy api", "2.0.0"),
    }
    # The release took the build information pushed for its package: Conveyor's change
    # detection and plans read it.
    assert release["BuildInformation"][0]["VcsCommitNumber"] == SHA
    listed = await client.get(f"/api/Spaces-1/projects/{release['ProjectId']}/releases")
    assert [r["Version"] for r in listed.json()["Items"]] == ["0.0.1"]
    own = await client.get("/api/v1/projects/Web/releases/0.0.1", headers={"X-Api-Key": key})
    assert own.json()["build"] == {
        "commit": SHA,
        "branch": "main",
        "build_url": "https://ci.example.com/runs/7",
        "commits": [{"sha": SHA, "author": "", "message": "Say hello"}],
    }
    again = await client.post(
        "/api/Spaces-1/releases/create/v1",
        json={**space, "ProjectName": "web", "ReleaseVersion": "0.0.1"},
    )
    assert_octopus_error(again, 409, "already has release 0.0.1")
    same = await client.post(
        "/api/Spaces-1/releases/create/v1",
        json={"ProjectName": "Web", "ReleaseVersion": "0.0.1", "IgnoreIfAlreadyExists": True},
    )
    assert same.status_code == 201 and same.json() == created.json()

    deploy = {**space, "ProjectName": "Web", "ReleaseVersion": "0.0.1"}
    early = await client.post(
        "/api/Spaces-1/deployments/create/untenanted/v1",
        json={**deploy, "EnvironmentNames": ["Dev", "Test"]},
    )
    assert_octopus_error(early, 409, "cannot be deployed")
    # All or none: the refusal for Test queued nothing for Dev either.
    assert (await client.get("/api/Spaces-1/deployments")).json()["TotalResults"] == 0
    queued = await client.post(
        "/api/Spaces-1/deployments/create/untenanted/v1",
        json={**deploy, "EnvironmentNames": ["dev"]},
    )
    assert queued.status_code == 201, queued.text
    [pair] = queued.json()["DeploymentServerTasks"]
    deployments = await client.get(
        "/api/Spaces-1/deployments", params={"take": 1, "ids": pair["DeploymentId"]}
    )
    [deployment] = deployments.json()["Items"]
    assert deployment["TaskId"] == pair["ServerTaskId"]
    assert (
        deployment["EnvironmentId"]
        == (await client.get("/api/Spaces-1/environments", params={"partialName": "Dev"})).json()[
            "Items"
        ][0]["Id"]
    )
    # ServerTaskWaiter's poll: ids joined with commas, a batch's skip, unknown ids left out.
    tasks = await client.get(
        "/api/Spaces-1/tasks",
        params={"skip": 300, "take": 300, "ids": f"{pair['ServerTaskId']},ServerTasks-99999"},
    )
    [task] = tasks.json()["Items"]
    assert task["Id"] == pair["ServerTaskId"]
    assert (task["State"], task["IsCompleted"]) == ("Queued", False)
    canceled = await client.post(f"/api/tasks/{pair['ServerTaskId']}/cancel", json={})
    assert canceled.status_code == 200
    assert canceled.json()["State"] in ("Cancelling", "Canceled")
    details = (await client.get(f"/api/Spaces-1/tasks/{pair['ServerTaskId']}/details")).json()
    assert details["Task"]["Id"] == pair["ServerTaskId"]
    assert [c["Name"] for c in details["ActivityLogs"][0]["Children"]] == [
        "Deploy site",
        "Deploy api",
    ]
    raw = await client.get(f"/api/Spaces-1/tasks/{pair['ServerTaskId']}/raw")
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/plain")
    assert_octopus_error(await client.get("/api/Spaces-1/tasks/ServerTasks-99999"), 404)
    # The same audit trail as Conveyor's own API.
    assert [e.category for e in await events(services, "DeploymentQueued", "TaskCanceled")] == [
        "DeploymentQueued",
        "TaskCanceled",
    ]
    assert len(await events(services, "BuildInformationPushed")) == 1


async def test_permissions_apply_as_in_our_api(
    octo: Client, user_with: UserFactory, services: Services
) -> None:
    admin = octo()
    assert (await push(admin, "Hello.1.0.0.zip")).status_code == 201
    assert (await push(admin, "GoodBye.2.0.0.zip")).status_code == 201
    made = await admin.post("/api/Spaces-1/releases/create/v1", json={"ProjectName": "Web"})
    assert made.status_code == 201, made.text
    build = octo(
        await user_with("build", roles=[{"role": "Build Server", "environments": ["Dev"]}])
    )
    dev = {"ProjectName": "Web", "ReleaseVersion": "0.0.1", "EnvironmentNames": ["Dev"]}
    ok = await build.post("/api/Spaces-1/deployments/create/untenanted/v1", json=dev)
    assert ok.status_code == 201, ok.text
    prod = await build.post(
        "/api/Spaces-1/deployments/create/untenanted/v1", json={**dev, "EnvironmentNames": ["Prod"]}
    )
    assert_octopus_error(prod, 403, "DeploymentCreate")
    refusals = await events(services, "AccessDenied")
    assert refusals and refusals[-1].actor == "build"
    # A key that may not create releases is refused before its request is looked at.
    viewer = octo(await user_with("viewer", roles=[{"role": "Project Viewer"}]))
    refused = await viewer.post(
        "/api/Spaces-1/releases/create/v1", json={"ProjectName": "Web", "ChannelName": "Beta"}
    )
    assert_octopus_error(refused, 403, "ReleaseCreate")
    unsupported = {**dev, "SpecificMachineNames": ["web-1"]}
    deploy = "/api/Spaces-1/deployments/create/untenanted/v1"
    assert_octopus_error(await viewer.post(deploy, json=unsupported), 403, "DeploymentCreate")
    assert_octopus_error(await push(viewer, "Hello.3.0.0.zip"), 403, "BuiltInFeedPush")
    info = {"PackageId": "Hello", "Version": "1.0.0", "OctopusBuildInformation": {}}
    denied = await viewer.post("/api/Spaces-1/build-information", json=info)
    assert_octopus_error(denied, 403, "BuildInformationPush")
    # Authorised before validated: a bad overwriteMode or body tells such a caller nothing.
    before = len(await events(services, "AccessDenied"))
    for params, sent in (
        ({"overwriteMode": "Sometimes"}, {"json": info}),
        ({}, {"json": {"PackageId": "", "OctopusBuildInformation": {"Commits": 3}}}),
        ({}, {"content": b"{nope", "headers": {"Content-Type": "application/json"}}),
    ):
        refused = await viewer.post("/api/Spaces-1/build-information", params=params, **sent)
        assert_octopus_error(refused, 403, "BuildInformationPush")
    assert len(await events(services, "AccessDenied")) == before + 3
    # So is a package push: a bad overwriteMode, or no file at all, is not looked at.
    raw = "/api/Spaces-1/packages/raw"
    bad_push = await viewer.post(raw, params={"overwriteMode": "Sometimes"}, data={"x": "1"})
    assert_octopus_error(bad_push, 403, "BuiltInFeedPush")
    assert_octopus_error(await build.post(raw, data={"x": "1"}), 400, "fileToUpload")
    # The same requests from a caller who may push say what is wrong.
    bad_mode = await build.post(
        "/api/Spaces-1/build-information", params={"overwriteMode": "Sometimes"}, json=info
    )
    assert_octopus_error(bad_mode, 400, "Sometimes", "FailIfExists")
    no_id = await build.post("/api/Spaces-1/build-information", json={"Version": "1.0.0"})
    assert_octopus_error(no_id, 400, "PackageId")
    garbled = await build.post(
        "/api/Spaces-1/build-information",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert_octopus_error(garbled, 400, "not valid JSON")
    # The Build Server role may push but not replace a package (BuiltInFeedAdminister).
    replace = await push(build, "Hello.1.0.0.zip", "OverwriteExisting")
    assert_octopus_error(replace, 403, "BuiltInFeedAdminister")
    cancel = await build.post(
        f"/api/tasks/{ok.json()['DeploymentServerTasks'][0]['ServerTaskId']}/cancel"
    )
    assert_octopus_error(cancel, 403, "TaskCancel")


async def test_packages_and_build_information(octo: Client) -> None:
    client = octo()
    first = await push(client, "Hello.1.0.0.zip")
    assert first.status_code == 201
    package = first.json()
    assert (package["PackageId"], package["Version"], package["FeedId"]) == (
        "Hello",
        "1.0.0",
        "feeds-builtin",
    )
    assert package["PackageVersionBuildInformation"] is None
    again = await push(client, "Hello.1.0.0.zip")
    assert_octopus_error(again, 409, "A package with the same name and version already exists")
    ignored = await push(client, "Hello.1.0.0.zip", "IgnoreIfExists")
    assert ignored.status_code == 200 and ignored.json()["Id"] == package["Id"]
    assert (await push(client, "Hello.1.0.0.zip", "OverwriteExisting")).status_code == 201
    assert (await push(client, "Hello.2.0.0.zip")).status_code == 201
    assert (await push(client, "Other.1.0.0.zip")).status_code == 201
    assert_octopus_error(await push(client, "Hello.1.0.0.zip", "Sometimes"), 400, "FailIfExists")
    assert_octopus_error(await push(client, "hello.zip"), 400, "package id and version")

    listed = (await client.get("/api/Spaces-1/packages", params={"nuGetPackageId": "hello"})).json()
    assert [p["Version"] for p in listed["Items"]] == ["2.0.0", "1.0.0"]
    latest = (await client.get("/api/Spaces-1/packages", params={"latest": "true"})).json()
    assert sorted((p["PackageId"], p["Version"]) for p in latest["Items"]) == [
        ("Hello", "2.0.0"),
        ("Other", "1.0.0"),
    ]
    text = (await client.get("/api/Spaces-1/packages", params={"filter": "oth"})).json()
    assert [p["PackageId"] for p in text["Items"]] == ["Other"]

    info = {
        "PackageId": "Hello",
        "Version": "1.0.0",
        "OctopusBuildInformation": {"VcsCommitNumber": SHA, "Branch": "main", "Commits": []},
    }
    pushed = await client.post("/api/Spaces-1/build-information", json=info)
    assert pushed.status_code == 201 and pushed.json()["VcsCommitNumber"] == SHA
    duplicate = await client.post("/api/Spaces-1/build-information", json=info)
    assert_octopus_error(
        duplicate, 409, "Metadata for the specified Package ID and version already exists."
    )
    newer = {**info, "OctopusBuildInformation": {"VcsCommitNumber": "abcdef1", "Commits": []}}
    over = await client.post(
        "/api/Spaces-1/build-information",
        params={"overwriteMode": "OverwriteExisting"},
        json=newer,
    )
    assert over.status_code == 201
    for ref in (package["Id"], "packages-Hello.1.0.0"):
        got = (await client.get(f"/api/Spaces-1/packages/{ref}")).json()
        assert got["PackageVersionBuildInformation"]["VcsCommitNumber"] == "abcdef1"
    assert_octopus_error(await client.get("/api/Spaces-1/packages/packages-Nope.1.0.0"), 404)
    bad = await client.post(
        "/api/Spaces-1/build-information",
        json={"PackageId": "Hello", "Version": "1.0.0", "OctopusBuildInformation": {"Commits": 3}},
    )
    assert_octopus_error(bad, 400, "Commits")


async def test_bad_requests_say_what_is_wrong(octo: Client) -> None:
    client = octo()
    create = "/api/Spaces-1/releases/create/v1"
    beta = await client.post(create, json={"ProjectName": "Web", "ChannelName": "Beta"})
    assert_octopus_error(beta, 400, 'channel "Beta" does not exist')
    shape = await client.post(create, json={"ProjectName": "Web", "Packages": ["nonsense"]})
    assert_octopus_error(shape, 400, "StepName:Version")
    unknown = await client.post(create, json={"ProjectName": "Web", "Packages": ["Nope:1.0.0"]})
    assert_octopus_error(unknown, 400, "names no package step")
    missing = await client.post(create, json={"ProjectName": "Web", "PackageVersion": "9.9.9"})
    assert_octopus_error(missing, 400, "not in the package feed")
    assert_octopus_error(await client.post(create, json={"ProjectName": "Nope"}), 404, "Nope")
    assert_octopus_error(await client.post(create, json={}), 400, "ProjectName")
    invalid = await client.post(
        create, content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert_octopus_error(invalid, 400, "not valid JSON")
    assert (await client.post(create, json={"ProjectName": "Database"})).status_code == 201
    deploy = "/api/Spaces-1/deployments/create/untenanted/v1"
    machines = await client.post(
        deploy,
        json={
            "ProjectName": "Database",
            "ReleaseVersion": "0.0.1",
            "EnvironmentNames": ["Dev"],
            "SpecificMachineNames": ["web-1"],
        },
    )
    assert_octopus_error(machines, 400, "SpecificMachineNames", "not supported")
    none = await client.post(
        deploy, json={"ProjectName": "Web", "ReleaseVersion": "1.0.0", "EnvironmentNames": []}
    )
    assert_octopus_error(none, 400, "at least one environment")
    tenanted = await client.post("/api/Spaces-1/deployments/create/tenanted/v1", json={})
    assert_octopus_error(tenanted, 400, "no tenants")
    states = await client.get("/api/Spaces-1/tasks", params={"state": "Sleeping"})
    assert_octopus_error(states, 400, "not a task state")


async def test_a_package_may_be_larger_than_a_request(
    settings: Settings, services: Services, admin_key: str
) -> None:
    """The upload is the one body allowed past the request limit, for a caller with a valid key
    only: anyone else is refused before a byte is read."""
    app = create_app(settings.model_copy(update={"max_request_bytes": 4096}), services)
    transport = httpx.ASGITransport(app=app)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("blob.bin", os.urandom(20_000))
    files = {"fileToUpload": ("Big.1.0.0.zip", buffer.getvalue(), "application/zip")}
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
        pushed = await client.post(
            "/api/Spaces-1/packages/raw", files=files, headers={"X-Octopus-ApiKey": admin_key}
        )
        assert pushed.status_code == 201, pushed.text
        anonymous = await client.post("/api/Spaces-1/packages/raw", files=files)
        assert_octopus_error(anonymous, 401, "API key")
        other = await client.post(
            "/api/Spaces-1/build-information",
            content=b"x" * 5000,
            headers={"X-Octopus-ApiKey": admin_key, "Content-Type": "application/json"},
        )
        assert other.status_code == 413


def test_package_selection_rules() -> None:
    steps = [("Deploy site", "Hello"), ("Deploy api", "GoodBye"), ("Also site", "Hello")]
    assert octopus.select_packages(steps, "1.0.0", []) == {"Hello": "1.0.0", "GoodBye": "1.0.0"}
    assert octopus.select_packages(steps, "1.0.0", ["GoodBye:2.0.0", "*:3.0.0"]) == {
        "Hello": "3.0.0",
        "GoodBye": "2.0.0",
    }
    assert octopus.select_packages(steps, None, ["Deploy api:GoodBye:4.0.0"]) == {
        "GoodBye": "4.0.0"
    }
    assert octopus.select_packages(steps, None, ["deploy site:*:5.0.0"]) == {"Hello": "5.0.0"}
    with pytest.raises(ValidationFailed) as bad:
        octopus.select_packages(steps, None, ["Deploy api:Hello:1.0.0", "x:y:z:1"])
    assert len(bad.value.problems) == 2


def test_task_states_and_ids() -> None:
    assert [octopus.task_state(s) for s in octopus.TASK_STATES] == [
        "Queued",
        "Executing",
        "Executing",
        "Success",
        "Failed",
        "Canceled",
        "TimedOut",
    ]
    assert octopus.task_state("executing", cancel_requested=True) == "Cancelling"
    assert octopus.task_state("canceled", cancel_requested=True) == "Canceled"
    assert octopus.split_ids(["ServerTasks-1,ServerTasks-2", "ServerTasks-1"]) == [
        "ServerTasks-1",
        "ServerTasks-2",
    ]
    assert octopus.package_reference("packages-Hello.World.1.0.0-beta.1") == (
        "Hello.World",
        "1.0.0-beta.1",
    )
    assert octopus.package_reference("Projects-1") is None
    assert octopus.conveyor_build(
        {"VcsCommitNumber": "not-a-sha", "Branch": "refs/heads/main", "BuildUrl": "ftp://x"}
    ) == {"branch": "main"}
