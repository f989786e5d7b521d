"""The Octo Pet Shop on machines of its own: `examples/octopetshop/hosts/hosts.py` starts, per
environment, a database host, two service hosts and a web host (real sshd, each in its own
network namespace as root), and writes their targets; the story's first two chapters then run
on them as users run them: the build server releases the four components (each goes to
Development by itself), and a developer ships Deploy All to Test, in order. What a deployment
put on a host is read from that host's folder; the server's own `Local` target gets nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLE, Server, describe
from tests.e2e.test_story import COMPONENTS, EXAMPLES
from tests.sshd import skip_unless_possible

pytestmark = pytest.mark.e2e

HOSTS_SCRIPT = EXAMPLES / "hosts" / "hosts.py"
ENVIRONMENTS = ("Development", "Test")
# What each component leaves on its hosts: (hosts, project folder, a file of the package)
LANDS_ON = {
    "Database": (("db",), "database", "deploy.py"),
    "Shopping Cart Service": (("svc-1", "svc-2"), "shopping-cart-service", "service.py"),
    "Product Service": (("svc-1", "svc-2"), "product-service", "service.py"),
    "Website": (("web",), "website", "index.html"),
}


@pytest.fixture(scope="module")
def machines(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The hosts up, the example and its hosts' targets applied; the hosts' folder."""
    skip_unless_possible()
    folder = tmp_path_factory.mktemp("hosts")
    up = subprocess.run(
        [
            sys.executable,
            str(HOSTS_SCRIPT),
            "up",
            "--dir",
            str(folder),
            "--environments",
            *ENVIRONMENTS,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        key = (folder / "id_ed25519").read_text()
        for config in (EXAMPLE, folder / "targets.yaml"):
            applied = server.cli("apply", "-f", str(config), env={"OCTOPETSHOP_SSH_KEY": key})
            assert applied.returncode == 0, describe(applied)
        yield folder
    finally:
        subprocess.run(
            [sys.executable, str(HOSTS_SCRIPT), "down", "--dir", str(folder)],
            capture_output=True,
            timeout=60,
        )


def _json(server: Server, *args: str) -> object:
    result = server.cli(*args, "--output", "json")
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def _landed(folder: Path, env: str, host: str, project: str) -> Path:
    slug = LANDS_ON[project][1]
    return folder / f"{env.lower()}-{host}" / "conveyor" / "targets" / env.lower() / slug


def test_the_hosts_are_targets_and_healthy(server: Server, machines: Path) -> None:
    checked = server.cli("target", "check")
    assert checked.returncode == 0, describe(checked)
    rows = _json(server, "target", "list", "--environment", "Test")
    assert isinstance(rows, list)
    by_name = {row["name"]: row for row in rows}
    assert {"test-db", "test-svc-1", "test-svc-2", "test-web"} <= set(by_name), rows
    for name in ("test-db", "test-svc-1", "test-svc-2", "test-web"):
        assert by_name[name]["kind"] == "ssh"
        assert by_name[name]["health"] == "healthy", by_name[name]


def test_the_components_and_deploy_all_go_to_the_hosts(
    server: Server, machines: Path, tmp_path: Path
) -> None:
    ops = server.api_key_for("admin")

    def build(project: str) -> None:
        package_id, where = COMPONENTS[project]
        made = _json(
            server,
            "package",
            "pack",
            str(EXAMPLES / where),
            "--id",
            package_id,
            "--version",
            "1.0.0",
            "-o",
            str(tmp_path),
        )
        assert isinstance(made, dict)
        pushed = server.cli("package", "push", str(made["path"]))
        assert pushed.returncode == 0, describe(pushed)
        created = server.cli("release", "create", "--project", project, "--version", "1.0.0")
        assert created.returncode == 0, describe(created)

    with ThreadPoolExecutor(max_workers=len(COMPONENTS)) as pool:
        list(pool.map(build, COMPONENTS))
    rows = _json(server, "deployment", "list", "--environment", "Development")
    assert isinstance(rows, list) and len(rows) == len(COMPONENTS), rows
    for row in rows:
        waited = server.cli("task", "wait", row["task"], "--timeout", "120", api_key=ops)
        assert waited.returncode == 0, (
            describe(waited) + server.cli("task", "log", row["task"]).stdout
        )

    server.cli("release", "create", "--project", "Deploy All", "--version", "1.0.0")
    shipped = server.cli(
        "release",
        "deploy",
        "--project",
        "Deploy All",
        "--version",
        "1.0.0",
        "--to",
        "Test",
        "--wait",
        timeout=300,
    )
    assert shipped.returncode == 0, describe(shipped)
    assert "succeeded" in shipped.stdout.splitlines()[-1], describe(shipped)

    for env in ENVIRONMENTS:
        for project, (hosts, _, a_file) in LANDS_ON.items():
            for host in hosts:
                current = _landed(machines, env, host, project) / "current"
                assert current.is_symlink() and os.readlink(current) == "1.0.0", (env, project)
                assert (current / a_file).is_file(), (env, host, project)
            for other in {"db", "svc-1", "svc-2", "web"} - set(hosts):
                assert not _landed(machines, env, other, project).exists(), (env, other, project)
        # The database host's migrations ran there, into its own database file.
        db = _landed(machines, env, "db", "Database") / f"octopetshop-{env}.sqlite"
        with sqlite3.connect(db) as connection:
            applied = connection.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        assert applied >= 2, (env, applied)
    # The server's own target is disabled while the hosts take its roles: nothing went there.
    assert not (server.data_dir / "targets" / "local").exists()
