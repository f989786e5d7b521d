"""A script never runs as the server (issue 10, item 1), on SQLite and PostgreSQL, with the real
engine running real scripts under bubblewrap.

A developer who may edit a process adds to a script everything that reads or writes the server's
secrets: the master key by relative and absolute path, the SQLite file, a listing of the data
folder, the server's environment through /proc, a write into the database, into another
project's target folder and into another run's work folder. Each must fail, no secret may reach
the task log, and the legitimate part of the deployment (a package extracted, its post-deploy
script seeing its files) must still work.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.domain.documents import slugify
from conveyor.engine.node import Node
from conveyor.services import packages, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, bootstrap
from conveyor.services.users import initialise
from conveyor.settings import Settings
from conveyor.store.db import sqlite_file
from tests.conftest import require_sandbox
from tests.e2e.conftest import describe, run_conveyor, stop
from tests.e2e.test_crash import Restartable
from tests.integration.test_engine import deploy, finished, log_text

VICTIM_SECRET = "victim-dev-secret-7d1e0c"
PROD_SECRET = "prod-only-secret-4b9a2f"
# Set in the server's own environment: a script must never see it.
CANARY = "server-environment-canary-93c5"

CONFIG = f"""
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Prod]
project_groups:
  - name: Apps
targets:
  - name: Box
    environments: [Dev, Prod]
    roles: [app]
projects:
  - name: Victim
    group: Apps
    lifecycle: Anywhere
    variables:
      - name: DevSecret
        value: {VICTIM_SECRET}
        sensitive: true
      - name: ProdSecret
        value: {PROD_SECRET}
        sensitive: true
        environments: [Prod]
    process:
      steps:
        - name: Leave a file
          type: script
          target_roles: [app]
          script: echo victim-data > victim.txt
        - name: Slow
          type: script
          script: |
            # holds #{{DevSecret}}
            echo victim-slow-started
            sleep 60
  - name: Attacker
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Legit
          type: package
          package: App
          target_roles: [app]
          post_deploy_script: |
            echo "package says: $(cat hello.txt)"
            echo "installed in $(pwd)"
            test "$(pwd)" = "#{{Conveyor.Action.Package.InstallationDirectoryPath}}" && echo same
        - name: Steal
          type: script
          target_roles: [app]
          script: |
