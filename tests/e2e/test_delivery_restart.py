"""A notification pending when the server is killed (SIGKILL) is sent after the restart, once;
and once acknowledged it is never sent again. A real server process, a real HTTP receiver, the
real CLI; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import describe, run_conveyor, stop
from tests.e2e.test_crash import Restartable
from tests.receivers import Receiver, free_port, until

pytestmark = pytest.mark.e2e

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Dev only
    phases:
      - name: Dev
        environments: [Dev]
project_groups:
  - name: Apps
projects:
  - name: Shop
    group: Apps
    lifecycle: Dev only
    process:
      steps:
        - name: Work
          type: script
          script: echo work
subscriptions:
  - name: Releases to chat
    webhook:
      url: http://127.0.0.1:{port}/hook
      secret: ${{env:HOOK_SECRET}}
    categories: [ReleaseCreated]
"""


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Restartable]:
    server = Restartable(tmp_path, database_url)
    server.preloaded = True  # killed and started again: from a process that imported it once
    # Retry quickly, and for long enough that the delivery is still pending at the kill.
    server.env["CONVEYOR_DELIVERY_BACKOFF_SECONDS"] = "0.2"
    server.env["CONVEYOR_DELIVERY_ATTEMPTS"] = "100"
    # The receiver listens on 127.0.0.1: an administrator allows webhooks to reach it.
    server.env["CONVEYOR_ALLOW_PRIVATE_WEBHOOKS"] = "true"
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            stop(server.proc)


def deliveries(server: Restartable) -> list[dict[str, Any]]:
    """`conveyor delivery list --output json`, as an operator would run it."""
    env = {**server.env, "CONVEYOR_SERVER": server.url, "CONVEYOR_API_KEY": server.api_key}
    result = run_conveyor(("delivery", "list", "--output", "json"), env, cwd=server.tmp)
    assert result.returncode == 0, describe(result)
    items: list[dict[str, Any]] = json.loads(result.stdout)
    return items


def test_a_pending_delivery_is_sent_after_a_sigkill_and_never_twice(
    server: Restartable, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet: every attempt fails
    config = tmp_path / "notify.yaml"
    config.write_text(CONFIG.format(port=port))
    env = {**server.env, "CONVEYOR_SERVER": server.url, "CONVEYOR_API_KEY": server.api_key}
    applied = run_conveyor(
        ("apply", "-f", str(config)), {**env, "HOOK_SECRET": "restart-s3cret"}, cwd=tmp_path
    )
    assert applied.returncode == 0, describe(applied)
    server.api("POST", "/projects/Shop/releases", json={"version": "1.0.0"})
    [pending] = until(
        lambda: [d for d in deliveries(server) if d["attempts"] >= 1], 30, "a failed attempt"
    )
    assert pending["state"] == "pending" and "POST" in pending["last_error"]

    server.kill()
    receiver = Receiver(port=port).start()
    try:
        server.start()
        [sent] = until(
            lambda: [d for d in deliveries(server) if d["state"] == "succeeded"], 30, "the send"
        )
        assert sent["id"] == pending["id"] and sent["subscription"] == "Releases to chat"
        assert len(receiver.requests) == 1
        [request] = receiver.requests
        assert request.signed_by("restart-s3cret")
        assert request.json()["event"]["category"] == "ReleaseCreated"
        assert request.headers["x-conveyor-delivery"] == sent["id"]

        # Acknowledged: another kill and restart sends nothing again.
        server.kill()
        server.start()
        time.sleep(2)
        assert len(receiver.requests) == 1
        assert [d["state"] for d in deliveries(server)] == ["succeeded"]
    finally:
        receiver.stop()


def test_a_delivery_caught_mid_send_is_sent_again_after_the_restart(
    server: Restartable, tmp_path: Path
) -> None:
    # The first request is never answered: the server is killed while it waits.
    receiver = Receiver(delays=[60]).start()
    try:
        config = tmp_path / "notify.yaml"
        config.write_text(CONFIG.format(port=receiver.port))
        env = {**server.env, "CONVEYOR_SERVER": server.url, "CONVEYOR_API_KEY": server.api_key}
        applied = run_conveyor(
            ("apply", "-f", str(config)), {**env, "HOOK_SECRET": "s3cret"}, cwd=tmp_path
        )
        assert applied.returncode == 0, describe(applied)
        server.api("POST", "/projects/Shop/releases", json={"version": "1.0.0"})
        until(lambda: receiver.requests, 30, "the first request")
        server.kill()
        server.start()
        [sent] = until(
            lambda: [d for d in deliveries(server) if d["state"] == "succeeded"], 30, "the send"
        )
        # Not acknowledged the first time, so sent again: at least once until acknowledged.
        assert sent["attempts"] == 2 and len(receiver.requests) == 2
        assert receiver.requests[0].body == receiver.requests[1].body
    finally:
        receiver.stop()
