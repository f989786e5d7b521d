"""The official Octopus API client (npm @octopusdeploy/api-client, what the Octopus GitHub
Actions are built on), run by node against a real Conveyor server: push packages and build
information, create a release, deploy it, wait for its task, cancel a deployment on timeout
(docs/octopus-compatibility.md).

The client comes from the npm registry at the version pinned in
tests/e2e/browser-checks/package.json, installed by .ci/run with `npm ci` into
CONVEYOR_TEST_NPM_DIR (tests/e2e/axe.py says how). Without it (or without node) the tests are
skipped with that notice; under CI they fail instead. One node process runs the whole flow
(tests/e2e/octopus-client/flow.js) and prints a result per step, which the tests look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests import loopback
from tests.e2e.axe import INSTALL, MANIFEST, NPM_DIR
from tests.e2e.conftest import Server, describe

pytestmark = pytest.mark.e2e

FLOW = Path(__file__).with_name("octopus-client") / "flow.js"
CLIENT = NPM_DIR / "node_modules" / "@octopusdeploy" / "api-client"
SHA = "0123456789abcdef0123456789abcdef01234567"

CONFIG = """
environments:
  - name: Dev
  - name: Test
lifecycles:
  - name: Main
    phases:
      - name: Dev
        environments: [Dev]
      - name: Test
        environments: [Test]
project_groups:
  - name: Shop
targets:
  - name: Local
    environments: [Dev, Test]
    roles: [web]
users:
  - username: build
    service_account: true
teams:
  - name: Build servers
    members: [build]
    roles:
      - role: Build Server
        environments: [Dev]
projects:
  - name: Hello
    group: Shop
    lifecycle: Main
    process:
      steps:
        - name: Deploy Hello
          type: package
          package: Hello
          target_roles: [web]
        - name: Say hello
          type: script
          script: 'echo "Hello #{Conveyor.Release.Number} is in #{Conveyor.Environment.Name}"'
  - name: Slow
    group: Shop
    lifecycle: Main
    process:
      steps:
        - name: Take a while
          type: script
          script: sleep 60
"""


def _client_or_skip() -> None:
    wanted = json.loads(MANIFEST.read_text())["dependencies"]["@octopusdeploy/api-client"]
    try:
        installed = json.loads((CLIENT / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        installed = None
    problem = None
    if shutil.which("node") is None:
        problem = "node is not installed"
    elif installed != wanted:
        problem = (
            f"@octopusdeploy/api-client {wanted} is not installed in {NPM_DIR} "
            f"(found {installed}): {INSTALL}"
        )
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(scope="module")
def e2e_database() -> None:
    """SQLite only: what the client sees does not depend on the database, and the API's every
    route runs on both databases in process (tests/api/test_octopus_api.py)."""
    return None


@pytest.fixture(scope="module")
def flow(server: Server) -> dict[str, Any]:
    """The whole build-server run, once per server: each step's result."""
    _client_or_skip()
    config = server.tmp / "octopus.yaml"
    config.write_text(CONFIG)
    applied = server.cli_in_process("apply", "-f", str(config))
    assert applied.returncode == 0, describe(applied)
    build_key = server.api_key_for("build", in_process=True)
    folder = server.tmp / "octopus-packages"
    folder.mkdir()
    archive = folder / "Hello.1.0.0.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("index.html", "<h1>Hello</h1>")
    done = subprocess.run(
        ["node", str(FLOW)],
        env={
            "PATH": os.environ.get("PATH", ""),
            "NODE_PATH": str(NPM_DIR / "node_modules"),
            "OCTOPUS_URL": server.url,
            "OCTOPUS_API_KEY": server.api_key,
            "OCTOPUS_BUILD_KEY": build_key,
            "OCTOPUS_PACKAGES": json.dumps([str(archive)]),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert "fatal" not in results, results["fatal"]
    return results


def ok(results: dict[str, Any], name: str) -> Any:
    result = results[name]
    assert result["ok"], f"{name}: {result['error']}"
    return result.get("value")


def refused(results: dict[str, Any], name: str) -> str:
    result = results[name]
    assert not result["ok"], f"{name} should have failed: {result}"
    message: str = result["error"]
    return message


def test_push_packages_and_build_information(flow: dict[str, Any]) -> None:
    ok(flow, "push")
    assert "A package with the same name and version already exists" in refused(flow, "push_again")
    ok(flow, "push_ignore")
    ok(flow, "build_information")
    assert "Metadata for the specified Package ID and version already exists." in refused(
        flow, "build_information_again"
    )
    assert ok(flow, "listed") == {"total": 1, "versions": ["1.0.0"], "commit": SHA}


def test_create_release_deploy_and_wait(flow: dict[str, Any], server: Server) -> None:
    created = ok(flow, "release")
    # The first release of a project, no version given, is 0.0.1 (as upstream's test pins).
    assert created["ReleaseVersion"] == "0.0.1"
    assert ok(flow, "release_read") == {
        "version": "0.0.1",
        "packages": [
            {"ActionName": "Deploy Hello", "PackageReferenceName": "", "Version": "1.0.0"}
        ],
    }
    [pair] = ok(flow, "deploy")["DeploymentServerTasks"]
    assert pair["ServerTaskId"].startswith("ServerTasks-")
    [deployment] = ok(flow, "deployments")
    assert deployment["task"] == pair["ServerTaskId"]
    assert ok(flow, "wait") == [{"id": pair["ServerTaskId"], "state": "Success", "completed": True}]
    assert ok(flow, "wait_states")[-1] == "Success"
    details = ok(flow, "details")
    assert details["state"] == "Success"
    assert details["steps"] == [["Deploy Hello", "Success"], ["Say hello", "Success"]]
    assert "Hello 0.0.1 is in Dev" in details["raw"]
    assert "Unknown task Id(s) ServerTasks-99999" in refused(flow, "unknown_task")
    # What the Octopus client did is Conveyor's own: the release took the pushed build
    # information (change detection starts from its commit), the deployment is in the audit log.
    release = server.get("/projects/Hello/releases/0.0.1").json()
    assert release["build"]["commit"] == SHA and release["build"]["branch"] == "main"
    events = server.get("/events?category=DeploymentQueued&category=BuildInformationPushed").json()
    assert {e["category"] for e in events["events"]} == {
        "DeploymentQueued",
        "BuildInformationPushed",
    }


def test_permissions_hold_for_the_client(flow: dict[str, Any], server: Server) -> None:
    message = refused(flow, "build_to_test")
    assert "DeploymentCreate" in message, message
    denied = server.get("/events?category=AccessDenied").json()["events"]
    assert any(e["actor"] == "build" for e in denied)


def test_cancel_on_timeout(flow: dict[str, Any], server: Server) -> None:
    ok(flow, "slow_deploy")
    assert (
        refused(flow, "timeout_cancels") == "Timeout reached after 1 seconds. Tasks were cancelled."
    )
    assert ok(flow, "after_cancel") == [{"state": "Canceled", "completed": True}]
    # The unauthenticated client gets the Octopus error shape too.
    anonymous = loopback.get(f"{server.url}/api/Spaces-1/projects", timeout=10)
    assert anonymous.status_code == 401 and "ErrorMessage" in anonymous.json()
