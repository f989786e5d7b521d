"""Kill the server with SIGKILL and start it again: nothing finished runs twice, a step caught
mid-run fails with a clear message, and a deployment waiting for a person still waits."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import loopback
from tests.e2e.conftest import (
    START_TIMEOUT,
    describe,
    free_port,
    install,
    run_conveyor,
    start_conveyor,
    stop,
    wait_for_api,
)
from tests.e2e.preloaded import PreloadedProcess

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
  - name: Crash
# Scripts write their marks into their own folder on this target (the sandbox lets them write
# nowhere else); the test reads them there.
targets:
  - name: Box
    environments: [Dev]
    roles: [marks]
projects:
  - name: Mid-run
    group: Crash
    lifecycle: Dev only
    process:
      steps:
        - name: Before
          type: script
          target_roles: [marks]
          script: echo before >> marks.txt
        - name: Long
          type: script
          script: |
            echo started-long
            sleep 60
        - name: Afterwards
          type: script
          condition: always
          target_roles: [marks]
          script: echo afterwards >> marks.txt
  - name: Approval
    group: Crash
    lifecycle: Dev only
    process:
      steps:
        - name: Before
          type: script
          target_roles: [marks]
          script: echo approval-before >> marks.txt
        - name: Approve
          type: manual_intervention
          instructions: Say yes
        - name: After
          type: script
          target_roles: [marks]
          script: echo approval-after >> marks.txt
"""


class Restartable:
    """A server on one data folder that the test can kill and start again.

    ``preloaded``: its processes are forked from a helper that imported the server's modules
    once (tests/e2e/preloaded.py), for a test that restarts it many times. Not by default: the
    sandbox test looks at the real script's process (its /proc/PID/environ)."""

    preloaded = False

    def __init__(self, tmp: Path, database_url: str | None) -> None:
        self.tmp = tmp
        self.env = {"CONVEYOR_DATA_DIR": str(tmp / "data")}
        if database_url:
            self.env["CONVEYOR_DATABASE_URL"] = database_url
        self.api_key = install(tmp / "data", database_url)["api_key"]
        self.proc: subprocess.Popen[bytes] | PreloadedProcess | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> None:
        self.start_on(free_port())

    def start_on(self, port: int) -> None:
        """`conveyor server --port PORT`, until it answers; its output in server-N.log."""
        self.url = f"http://127.0.0.1:{port}"
        self.starts += 1
        log = self.tmp / f"server-{self.starts}.log"
        args = ["server", "--port", str(port)]
        self.proc = start_conveyor(args, self.env, self.tmp, log, preloaded=self.preloaded)
        wait_for_api(self.url, self.proc, log, START_TIMEOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no clean-up of any kind
        self.proc.wait(timeout=10)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        response = loopback.request(
            method,
            f"{self.url}/api/v1{path}",
            headers={"X-Api-Key": self.api_key},
            timeout=30,
            **kw,
        )
        assert response.status_code < 400, response.text
        return response.json()

    def task(self, task: str) -> Any:
        return self.api("GET", f"/tasks/{task}")

    def until(self, task: str, check: Any, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.task(task)
            if check(state):
                return state
            time.sleep(0.1)
        raise AssertionError(f"{task} never got there: {state}")


@contextmanager
def applied_server(
    database_url: str, tmp_path: Path, config_text: str, *, preloaded: bool = False
) -> Iterator[Restartable]:
    """A restartable server with ``config_text`` applied; stopped at the end."""
    server = Restartable(tmp_path, database_url)
    server.preloaded = preloaded
    try:
        server.start()
        config = tmp_path / "config.yaml"
        config.write_text(config_text)
        applied = run_conveyor(
            ("apply", "-f", str(config)),
            {**server.env, "CONVEYOR_SERVER": server.url, "CONVEYOR_API_KEY": server.api_key},
            cwd=tmp_path,
        )
        assert applied.returncode == 0, describe(applied)
        yield server
    finally:
        # Also when setting up failed: never leave a server process behind.
        if server.proc is not None:
            stop(server.proc)


@pytest.fixture
def crashable(database_url: str, tmp_path: Path) -> Iterator[Restartable]:
    with applied_server(database_url, tmp_path, CONFIG, preloaded=True) as server:
        yield server


def marks(tmp_path: Path, project: str) -> list[str]:
    """What the project's scripts wrote into their folder on the target."""
    return (
        (tmp_path / "data" / "targets" / "box" / "dev" / project / "marks.txt").read_text().split()
    )


def _deploy(server: Restartable, project: str) -> str:
    server.api("POST", f"/projects/{project}/releases", json={"version": "1.0.0"})
    queued = server.api(
        "POST", "/deployments", json={"project": project, "version": "1.0.0", "environment": "Dev"}
    )
    task: str = queued["task"]
    return task


def test_sigkill_during_a_script_fails_that_step_and_reruns_nothing(
    crashable: Restartable, tmp_path: Path
) -> None:
    task = _deploy(crashable, "Mid-run")
    crashable.until(
        task, lambda t: any(s["name"] == "Long" and s["state"] == "running" for s in t["steps"])
    )
    crashable.kill()
    crashable.start()
    result = crashable.until(task, lambda t: t["state"] in ("failed", "success"))
    steps = {s["name"]: s for s in result["steps"]}
    assert result["state"] == "failed"
    assert steps["Before"]["state"] == "success"
    assert steps["Long"]["state"] == "failed"
    assert steps["Long"]["reason"] == "the server stopped while this step was running"
    assert steps["Afterwards"]["state"] == "success"
    # The step that had finished did not run again.
    assert marks(tmp_path, "mid-run") == ["before", "afterwards"]


def test_sigkill_while_waiting_for_approval_keeps_waiting_and_resumes(
    crashable: Restartable, tmp_path: Path
) -> None:
    task = _deploy(crashable, "Approval")
    crashable.until(task, lambda t: t["state"] == "waiting")
    crashable.kill()
    crashable.start()
    time.sleep(1)
    assert crashable.task(task)["state"] == "waiting"
    [pending] = crashable.api("GET", f"/interruptions?task={task}")
    crashable.api("POST", f"/interruptions/{pending['id']}/submit", json={"result": "proceed"})
    result = crashable.until(task, lambda t: t["state"] in ("failed", "success"))
    assert result["state"] == "success"
    assert marks(tmp_path, "approval") == ["approval-before", "approval-after"]
