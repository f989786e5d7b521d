"""`conveyor node list` against a real server process, on SQLite and PostgreSQL: the server's
node is listed with its slots, and its heartbeat moves while it runs."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime

import pytest

from conveyor.settings import Settings
from tests.e2e.conftest import Server, describe

pytestmark = pytest.mark.e2e


def _nodes(server: Server) -> list[dict[str, object]]:
    result = server.ok("node", "list", "--output", "json")
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_node_list_shows_the_running_server_and_its_heartbeat(server: Server) -> None:
    expected = socket.gethostname()  # the server runs without CONVEYOR_NODE_NAME
    (node,) = _nodes(server)
    assert {"name", "heartbeat", "slots", "running"} <= set(node)
    assert node["name"] == expected
    assert node["slots"] == Settings.model_fields["task_slots"].default
    assert node["running"] == 0 and node["alive"] is True
    first = datetime.fromisoformat(str(node["heartbeat"]))
    assert abs((datetime.now(UTC) - first).total_seconds()) < 60

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        (again,) = _nodes(server)
        if datetime.fromisoformat(str(again["heartbeat"])) > first:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the node's heartbeat did not move in 15 s")

    shown = server.ok("node", "list")
    assert expected in shown.stdout and "alive" in shown.stdout


def test_node_list_needs_administer_system(server: Server) -> None:
    added = server.cli("admin", "user", "add", "nodewatcher")
    assert added.returncode == 0, describe(added)
    key = server.api_key_for("nodewatcher")

    refused = server.cli("node", "list", api_key=key)

    assert refused.returncode == 3, describe(refused)
    assert "AdministerSystem" in refused.stderr