ATTACK
"""


def attack(data: Path, db: Path, victim_work: Path, server_pid: int) -> tuple[str, list[str]]:
    """Each attempt prints ``LEAK <name>`` if it worked and ``blocked <name>`` if it failed."""
    victim_target = data / "targets" / "box" / "dev" / "victim"
    attempts = {
        "master-key-relative": "cat ../../../../master.key",
        "master-key-relative-deeper": "cat ../../../../../master.key",
        "master-key-absolute": f"cat {data}/master.key",
        "sqlite-read": (
            f"python3 -c \"import sqlite3; c = sqlite3.connect('file:{db}?mode=ro', uri=True); "
            "print(c.execute('select * from users').fetchall())\""
        ),
        "sqlite-write": (
            f"python3 -c \"import sqlite3; c = sqlite3.connect('{db}'); "
            "c.execute('create table pwned (x)'); c.commit()\""
        ),
        "database-append": f"echo pwned >> {db}",
        "data-folder-list": f"ls -A {data} | grep -q .",
        "proc-server-root": f"ls /proc/{server_pid}/root{data} | grep -q master",
        "other-target-write": f"echo pwned > {victim_target}/pwned.txt",
        "other-target-read": f"cat {victim_target}/victim.txt",
        "other-work-read": f"cat {victim_work}/script.sh",
        "other-work-write": f"echo pwned > {victim_work}/pwned.txt",
        "work-folders-list": f"ls -A {data}/work | grep -q .",
    }
    lines = ["echo uid=$(id -u)"]
    for name, command in attempts.items():
        lines.append(f"if {command}; then echo; echo LEAK {name}; else echo blocked {name}; fi")
    return "\n".join(" " * 12 + line for line in lines), list(attempts)


def app_package(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hello from the package\n")
    return path


async def chunks(path: Path) -> AsyncIterator[bytes]:
    yield path.read_bytes()


@pytest.fixture(autouse=True)
def _needs_sandbox() -> None:
    require_sandbox()


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=4, name=f"sandbox-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def script_files(data: Path) -> list[Path]:
    return sorted((data / "work").rglob("script.*"))


async def until(check: object, timeout: float = 30) -> None:
    for _ in range(int(timeout * 20)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


async def test_a_developers_script_reaches_nothing_of_the_server(
    services: Services,
    admin: Caller,
    engine: Node,
    tmp_path: Path,
) -> None:
    data = Path(services.settings.data_dir).resolve()
    # The SQLite file (the fixture keeps it beside the data folder); on PostgreSQL, where it
    # would be by default.
    database = sqlite_file(services.settings.resolved_database_url) or data / "conveyor.db"
    node_work = data / "work" / slugify(engine.name)
    placeholder = CONFIG.replace("ATTACK", " " * 12 + "true")
    await apply_text(services, admin, placeholder)

    # Another project's deployment is running: its script (with its secret) is on disk.
    victim = await deploy(services, admin, "Victim", "Dev")
    await until(lambda: any(f.parent.name.startswith("1-") for f in script_files(data)))
    [victim_script] = script_files(data)
    victim_work = victim_script.parent
    # The script file and its folder are private to that run, owned by the sandbox user.
    assert stat.S_IMODE(victim_script.stat().st_mode) == 0o600
    assert stat.S_IMODE(victim_work.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert victim_script.stat().st_uid == victim_work.stat().st_uid != 0
    assert VICTIM_SECRET in victim_script.read_text()
    assert victim_work.is_relative_to(node_work)

    body, names = attack(data, database, victim_work, os.getpid())
    await apply_text(services, admin, CONFIG.replace("ATTACK", body))
    await packages.push_package(
        services, admin, chunks(app_package(tmp_path / "App.1.0.0.zip")), file_name="App.1.0.0.zip"
    )
    task = await deploy(services, admin, "Attacker", "Dev")
    result = await finished(services, admin, task, waiting=False)
    text = await log_text(services, admin, task)
    assert result["state"] == "success", text

    # The legitimate part works: the package is extracted and its script sees its files.
    assert "package says: hello from the package" in text
    folder = data / "targets" / "box" / "dev" / "attacker" / "1.0.0"
    assert "installed in /conveyor/target/1.0.0" in text and "same" in text
    assert (folder / "hello.txt").read_text() == "hello from the package\n"
    # Every attempt on the server failed, and nothing secret reached the log.
    assert "LEAK" not in text, text
    for name in names:
        assert f"blocked {name}" in text, name
    key = (data / "master.key").read_text().strip()
    for secret in (key, VICTIM_SECRET, PROD_SECRET):
        assert secret not in text, secret
    if os.geteuid() == 0:
        assert "uid=65534" in text  # dropped to the unprivileged sandbox user
    victim_target = data / "targets" / "box" / "dev" / "victim"
    assert (victim_target / "victim.txt").read_text() == "victim-data\n"
    assert not (victim_target / "pwned.txt").exists()
    assert not (victim_work / "pwned.txt").exists()
    if services.is_sqlite:
        assert b"pwned" not in database.read_bytes()

    await tasks.cancel_task(services, admin, victim)
    assert (await finished(services, admin, victim, waiting=False))["state"] == "canceled"
    # After the runs, nothing of them is left on disk; the secrets' files are private.
    assert script_files(data) == []
    assert not victim_work.exists()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "master.key").stat().st_mode) == 0o600
    if services.is_sqlite:
        for name in ("", "-wal", "-shm"):
            part = database.with_name(database.name + name)
            if part.exists() or not name:
                assert stat.S_IMODE(part.stat().st_mode) == 0o600, part


@pytest.mark.parametrize("allowed", [False, True])
async def test_scripts_are_refused_without_a_usable_sandbox_unless_allowed(
    settings: Settings, admin: Caller, allowed: bool
) -> None:
    """An unusable sandbox (here: bubblewrap missing) stops scripts with a message saying what
    to do, unless an administrator allows scripts unsandboxed."""
    broken = settings.model_copy(
        update={"sandbox_bwrap": "/nonexistent/bwrap", "allow_unsandboxed_scripts": allowed}
    )
    services = bootstrap(broken)
    await initialise(services)
    node = Node(services, slots=2, name=f"broken-{os.getpid()}")
    await node.start()
    try:
        steps = """          - name: Run
            type: script
            script: echo the-script-ran
