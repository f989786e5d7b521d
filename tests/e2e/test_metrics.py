"""GET /metrics, /healthz, /readyz and JSON logs against a real `conveyor server` process, on
SQLite and PostgreSQL: a deployment moves the numbers, and every line the server logs with
CONVEYOR_LOG_FORMAT=json is one JSON object with no secret in it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import loopback
from tests.e2e.conftest import (
    START_TIMEOUT,
    Server,
    free_port,
    install,
    read_log,
    start_conveyor,
    stop,
    wait_for_api,
)

pytestmark = pytest.mark.e2e

TOKEN = "metrics-token-0123456789"
CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Apps
projects:
  - name: Api
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Say
          type: script
          script: echo hello from the metrics test
        - name: Again
          type: script
          script: echo and again
"""


@pytest.fixture(scope="module")
def server(e2e_database: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server logging JSON, with a metrics token; its log is checked when it has stopped."""
    tmp = tmp_path_factory.mktemp("metrics")
    data_dir = tmp / "data"
    env = {
        "CONVEYOR_DATA_DIR": str(data_dir),
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_METRICS_TOKEN": TOKEN,
        # Nothing is open without the token: the test process is on loopback too.
        "CONVEYOR_METRICS_NETWORKS": "[]",
        "CONVEYOR_METRICS_CACHE_SECONDS": "0",
    }
    if e2e_database:
        env["CONVEYOR_DATABASE_URL"] = e2e_database
    secrets = install(data_dir, e2e_database)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    proc = start_conveyor(["server", "--port", str(port)], env, tmp, log)
    server = Server(
        url=url,
        api_key=secrets["api_key"],
        admin_password=secrets["password"],
        data_dir=data_dir,
        log=log,
        database_url=e2e_database,
        tmp=tmp,
        proc=proc,
    )
    try:
        wait_for_api(url, proc, log, START_TIMEOUT)
        yield server
    finally:
        stop(proc)
    _check_json_log(log, secrets)


def _check_json_log(log: Path, secrets: dict[str, str]) -> None:
    text = read_log(log)
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line!r}\n{text}")
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(r.get("path") == "/api/v1/deployments" and r.get("status") == 201 for r in access)
    assert any(r["logger"].startswith("conveyor") for r in records), "no line of Conveyor's own"
    for secret in (secrets["api_key"], secrets["password"], TOKEN):
        assert secret not in text


def scrape(server: Server, token: str | None = TOKEN) -> dict[str, float]:
    """Every sample as ``name{label="v",…}`` -> value (labels sorted)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = loopback.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))


def test_a_deployment_moves_the_metrics(server: Server) -> None:
    api = loopback.client(
        base_url=f"{server.url}/api/v1", headers={"X-Api-Key": server.api_key}, timeout=30
    )
    applied = api.post("/config/apply", json={"text": CONFIG})
    assert applied.status_code == 200, applied.text
    before = scrape(server)
    assert before['conveyor_tasks{reason="",state="queued"}'] == 0

    created = api.post("/projects/Api/releases", json={"version": "1.0.0"})
    assert created.status_code == 201, created.text
    queued = api.post(
        "/deployments", json={"project": "Api", "version": "1.0.0", "environment": "Dev"}
    )
    assert queued.status_code == 201, queued.text
    task = queued.json()["task"]
    done = api.get(f"/tasks/{task}/wait", params={"timeout": 30}).json()
    assert done["state"] == "success", done

    # Observed when the task's run ends on the node, just after its end is committed.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(server)
        if after.get('conveyor_deployment_duration_seconds_count{state="success"}', 0) >= 1:
            break
        time.sleep(0.1)
    assert after['conveyor_deployment_duration_seconds_count{state="success"}'] == 1
    assert after['conveyor_step_duration_seconds_count{state="success",type="script"}'] == 2
    assert after['conveyor_deployment_duration_seconds_sum{state="success"}'] > 0
    # Latency by route template, never by raw path.
    route = 'method="POST",route="/api/v1/projects/{project}/releases",status="201"'
    assert after[f"conveyor_http_request_duration_seconds_count{{{route}}}"] == 1
    assert not any("/projects/Api/" in k for k in after)
    wait_route = 'method="GET",route="/api/v1/tasks/{task}/wait",status="200"'
    assert after[f"conveyor_http_request_duration_seconds_count{{{wait_route}}}"] >= 1
    # Read from the database at scrape time: nothing left running, the node's heartbeat fresh.
    assert total(after, "conveyor_tasks{") == 0
    ages = {k: v for k, v in after.items() if k.startswith("conveyor_node_heartbeat_age_seconds")}
    assert len(ages) == 1 and 0 <= next(iter(ages.values())) < 30
    assert after["conveyor_metrics_database_up{}"] == 1
    assert total(after, "conveyor_build_info{") == 1


def test_metrics_need_the_token_when_not_on_a_listed_network(server: Server) -> None:
    anonymous = loopback.get(f"{server.url}/metrics", timeout=10)
    assert anonymous.status_code == 403
    assert "CONVEYOR_METRICS_NETWORKS" in anonymous.json()["message"]
    wrong = loopback.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_health_and_readiness(server: Server) -> None:
    health = loopback.get(f"{server.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = loopback.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["schema"] == ready.json()["expected_schema"]
