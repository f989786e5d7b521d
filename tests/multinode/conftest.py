"""Several real `conveyor server` processes (nodes) on one PostgreSQL database and one shared
data folder, as docs/operations.md tells an administrator to run them.

`admin init` runs once; the first node starts (and migrates), the configuration is applied
through it, then the other nodes start. Each node has its own name, port, log and settings, and
the tests kill (SIGKILL), freeze (SIGSTOP) and continue (SIGCONT) them. Every node is continued
and stopped at the end, also when the test failed. PostgreSQL only: without
CONVEYOR_TEST_POSTGRES_URL the tests skip with a visible notice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import loopback
from tests.conftest import _fresh_pg_database, drop_pg_database_soon
from tests.e2e.conftest import describe, install, read_log, run_conveyor, stop
from tests.e2e.test_crash import Restartable

# Each node's database pool (CONVEYOR_DATABASE_CONNECTIONS): three nodes and their listeners
# take under half of PostgreSQL's max_connections (100), which the rest of the suite shares.
CONNECTIONS = 15
ENDED = ("success", "failed", "canceled", "timed_out")
STOPPED = "the server stopped while this step was running"
ACCESS = re.compile(r"INFO: +[0-9.]+:[0-9]+ - ")


class Node(Restartable):
    """One server process of the cluster: its own name, port, folder (log, cwd) and settings.

    A `Restartable` that does not `admin init`: the cluster did that once for all nodes. Its
    processes are forked from one that imported the server once (tests/e2e/preloaded.py)."""

    preloaded = True

    def __init__(self, folder: Path, env: dict[str, str], api_key: str) -> None:
        # Not super().__init__: that would `admin init` a second installation.
        folder.mkdir(parents=True, exist_ok=True)
        self.tmp = folder
        self.env = env
        self.api_key = api_key
        self.proc = None
        self.url = ""
        self.starts = 0
        self.frozen = False

    @property
    def name(self) -> str:
        return self.env["CONVEYOR_NODE_NAME"]

    @property
    def pid(self) -> int:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        return self.proc.pid

    def freeze(self) -> None:
        """SIGSTOP: the process holds its connections and leases but does nothing at all."""
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT: the frozen process goes on where it stopped, unaware time passed."""
        os.kill(self.pid, signal.SIGCONT)
        self.frozen = False

    def shut_down(self) -> None:
        if self.proc is None:
            return
        if self.frozen and self.proc.poll() is None:
            self.thaw()  # a stopped process never handles the SIGTERM of `stop`
        stop(self.proc)

    def log(self) -> str:
        """What this node logged over all its starts, less the access log of each request."""
        text = "".join(read_log(self.tmp / f"server-{n}.log") for n in range(1, self.starts + 1))
        return "\n".join(line for line in text.splitlines() if not ACCESS.match(line))


class Cluster:
    def __init__(
        self, nodes: Sequence[Node], data_dir: Path, tmp: Path, shared: Mapping[str, str]
    ) -> None:
        self.nodes = list(nodes)
        self.data_dir = data_dir
        self.tmp = tmp
        self.shared = dict(shared)

    def add(self, name: str, **settings: object) -> Node:
        """Start one more node, once the test has steered work onto the others."""
        node = Node(self.tmp / name, node_env(self.shared, name, **settings), self.nodes[0].api_key)
        self.nodes.append(node)
        node.start()
        return node

    def __getitem__(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def any(self) -> Node:
        """A node that answers (not killed, not frozen)."""
        return next(
            n for n in self.nodes if n.proc is not None and n.proc.poll() is None and not n.frozen
        )

    def cli(self, *args: str, node: Node | None = None) -> Any:
        via = node or self.any
        env = {**via.env, "CONVEYOR_SERVER": via.url, "CONVEYOR_API_KEY": via.api_key}
        return run_conveyor(args, env, cwd=self.tmp)

    def logs(self) -> str:
        """Every node's log, to explain a failed check."""
        return "\n".join(f"===== {n.name}\n{n.log()[-6000:]}" for n in self.nodes)

    def running_on(self) -> dict[str, str]:
        """Which node runs which task now (GET /api/v1/nodes): task id -> node name."""
        rows = self.any.api("GET", "/nodes")
        return {task: row["name"] for row in rows for task in row.get("tasks", [])}

    def marks(self, environment: str, project: str) -> list[str]:
        """Lines the project's scripts appended to marks.txt in their folder on target Box."""
        path = self.data_dir / "targets" / "box" / environment / project / "marks.txt"
        return path.read_text().splitlines() if path.exists() else []

    def events(self, *categories: str) -> list[dict[str, Any]]:
        """Audit events of these categories, oldest first (the streamed JSON Lines export)."""
        query = "&".join(f"category={c}" for c in categories)
        node = self.any
        response = loopback.get(
            f"{node.url}/api/v1/events/export?format=jsonl&{query}",
            headers={"X-Api-Key": node.api_key},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return [json.loads(line) for line in response.text.splitlines() if line]

    def verify_audit(self) -> str:
        """`conveyor audit verify`, which must find the hash chain intact."""
        result = self.cli("audit", "verify")
        assert result.returncode == 0, describe(result)
        return str(result.stdout)


def node_env(shared: Mapping[str, str], name: str, **settings: object) -> dict[str, str]:
    env = {**shared, "CONVEYOR_NODE_NAME": name, "CONVEYOR_DATABASE_CONNECTIONS": str(CONNECTIONS)}
    env.update({f"CONVEYOR_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextmanager
def cluster(
    template: str, tmp: Path, config: str, nodes: Mapping[str, Mapping[str, object]]
) -> Iterator[Cluster]:
    """Nodes named as the keys of ``nodes``, each with its CONVEYOR_* settings (lowercase names,
    e.g. ``task_slots=0``); ``config`` applied through the first one."""
    data_dir = tmp / "data"
    shared = {
        "CONVEYOR_DATA_DIR": str(data_dir),
        "CONVEYOR_DATABASE_URL": _fresh_pg_database(template),
    }
    api_key = install(data_dir, shared["CONVEYOR_DATABASE_URL"])["api_key"]
    members = [
        Node(tmp / name, node_env(shared, name, **settings), api_key)
        for name, settings in nodes.items()
    ]
    made = Cluster(members, data_dir, tmp, shared)
    try:
        first, *others = members
        first.start()  # it migrates the database: the others start once it answers
        (tmp / "config.yaml").write_text(config)
        applied = made.cli("apply", "-f", str(tmp / "config.yaml"), node=first)
        assert applied.returncode == 0, describe(applied)
        start_all(others)
        yield made
    finally:
        for node in made.nodes:
            node.shut_down()
        drop_pg_database_soon(shared["CONVEYOR_DATABASE_URL"])


def start_all(nodes: Sequence[Node]) -> None:
    """Start nodes side by side (each start is mostly the interpreter importing)."""
    if not nodes:
        return
    with ThreadPoolExecutor(len(nodes)) as pool:
        for started in [pool.submit(n.start) for n in nodes]:
            started.result()


def until(check: Callable[[], Any], timeout: float, what: str, explain: Callable[[], str]) -> Any:
    """Poll ``check`` until it returns something true; fail with ``explain()`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {timeout:.0f} s\n{explain()}")


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(p) - 1]


@pytest.fixture
def pg_template(request: pytest.FixtureRequest) -> str:
    """The migrated template database (skips visibly without CONVEYOR_TEST_POSTGRES_URL)."""
    name: str = request.getfixturevalue("pg_database")
    return name