"""
        config = f"""
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
  - name: Plain
    group: Apps
    lifecycle: Anywhere
    process:
        steps:
{steps}"""
        await apply_text(services, admin, config)
        task = await deploy(services, admin, "Plain", "Dev")
        result = await finished(services, admin, task, waiting=False)
        text = await log_text(services, admin, task)
    finally:
        await node.stop()
        await services.close()
    if allowed:
        assert result["state"] == "success", text
        assert "the-script-ran" in text
        return
    assert result["state"] == "failed"
    reason = result["steps"][0]["reason"]
    assert "the-script-ran" not in text
    assert "/nonexistent/bwrap does not exist" in reason
    assert "apt-get install bubblewrap" in reason
    assert "CONVEYOR_ALLOW_UNSANDBOXED_SCRIPTS=true" in reason


def test_the_sandbox_line_reads_back(tmp_path: Path) -> None:
    """The start-up line names the mode in force (what `conveyor server` prints)."""
    from conveyor.engine.sandbox import status

    good = status(Settings(data_dir=tmp_path))
    assert good.usable and "bubblewrap sandbox" in good.describe()
    missing = status(Settings(data_dir=tmp_path, sandbox_bwrap="/nonexistent/bwrap"))
    assert not missing.usable and missing.describe().startswith("Scripts on the server are refused")
    waived = status(
        Settings(
            data_dir=tmp_path, sandbox_bwrap="/nonexistent/bwrap", allow_unsandboxed_scripts=True
        )
    )
    assert waived.describe().startswith("WARNING: scripts on the server run WITHOUT a sandbox")


SNOOP_AND_CRASH = f"""
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
  - name: Snoop
    group: Apps
    lifecycle: Dev only
    process:
      steps:
        - name: Look around
          type: script
          script: |
SNOOP
  - name: Crash
    group: Apps
    lifecycle: Dev only
    variables:
      - name: Token
        value: {VICTIM_SECRET}
        sensitive: true
    process:
      steps:
        - name: Long
          type: script
          script: |
            # uses #{{Token}}
            echo started-long
            sleep 60
