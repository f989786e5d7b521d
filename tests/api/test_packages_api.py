"""The package feed over HTTP: multipart push, list, show, download, delete, and refusals."""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import httpx
import pytest

from tests.api.conftest import UserFactory

PROBLEM_JSON = "application/problem+json"


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


GOOD = zip_bytes({"site/index.html": b"<h1>Pet shop</h1>", "deploy.sh": b"echo ok\n"})


async def post(
    client: httpx.AsyncClient, name: str, data: bytes = GOOD, **fields: str
) -> httpx.Response:
    return await client.post(
        "/packages", files={"file": (name, data, "application/zip")}, data=fields
    )


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def test_push_list_show_and_download(client: httpx.AsyncClient) -> None:
    response = await post(client, "OctoPetShop.Web.1.0.1.zip")
    assert response.status_code == 201, response.text
    pushed = response.json()
    assert set(pushed) == {
        "id",
        "package_id",
        "version",
        "format",
        "size",
        "sha256",
        "created",
        "pushed_by",
    }
    assert pushed["package_id"] == "OctoPetShop.Web" and pushed["version"] == "1.0.1"
    assert pushed["format"] == "zip" and pushed["pushed_by"] == "admin"
    assert pushed["sha256"] == hashlib.sha256(GOOD).hexdigest() and pushed["size"] == len(GOOD)

    flagged = await post(client, "site.zip", package_id="OctoPetShop.Web", version="1.0.10")
    assert flagged.status_code == 201, flagged.text

    listed = (await client.get("/packages", params={"package_id": "octopetshop.web"})).json()
    assert [p["version"] for p in listed] == ["1.0.10", "1.0.1"]
    assert (await client.get("/packages")).json() == listed

    shown = await client.get("/packages/octopetshop.web/1.0.1.0")
    assert shown.status_code == 200 and shown.json() == pushed

    download = await client.get("/packages/OctoPetShop.Web/1.0.1/download")
    assert download.status_code == 200
    assert download.content == GOOD
    assert download.headers["content-type"] == "application/zip"
    assert "OctoPetShop.Web.1.0.1.zip" in download.headers["content-disposition"]
    assert download.headers["x-package-sha256"] == pushed["sha256"]


async def test_conflict_then_replace(client: httpx.AsyncClient) -> None:
    assert (await post(client, "Shop.1.0.0.zip")).status_code == 201
    body = problem(await post(client, "Shop.1.0.0.zip"), 409, "conflict")
    assert "--replace" in body["message"]
    other = zip_bytes({"new.txt": b"new"})
    replaced = await post(client, "Shop.1.0.0.zip", other, replace="true")
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["sha256"] == hashlib.sha256(other).hexdigest()
    download = await client.get("/packages/Shop/1.0.0/download")
    assert download.content == other


async def test_bad_archives_and_names_are_422_naming_the_problem(
    client: httpx.AsyncClient,
) -> None:
    evil = zip_bytes({"ok.txt": b"", "../evil.sh": b"rm -rf /"})
    body = problem(await post(client, "Shop.1.0.0.zip", evil), 422, "validation_failed")
    assert "../evil.sh" in body["message"]
    body = problem(await post(client, "Shop.1.0.0.zip", b"hello"), 422, "validation_failed")
    assert "not a zip or tar.gz" in body["message"]
    body = problem(await post(client, "build.zip"), 422, "validation_failed")
    assert "OctoPetShop.Database.1.0.1.zip" in body["message"]
    body = problem(await post(client, "Shop.zip", version="1.0.x"), 422, "validation_failed")
    assert "1.2.3" in body["message"] and body["problems"][0]["path"] == "version"
    assert (await client.get("/packages")).json() == []


async def test_refusals_name_the_permission(
    client: httpx.AsyncClient,
    client_for: Any,
    user_with: UserFactory,
    anonymous: httpx.AsyncClient,
) -> None:
    problem(await post(anonymous, "Shop.1.0.0.zip"), 401, "unauthenticated")
    viewer = client_for(await user_with("viewer", roles=[{"role": "Project Viewer"}]))
    body = problem(await post(viewer, "Shop.1.0.0.zip"), 403, "permission_denied")
    assert body["permission"] == "BuiltInFeedPush" and "BuiltInFeedPush" in body["message"]

    build = client_for(await user_with("build", roles=[{"role": "Build Server"}]))
    assert (await post(build, "Shop.1.0.0.zip")).status_code == 201
    body = problem(await post(build, "Shop.1.0.0.zip", replace="true"), 403, "permission_denied")
    assert "BuiltInFeedAdminister" in body["message"]
    assert (await build.get("/packages/Shop/1.0.0/download")).content == GOOD
    problem(await build.delete("/packages/Shop/1.0.0"), 403, "permission_denied")


@pytest.mark.parametrize(
    "path",
    ["/packages/Nope/1.0.0", "/packages/Nope/1.0.0/download", "/packages/Nope/not-a-version"],
)
async def test_missing_packages_are_404(client: httpx.AsyncClient, path: str) -> None:
    problem(await client.get(path), 404, "not_found")


async def test_delete(client: httpx.AsyncClient) -> None:
    assert (await post(client, "Shop.1.0.0.zip")).status_code == 201
    assert (await client.delete("/packages/shop/1.0.0")).status_code == 204
    problem(await client.get("/packages/Shop/1.0.0"), 404, "not_found")
    problem(await client.delete("/packages/shop/1.0.0"), 404, "not_found")
