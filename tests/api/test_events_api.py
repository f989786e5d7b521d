"""The audit log over HTTP: who called from where is recorded; list, export (streamed), verify,
categories, and a release's evidence, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pytest

from conveyor.domain.audit import DESCRIPTIONS
from conveyor.services.core import Services
from tests.api.conftest import ClientFor, UserFactory

pytestmark = pytest.mark.usefixtures("shop")


async def test_an_api_request_records_the_client_address_and_user_agent(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/environments", json={"name": "QA"}, headers={"User-Agent": "release-bot/2.1"}
    )
    assert created.status_code == 201, created.text
    page = (await client.get("/events", params={"category": "DocumentCreated"})).json()
    event = page["events"][0]
    assert "QA" in event["message"] and event["actor"] == "admin"
    assert event["ip_address"] == "127.0.0.1"
    assert event["user_agent"] == "release-bot/2.1"
    assert event["hash"] and event["prev_hash"]


async def test_list_filters_and_pages(client: httpx.AsyncClient) -> None:
    for name in ("A", "B", "C"):
        await client.post("/environments", json={"name": name})
    first = (await client.get("/events", params={"limit": 2})).json()
    assert len(first["events"]) == 2 and first["next"] == first["events"][-1]["id"]
    second = (await client.get("/events", params={"limit": 2, "before": first["next"]})).json()
    ids = [int(e["id"].split("-")[1]) for e in first["events"] + second["events"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4

    created = await client.get(
        "/events", params=[("category", "DocumentCreated"), ("category", "ApiKeyCreated")]
    )
    assert {e["category"] for e in created.json()["events"]} == {
        "DocumentCreated",
        "ApiKeyCreated",
    }
    bad = await client.get("/events", params={"category": "Nope"})
    assert bad.status_code == 422 and "not an event category" in bad.json()["message"]
    naive = await client.get("/events", params={"since": "2000-01-01T00:00:00"})
    assert naive.status_code == 200 and naive.json()["events"]


async def test_categories_are_the_documented_catalogue(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/events/categories")).json()
    assert {c["category"]: c["description"] for c in listed} == {
        c.value: d for c, d in DESCRIPTIONS.items()
    }


async def test_export_streams_csv_and_json_lines(client: httpx.AsyncClient) -> None:
    events = (await client.get("/events", params={"limit": 500})).json()["events"]
    jsonl = await client.get("/events/export", params={"format": "jsonl"})
    assert jsonl.status_code == 200
    assert jsonl.headers["content-type"] == "application/x-ndjson"
    assert "attachment" in jsonl.headers["content-disposition"]
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [e["id"] for e in lines] == [e["id"] for e in reversed(events)]

    exported = await client.get(
        "/events/export", params={"format": "csv", "category": "DocumentCreated"}
    )
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows and {r["category"] for r in rows} == {"DocumentCreated"}
    assert all(len(r["hash"]) == 64 for r in rows)
    assert (await client.get("/events/export", params={"format": "xml"})).status_code == 422


async def test_a_reader_without_event_view_is_refused_before_any_byte_is_streamed(
    client_for: ClientFor, user_with: UserFactory
) -> None:
    nobody = client_for(await user_with("nobody", roles=[{"role": "Environment Viewer"}]))
    for path in ("/events", "/events/export", "/events/verify"):
        response = await nobody.get(path)
        assert response.status_code == 403, (path, response.text)
        assert "EventView" in response.json()["message"]


async def test_verify_is_for_unscoped_readers(
    client: httpx.AsyncClient, client_for: ClientFor, user_with: UserFactory
) -> None:
    result = (await client.get("/events/verify")).json()
    assert result["intact"] is True and result["message"] == f"intact: {result['count']} events"
    scoped = client_for(
        await user_with("web-viewer", roles=[{"role": "Project Viewer", "projects": ["Web"]}])
    )
    assert (await scoped.get("/events")).status_code == 200
    refused = await scoped.get("/events/verify")
    assert refused.status_code == 403
    assert "every project and environment" in refused.json()["message"]


async def test_release_evidence_as_json_and_markdown(
    client: httpx.AsyncClient, services: Services
) -> None:
    build = {
        "commit": "abc1234",
        "branch": "main",
        "commits": [{"sha": "abc1234", "author": "Dana", "message": "Fix the cart"}],
    }
    created = await client.post("/projects/Web/releases", json={"build": build})
    assert created.status_code == 201, created.text
    version = created.json()["version"]
    data = (await client.get(f"/projects/web/releases/{version}/evidence")).json()
    assert data["release"]["build"]["commits"] == build["commits"]
    assert [e["category"] for e in data["events"]] == ["ReleaseCreated"]
    report = await client.get(
        f"/projects/Web/releases/{version}/evidence", params={"format": "markdown"}
    )
    assert report.headers["content-type"].startswith("text/markdown")
    assert f"# Release evidence: Web {version}" in report.text
    assert "- **branch**: main" in report.text
    assert "`abc1234` Fix the cart (Dana)" in report.text
    missing = await client.get("/projects/Web/releases/9.9.9/evidence")
    assert missing.status_code == 404