"""


def snoop(data: Path, server_pid: int) -> str:
    attempts = {
        "proc-1-environ": f"grep -a {CANARY} /proc/1/environ",
        "proc-all-environ": f"cat /proc/[0-9]*/environ 2>/dev/null | grep -a {CANARY}",
        "proc-server-environ": f"grep -a {CANARY} /proc/{server_pid}/environ",
        "proc-server-key": f"cat /proc/{server_pid}/root{data}/master.key",
        "own-environment": f"env | grep -a -e {CANARY} -e CONVEYOR_DATA_DIR -e HOME=/root",
        "data-folder": f"ls {data}",
    }
    lines = [
        f"if {c}; then echo; echo LEAK {n}; else echo blocked {n}; fi" for n, c in attempts.items()
    ]
    return "\n".join(" " * 12 + line for line in lines)


def script_left(data: Path) -> list[Path]:
    return sorted((data / "work").rglob("script.*")) if (data / "work").exists() else []


def test_the_real_server_hides_itself_and_cleans_up_after_kill_9(
    database_url: str, tmp_path: Path
) -> None:
    """`conveyor server` with a secret in its environment: a script finds neither it nor the
    server through /proc; a kill -9 mid-script leaves a private script file that the restarted
    server removes; the start-up line names the mode."""
    server = Restartable(tmp_path, database_url)
    server.env["SERVER_SECRET_CANARY"] = CANARY
    data = (tmp_path / "data").resolve()
    try:
        server.start()
        assert server.proc is not None
        config = tmp_path / "snoop.yaml"
        config.write_text(SNOOP_AND_CRASH.replace("SNOOP", snoop(data, server.proc.pid)))
        remote = {**server.env, "CONVEYOR_SERVER": server.url, "CONVEYOR_API_KEY": server.api_key}
        applied = run_conveyor(("apply", "-f", str(config)), remote, cwd=tmp_path)
        assert applied.returncode == 0, describe(applied)
        first_log = (tmp_path / "server-1.log").read_text()
        assert "Scripts on the server run in the bubblewrap sandbox" in first_log, first_log

        looked = _deploy_now(server, "Snoop")
        done = server.until(looked, lambda t: t["state"] in ("success", "failed"))
        text = "\n".join(
            line["line"] for line in server.api("GET", f"/tasks/{looked}/log")["lines"]
        )
        assert done["state"] == "success", text
        assert "LEAK" not in text and CANARY not in text, text
        assert text.count("blocked ") == 6, text

        crash = _deploy_now(server, "Crash")
        server.until(crash, lambda t: t["steps"][0]["state"] == "running")
        deadline = time.monotonic() + 10
        while not script_left(data) and time.monotonic() < deadline:
            time.sleep(0.05)
        [script] = script_left(data)
        assert stat.S_IMODE(script.stat().st_mode) == 0o600
        assert stat.S_IMODE(script.parent.stat().st_mode) == 0o700
        assert VICTIM_SECRET in script.read_text()
        server.kill()
        assert script.exists()  # what a crash leaves behind ...
        server.start()
        result = server.until(crash, lambda t: t["state"] in ("failed", "success"))
        assert result["state"] == "failed"
        assert script_left(data) == []  # ... is gone once the node is back
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "master.key").stat().st_mode) == 0o600
    finally:
        if server.proc is not None:
            stop(server.proc)


def _deploy_now(server: Restartable, project: str) -> str:
    server.api("POST", f"/projects/{project}/releases", json={"version": "1.0.0"})
    queued = server.api(
        "POST", "/deployments", json={"project": project, "version": "1.0.0", "environment": "Dev"}
    )
    task: str = queued["task"]
    return task


async def test_links_a_script_leaves_never_send_the_server_elsewhere(
    services: Services, admin: Caller, engine: Node, tmp_path: Path
) -> None:
    """The target folder is the script's to write: links it plants where the next package
    version, the ``current`` link or their staging go must not make the server (root) write,
    chmod or chown the data folder or the master key."""
    data = Path(services.settings.data_dir).resolve()
    links = " ; ".join(
        [
            f"ln -s {data} 1.0.0",
            f"ln -s {data}/master.key current",
            f"ln -s {data} .current.incoming",
            f"ln -s {data} .1.0.0.incoming-1",
        ]
    )
    config = CONFIG.replace("ATTACK", " " * 12 + "true")
    await packages.push_package(
        services, admin, chunks(app_package(tmp_path / "App.1.0.0.zip")), file_name="App.1.0.0.zip"
    )
    # The links go into the Attacker's own target folder: its first step plants them.
    attacker = config.replace(
        "        - name: Legit\n",
        f"        - name: Plant\n          type: script\n          target_roles: [app]\n"
        f"          script: {links}\n        - name: Legit\n",
    )
    await apply_text(services, admin, attacker)
    key_before = (data / "master.key").stat()
    task = await deploy(services, admin, "Attacker", "Dev")
    result = await finished(services, admin, task, waiting=False)
    text = await log_text(services, admin, task)
    assert result["state"] == "success", text
    base = data / "targets" / "box" / "dev" / "attacker"
    assert (base / "1.0.0").is_dir() and not (base / "1.0.0").is_symlink()
    assert (base / "1.0.0" / "hello.txt").read_text() == "hello from the package\n"
    assert os.readlink(base / "current") == "1.0.0"
    key = (data / "master.key").stat()
    assert (key.st_uid, key.st_gid, stat.S_IMODE(key.st_mode)) == (
        key_before.st_uid,
        key_before.st_gid,
        0o600,
    )
    assert data.stat().st_uid == os.geteuid() and stat.S_IMODE(data.stat().st_mode) == 0o700
