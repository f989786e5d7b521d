"""Polling agents for real: a `conveyor server` process and `conveyor agent run` processes on
this machine, talking HTTP. An agent enrols with a single-use token, runs the script and package
steps of real deployments (output, output variables, exit codes, a package downloaded once),
takes only its own target's work, is refused once revoked, kills a canceled script's whole
process group, and keeps working across a server restart and its own."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import loopback
from tests.e2e.conftest import (
    CONVEYOR,
    clean_env,
    describe,
    free_port,
    read_log,
    run_conveyor,
    stop,
)
from tests.e2e.test_crash import Restartable

pytestmark = pytest.mark.e2e

OFFLINE_SECONDS = 4

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
targets:
  - name: Web
    kind: agent
    environments: [Dev]
    roles: [web]
  - name: Db
    kind: agent
    environments: [Dev]
    roles: [db]
  - name: Builder
    kind: agent
    pool: builds
projects:
  - name: Shop
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Hello
          type: script
          target_roles: [web]
          script: |
            echo "hello from $(basename "$(pwd)")"
            echo "a warning" >&2
            echo "##conveyor[setVariable name='Colour' value='teal']"
        - name: Install
          type: package
          package: Shop
          target_roles: [web]
          post_deploy_script: |
            echo "version $(cat version.txt) colour #{Conveyor.Action[Hello].Output.Colour}"
  - name: Failing
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Exit
          type: script
          target_roles: [web]
          script: |
            echo "about to fail"
            exit 3
  - name: Long
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Sleep
          type: script
          target_roles: [web]
          script: |
            sleep 300 &
            echo $! > child.pid
            echo "child started"
            wait
  - name: Database
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Migrate
          type: script
          target_roles: [db]
          script: echo migrating
  - name: Checks
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Lint
          type: script
          worker_pool: builds
          script: |
            echo "lint on #{Conveyor.Target.Name} in $(pwd)"
"""


class AgentServer(Restartable):
    """A server that comes back on the same address, as a real one would after a restart."""

    preloaded = True  # started again by the tests: from a process that imported the server once

    def __init__(self, tmp: Path, database_url: str | None) -> None:
        super().__init__(tmp, database_url)
        self.port = free_port()
        # Health is what the agents' polls say; no periodic check marks a target meanwhile.
        self.env["CONVEYOR_TARGET_CHECK_SECONDS"] = "0"
        # An agent unheard of for this long is gone (a test waits that long once).
        self.env["CONVEYOR_AGENT_OFFLINE_SECONDS"] = str(OFFLINE_SECONDS)

    def start(self) -> None:
        self.start_on(self.port)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "CONVEYOR_SERVER": self.url, "CONVEYOR_API_KEY": self.api_key}
        return run_conveyor(args, env, cwd=self.tmp)

    def cli_in_process(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The same command run by the CLI's code in this process: where only its answer is at
        stake, without an interpreter's start-up per command."""
        from typer.testing import CliRunner

        from conveyor.cli.main import app

        env: dict[str, str | None] = {
            "CONVEYOR_DATABASE_URL": None,
            **self.env,
            "CONVEYOR_SERVER": self.url,
            "CONVEYOR_API_KEY": self.api_key,
        }
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
        return subprocess.CompletedProcess(
            ["conveyor", *args], result.exit_code, result.stdout, result.stderr
        )

    def deploy(self, project: str, version: str) -> str:
        queued = self.api(
            "POST",
            "/deployments",
            json={"project": project, "version": version, "environment": "Dev"},
        )
        task: str = queued["task"]
        return task

    def finished(self, task: str, timeout: float = 30) -> Any:
        return self.until(task, lambda t: t["state"] in ("success", "failed", "canceled"), timeout)

    def online(self, target: str, timeout: float = 20) -> None:
        """Until an agent of ``target`` has polled lately (after a restart of either)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(a["target"] == target and a["online"] for a in self.api("GET", "/agents")):
                return
            time.sleep(0.1)
        raise AssertionError(f"no agent of {target} came back")

    def log(self, task: str) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = self.api("GET", f"/tasks/{task}/log?limit=5000")["lines"]
        return lines


class AgentProcess:
    """`conveyor agent run` in its own work folder, its output in a log file."""

    def __init__(self, server: AgentServer, work_dir: Path) -> None:
        self.server = server
        self.work_dir = work_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.work_dir.parent / f"{self.work_dir.name}-{self.starts}.log"

    def start(self, token: str | None = None) -> None:
        self.starts += 1
        args = [str(CONVEYOR), "agent", "run", "--server", self.server.url]
        args += ["--work-dir", str(self.work_dir)]
        if token:
            args += ["--token", token]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, env=clean_env({}), stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return read_log(self.log)

    def wait_polling(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"the agent exited with {self.proc.returncode}:\n{self.output()}")
            if "polling" in self.output():
                return
            time.sleep(0.1)
        pytest.fail(f"the agent never started polling:\n{self.output()}")

    def exited(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def package_zip(version: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("version.txt", version)
        archive.writestr("app/index.html", f"<h1>Shop {version}</h1>")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(
    e2e_database: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentServer]:
    tmp = tmp_path_factory.mktemp("agents")
    running = AgentServer(tmp, e2e_database)
    try:
        running.start()
        (tmp / "config.yaml").write_text(CONFIG)
        applied = running.cli_in_process("apply", "-f", str(tmp / "config.yaml"))
        assert applied.returncode == 0, describe(applied)
        for version in ("1.0.0", "1.1.0"):
            response = loopback.post(
                f"{running.url}/api/v1/packages",
                headers={"X-Api-Key": running.api_key},
                files={"file": (f"Shop.{version}.zip", package_zip(version))},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            running.api(
                "POST",
                "/projects/Shop/releases",
                json={"version": version, "packages": {"Shop": version}},
            )
        for project in ("Failing", "Long", "Database", "Checks"):
            running.api("POST", f"/projects/{project}/releases", json={"version": "1.0.0"})
        yield running
    finally:
        if running.proc is not None:
            stop(running.proc)


def new_token(server: AgentServer, target: str, *extra: str, real: bool = False) -> str:
    args = ("agent", "token", "create", "--target", target, "--output", "json", *extra)
    made = server.cli(*args) if real else server.cli_in_process(*args)
    assert made.returncode == 0, describe(made)
    answer = json.loads(made.stdout)
    assert set(answer) == {"token", "expires"}
    token: str = answer["token"]
    return token


@pytest.fixture(scope="module")
def web_agent(server: AgentServer) -> Iterator[AgentProcess]:
    agent = AgentProcess(server, server.tmp / "web-agent")
    agent.start(new_token(server, "Web", real=True))
    try:
        agent.wait_polling()
        yield agent
    finally:
        agent.stop()


def lines_of(server: AgentServer, task: str) -> list[str]:
    return [line["line"] for line in server.log(task)]


def test_an_agent_runs_script_and_package_steps_and_a_redeploy_downloads_nothing(
    server: AgentServer, web_agent: AgentProcess
) -> None:
    task = server.deploy("Shop", "1.0.0")
    result = server.finished(task)
    log = server.log(task)
    text = [line["line"] for line in log]
    assert result["state"] == "success", text
    hello = next(line for line in log if line["line"].startswith("hello from "))
    # Ran in the project's folder on the agent's machine, its lines named after the target.
    assert hello["line"] == "hello from shop" and hello["target"] == "Web"
    warning = next(line for line in log if line["line"] == "a warning")
    assert warning["level"] == "warn"
    assert "Output variable Colour set" in text
    assert "version 1.0.0 colour teal" in text  # the package's file, the output variable
    assert any(line.startswith("Downloaded shop.1.0.0.zip") for line in text), text

    project = web_agent.work_dir / "targets" / "dev" / "shop"
    assert (project / "current").resolve() == (project / "1.0.0").resolve()
    assert (project / "1.0.0" / "app" / "index.html").read_text() == "<h1>Shop 1.0.0</h1>"
    held = web_agent.work_dir / "packages" / "shop.1.0.0.zip"
    before = held.stat()
    assert before.st_mode & 0o777 == 0o600
    extracted = (project / "1.0.0").stat().st_ino

    again = server.deploy("Shop", "1.0.0")
    assert server.finished(again)["state"] == "success"
    text = lines_of(server, again)
    assert "shop.1.0.0.zip is here already (same sha256): nothing to download" in text
    assert "Shop 1.0.0 is extracted here already: switched to it" in text
    assert not any(line.startswith("Downloaded") for line in text)
    after = held.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    newer = server.deploy("Shop", "1.1.0")
    assert server.finished(newer)["state"] == "success"
    assert (project / "current").resolve() == (project / "1.1.0").resolve()

    # A rollback: the kept version's folder is used as it is, the link switches back.
    back = server.deploy("Shop", "1.0.0")
    assert server.finished(back)["state"] == "success"
    assert "Shop 1.0.0 is extracted here already: switched to it" in lines_of(server, back)
    assert (project / "current").resolve() == (project / "1.0.0").resolve()
    assert (project / "1.0.0").stat().st_ino == extracted


def test_a_script_failing_on_the_agent_fails_the_step_with_its_exit_code(
    server: AgentServer, web_agent: AgentProcess
) -> None:
    task = server.deploy("Failing", "1.0.0")
    result = server.finished(task)
    assert result["state"] == "failed"
    text = " ".join(lines_of(server, task))
    assert "about to fail" in text
    assert "exited with code 3" in text


def test_an_agent_never_takes_another_targets_job(
    server: AgentServer, web_agent: AgentProcess
) -> None:
    """Db has no agent: its job waits for none, and the step says why instead of hanging."""
    task = server.deploy("Database", "1.0.0")
    result = server.finished(task)
    text = " ".join(lines_of(server, task))
    assert result["state"] == "failed"
    assert "migrating" not in text
    assert "no agent has enrolled for target Db" in text


def test_cancel_kills_the_scripts_whole_process_group_on_the_agent(
    server: AgentServer, web_agent: AgentProcess
) -> None:
    pid_file = web_agent.work_dir / "targets" / "dev" / "long" / "child.pid"
    pid_file.unlink(missing_ok=True)
    task = server.deploy("Long", "1.0.0")
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, lines_of(server, task)
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(child, 0)  # the background `sleep 300` runs
    server.api("POST", f"/tasks/{task}/cancel")
    assert server.finished(task)["state"] == "canceled"
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, f"the script's child {child} outlived the cancel"
        time.sleep(0.1)


def test_a_step_fails_with_a_reason_when_its_agent_stops_answering(
    server: AgentServer, web_agent: AgentProcess
) -> None:
    """A frozen agent (a machine gone, a network cut) fails the step after
    CONVEYOR_AGENT_OFFLINE_SECONDS; back again, it stops what it was running."""
    pid_file = web_agent.work_dir / "targets" / "dev" / "long" / "child.pid"
    pid_file.unlink(missing_ok=True)
    task = server.deploy("Long", "1.0.0")
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, lines_of(server, task)
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert web_agent.proc is not None
    web_agent.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = server.finished(task, timeout=OFFLINE_SECONDS + 15)
        waited = time.monotonic() - started
    finally:
        web_agent.proc.send_signal(signal.SIGCONT)
    assert result["state"] == "failed"
    assert OFFLINE_SECONDS - 1 < waited < OFFLINE_SECONDS + 10
    assert "the agent of target Web stopped answering" in " ".join(lines_of(server, task))
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, f"the script's child {child} outlived its step"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but its parent's wait.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_the_agent_survives_a_server_restart_and_its_own(
    server: AgentServer, web_agent: AgentProcess
) -> None:
    server.kill()
    server.start()
    server.online("Web")
    task = server.deploy("Shop", "1.0.0")
    assert server.finished(task)["state"] == "success", lines_of(server, task)

    web_agent.stop()
    web_agent.start()  # no token: the credential kept in its work folder
    web_agent.wait_polling()
    state = json.loads((web_agent.work_dir / "agent.json").read_text())
    assert (web_agent.work_dir / "agent.json").stat().st_mode & 0o777 == 0o600
    assert state["target"] == "Web"
    task = server.deploy("Failing", "1.0.0")
    assert server.finished(task)["state"] == "failed"
    assert "about to fail" in " ".join(lines_of(server, task))

    listed = server.cli_in_process("agent", "list", "--output", "json")
    assert listed.returncode == 0, describe(listed)
    [row] = [r for r in json.loads(listed.stdout) if r["target"] == "Web"]
    assert row["online"] and not row["revoked"] and row["os"].startswith("Linux")
    assert "credential" not in listed.stdout.lower() and state["credential"] not in listed.stdout
    table = server.cli_in_process("agent", "list")
    assert table.returncode == 0, describe(table)
    assert any(
        line.split()[1:2] == ["Web"] and "online" in line for line in table.stdout.splitlines()
    )


def test_a_token_is_single_use_and_a_revoked_agent_is_refused_at_once(
    server: AgentServer, tmp_path: Path
) -> None:
    bad = server.cli_in_process("agent", "token", "create", "--target", "Db", "--expires", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    shown = server.cli_in_process("agent", "token", "create", "--target", "Db")
    assert shown.returncode == 0 and "single use, valid until" in shown.stdout
    token = new_token(server, "Db", "--expires", "30m")
    first = AgentProcess(server, tmp_path / "db-agent")
    second = AgentProcess(server, tmp_path / "db-agent-2")
    try:
        first.start(token)
        first.wait_polling()
        second.start(token)
        assert second.exited() == 3
        assert "used already" in second.output()
        assert token not in first.output() + second.output()

        listed = json.loads(server.cli_in_process("agent", "list", "--output", "json").stdout)
        [db] = [r for r in listed if r["target"] == "Db" and not r["revoked"]]
        revoked = server.cli_in_process("agent", "revoke", db["id"])
        assert revoked.returncode == 0, describe(revoked)
        assert first.exited() == 3
        assert "revoked" in first.output()
        # Its credential opens nothing any more.
        credential = json.loads((tmp_path / "db-agent" / "agent.json").read_text())["credential"]
        refused = loopback.post(
            f"{server.url}/api/v1/agent/poll",
            headers={"X-Agent-Credential": credential},
            json={"wait": 0},
            timeout=10,
        )
        assert refused.status_code == 401
    finally:
        first.stop()
        second.stop()
    audit = server.cli_in_process("audit", "list", "--output", "json")
    assert audit.returncode == 0, describe(audit)
    assert token not in audit.stdout and credential not in audit.stdout
    assert "revoked agent" in audit.stdout


def test_a_step_with_no_roles_runs_on_an_agent_worker_of_its_pool(server: AgentServer) -> None:
    builder = AgentProcess(server, server.tmp / "builder-agent")
    builder.start(new_token(server, "Builder"))
    try:
        builder.wait_polling()
        task = server.deploy("Checks", "1.0.0")
        result = server.finished(task)
        text = lines_of(server, task)
        assert result["state"] == "success", text
        said = next(line for line in text if line.startswith("lint on "))
        # On the worker, in a scratch folder of its own, removed when the script ended.
        where = Path(said.split(" in ", 1)[1])
        assert said.startswith("lint on Builder in ") and builder.work_dir in where.parents, said
        assert not where.exists()
    finally:
        builder.stop()
