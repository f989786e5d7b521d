"""The task engine with real subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.domain.errors import PermissionDenied
from conveyor.engine.node import Node
from conveyor.services import deployments, interruptions, releases, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.conftest import caller_of

CONFIG = """
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
users:
  - username: alice
    email: alice@example.com
  - username: bob
  - username: carol
teams:
  - name: Deployers
    members: [alice, bob, carol]
    roles:
      - role: Project Deployer
      - role: Release Creator
  - name: Approvers
    members: [bob, carol]
    roles:
      - role: Approver
  - name: Security
    members: [carol]
    roles:
      - role: Approver
projects:
{projects}
"""


def project(name: str, steps: str, variables: str = "") -> str:
    block = f"""  - name: {name}
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
{steps}"""
    if variables:
        block += f"    variables:\n{variables}"
    return block


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=4, name=f"test-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def setup(services: Services, admin: Caller, *projects: str) -> None:
    await apply_text(services, admin, CONFIG.format(projects="\n".join(projects)))


async def finished(
    services: Services, caller: Caller, task: str, timeout: float = 30, *, waiting: bool = True
) -> dict[str, Any]:
    """The task once it ended, or (with ``waiting``) once it waits for a person."""
    ends = ("success", "failed", "canceled", "timed_out") + (("waiting",) if waiting else ())
    for _ in range(int(timeout * 20)):
        result = await tasks.get_task(services, caller, task)
        if result["state"] in ends:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task} did not finish: {result}")


async def log_text(services: Services, caller: Caller, task: str) -> str:
    result = await tasks.task_log(services, caller, task)
    return "\n".join(line["line"] for line in result["lines"])


async def deploy(services: Services, caller: Caller, name: str, env: str = "Dev", **kw: Any) -> str:
    release = await releases.create_release(services, caller, name)
    queued = await deployments.deploy(services, caller, name, release.version, env, **kw)
    return queued.as_dict()["task"]


async def test_script_variables_outputs_and_masking(
    services: Services, admin: Caller, engine: Node
) -> None:
    steps = """        - name: Produce
          type: script
          script: |
            echo "greeting=$GREETING in #{Conveyor.Environment.Name}"
            echo "secret is #{Password}"
            echo "##conveyor[setVariable name='Colour' value='blue']"
        - name: Consume
          type: script
          syntax: python
          script: |
            import os
            project = os.environ["CONVEYOR_PROJECT_NAME"]
            print("colour", "#{Conveyor.Action[Produce].Output.Colour}", project)
"""
    variables = """      - name: Greeting
        value: hello
      - name: Greeting
        value: bonjour
        environments: [Prod]
      - name: Password
        value: hunter2-very-secret
        sensitive: true
"""
    await setup(services, admin, project("Scripts", steps, variables))
    task = await deploy(services, admin, "Scripts", "Prod")
    result = await finished(services, admin, task)
    assert result["state"] == "success", result
    text = await log_text(services, admin, task)
    assert "greeting=bonjour in Prod" in text
    assert "secret is ********" in text and "hunter2" not in text
    assert "colour blue Scripts" in text


async def test_failure_and_run_conditions(services: Services, admin: Caller, engine: Node) -> None:
    steps = """        - name: Break
          type: script
          script: exit 3
        - name: Skipped on failure
          type: script
          script: echo should-not-run
        - name: Clean up
          type: script
          condition: always
          script: echo cleaning
        - name: On failure
          type: script
          condition: failure
          script: echo failure-handler
"""
    await setup(services, admin, project("Breaks", steps))
    task = await deploy(services, admin, "Breaks")
    result = await finished(services, admin, task)
    assert result["state"] == "failed"
    states = {s["name"]: (s["state"], s["reason"]) for s in result["steps"]}
    assert states["Break"] == ("failed", "the script exited with code 3")
    assert states["Skipped on failure"][0] == "skipped"
    assert "runs only on success" in states["Skipped on failure"][1]
    assert states["Clean up"][0] == "success"
    assert states["On failure"][0] == "success"
    text = await log_text(services, admin, task)
    assert "should-not-run" not in text and "cleaning" in text and "failure-handler" in text


async def test_unknown_variable_fails_the_step_naming_it(
    services: Services, admin: Caller, engine: Node
) -> None:
    await setup(
        services,
        admin,
        project(
            "Typo", "        - name: S\n          type: script\n          script: 'echo #{Nope}'\n"
        ),
    )
    result = await finished(services, admin, await deploy(services, admin, "Typo"))
    assert result["state"] == "failed"
    assert "#{Nope}" in result["steps"][0]["reason"]


# The script's child, named so the test finds it among the host's processes (inside the
# sandbox's pid namespace, ``$!`` is not the pid the host sees).
SLEEPER = """          script: |
            (exec -a {name} sleep 60) &
            echo started-{name}
            wait
"""


def _sleepers(name: str) -> list[int]:
    """Host pids of live processes whose command line starts with ``name``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(name.encode()) and _alive(int(cmdline.parent.name)):
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return found


async def test_timeout_kills_the_whole_process_group(
    services: Services, admin: Caller, engine: Node
) -> None:
    name = f"conveyor-sleeper-{os.getpid()}-{id(services)}"
    steps = "        - name: Hang\n          type: script\n          timeout: 1\n"
    await setup(services, admin, project("Hangs", steps + SLEEPER.format(name=name)))
    task = await deploy(services, admin, "Hangs")
    result = await finished(services, admin, task)
    assert result["state"] == "timed_out"
    assert result["steps"][0]["reason"] == "timed out after 1 s"
    assert f"started-{name}" in await log_text(services, admin, task)
    await asyncio.sleep(0.2)
    assert not _sleepers(name), "the script's child process outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


async def test_cancel_kills_the_running_script(
    services: Services, admin: Caller, engine: Node
) -> None:
    name = f"conveyor-sleeper-{os.getpid()}-{id(services)}"
    steps = "        - name: Long\n          type: script\n"
    await setup(services, admin, project("Long", steps + SLEEPER.format(name=name)))
    task = await deploy(services, admin, "Long")
    for _ in range(200):
        if _sleepers(name):
            break
        await asyncio.sleep(0.05)
    assert _sleepers(name), "the script never started its child"
    await tasks.cancel_task(services, admin, task)
    result = await finished(services, admin, task)
    assert result["state"] == "canceled"
    assert result["steps"][0]["state"] == "canceled"
    await asyncio.sleep(0.2)
    assert not _sleepers(name)


async def test_parallel_steps_run_together(services: Services, admin: Caller, engine: Node) -> None:
    steps = """        - name: A
          type: script
          script: sleep 1
        - name: B
          type: script
          start: with_previous
          script: sleep 1
"""
    await setup(services, admin, project("Parallel", steps))
    result = await finished(services, admin, await deploy(services, admin, "Parallel"))
    a, b = result["steps"]
    assert b["started"] < a["completed"], "B should start while A is still running"


async def test_one_deployment_per_project_and_environment_at_a_time(
    services: Services, admin: Caller, engine: Node
) -> None:
    await setup(
        services,
        admin,
        project("Serial", "        - name: S\n          type: script\n          script: sleep 1\n"),
    )
    first = await deploy(services, admin, "Serial")
    second = await deploy(services, admin, "Serial")
    await asyncio.sleep(0.3)
    queued = await tasks.get_task(services, admin, second)
    assert queued["state"] == "queued"
    assert queued["queue_reason"] and "waiting for" in queued["queue_reason"]
    one = await finished(services, admin, first)
    two = await finished(services, admin, second)
    assert two["started"] >= one["completed"]


async def test_concurrent_release_creation_gives_distinct_versions(
    services: Services, admin: Caller
) -> None:
    await setup(
        services,
        admin,
        project("Busy", "        - name: S\n          type: script\n          script: 'true'\n"),
    )
    created = await asyncio.gather(
        *(releases.create_release(services, admin, "Busy") for _ in range(20))
    )
    versions = [r.version for r in created]
    assert len(set(versions)) == 20


APPROVAL = """        - name: Approve
          type: manual_intervention
          instructions: Look at it
          responsible_teams: [Approvers]
          prevent_self_approval: true
          required_approvals: 2
          approval_teams: [Security]
        - name: After
          type: script
          script: echo approved-#{{Conveyor.Action[Approve].Output.Manual.Approved}}
"""


async def test_four_eyes_quorum_and_teams(services: Services, admin: Caller, engine: Node) -> None:
    await setup(services, admin, project("Guarded", APPROVAL.replace("{{", "{").replace("}}", "}")))
    bob = await caller_of(services, "bob")
    carol = await caller_of(services, "carol")
    alice = await caller_of(services, "alice")
    task = await deploy(services, bob, "Guarded")
    assert (await finished(services, admin, task))["state"] == "waiting"
    [pending] = await interruptions.list_interruptions(services, admin, task=task)
    ident = pending["id"]
    with pytest.raises(PermissionDenied, match="you started this deployment"):
        await interruptions.submit(services, bob, ident, "proceed")
    with pytest.raises(PermissionDenied, match="only members of Approvers"):
        await interruptions.submit(services, alice, ident, "proceed")
    after_one = await interruptions.submit(services, carol, ident, "proceed", "looks fine")
    assert after_one["state"] == "pending"
    with pytest.raises(PermissionDenied, match="already approved"):
        await interruptions.submit(services, carol, ident, "proceed")
    # Quorum of two, but bob started it: nobody else in Approvers may give the second approval.
    assert (await tasks.get_task(services, admin, task))["state"] == "waiting"


async def test_quorum_settles_and_the_deployment_resumes(
    services: Services, admin: Caller, engine: Node
) -> None:
    steps = (
        APPROVAL.replace("{{", "{")
        .replace("}}", "}")
        .replace("prevent_self_approval: true", "prevent_self_approval: false")
    )
    await setup(services, admin, project("Quorum", steps))
    bob = await caller_of(services, "bob")
    carol = await caller_of(services, "carol")
    task = await deploy(services, admin, "Quorum")
    assert (await finished(services, admin, task))["state"] == "waiting"
    [pending] = await interruptions.list_interruptions(services, admin, task=task)
    await interruptions.take(services, bob, pending["id"])
    halfway = await interruptions.submit(services, bob, pending["id"], "proceed")
    assert halfway["state"] == "pending" and halfway["taken_by"] is None
    done = await interruptions.submit(services, carol, pending["id"], "proceed", "ok")
    assert done["state"] == "answered" and done["result"] == "proceed"
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success"
    assert "approved-True" in await log_text(services, admin, task)


async def test_guided_failure_retry_then_ignore(
    services: Services, admin: Caller, engine: Node
) -> None:
    steps = """        - name: Flaky
          type: script
          script: |
            echo flaky-attempt
            exit 1
        - name: Next
          type: script
          script: echo next-ran
"""
    await setup(services, admin, project("Flaky", steps))
    task = await deploy(services, admin, "Flaky", guided_failure=True)
    assert (await finished(services, admin, task))["state"] == "waiting"
    [first] = await interruptions.list_interruptions(services, admin, task=task, pending_only=True)
    assert first["kind"] == "guided_failure"
    await interruptions.submit(services, admin, first["id"], "retry")
    for _ in range(100):
        pending = await interruptions.list_interruptions(
            services, admin, task=task, pending_only=True
        )
        if pending:
            break
        await asyncio.sleep(0.05)
    # Both attempts ran (the log is written in batches: the second line may follow shortly).
    for _ in range(100):
        if (await log_text(services, admin, task)).count("flaky-attempt") == 2:
            break
        await asyncio.sleep(0.05)
    assert (await log_text(services, admin, task)).count("flaky-attempt") == 2
    await interruptions.submit(services, admin, pending[0]["id"], "ignore", "known flake")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success"
    assert "failure ignored by admin" in result["steps"][0]["reason"]
    assert "next-ran" in await log_text(services, admin, task)


async def test_waiting_tasks_hold_no_slot_and_parents_never_deadlock(
    services: Services, admin: Caller
) -> None:
    """With one slot: a deployment waiting for a person does not stop another from running,
    and a parent waiting for its child does not stop the child."""
    approval = """        - name: Approve
          type: manual_intervention
          instructions: Wait here
"""
    parent = """        - name: Child
          type: deploy_release
          project: Leaf
"""
    await setup(
        services,
        admin,
        project("Waits", approval),
        project("Leaf", "        - name: S\n          type: script\n          script: echo leaf\n"),
        project("Parent", parent),
    )
    node = Node(services, slots=1, name=f"one-slot-{os.getpid()}")
    await node.start()
    try:
        waiting = await deploy(services, admin, "Waits")
        assert (await finished(services, admin, waiting))["state"] == "waiting"
        leaf = await releases.create_release(services, admin, "Leaf")
        assert leaf.version
        parent_task = await deploy(services, admin, "Parent")
        result = await finished(services, admin, parent_task, waiting=False)
        assert result["state"] == "success", result
        [child] = result["children"]
        assert child["state"] == "success"
        assert (await tasks.get_task(services, admin, waiting))["state"] == "waiting"
    finally:
        await node.stop()


async def test_canceling_a_parent_cancels_its_child(
    services: Services, admin: Caller, engine: Node
) -> None:
    await setup(
        services,
        admin,
        project(
            "Slow leaf", "        - name: S\n          type: script\n          script: sleep 30\n"
        ),
        project(
            "Parent",
            "        - name: Child\n          type: deploy_release\n          project: Slow leaf\n",
        ),
    )
    await releases.create_release(services, admin, "Slow leaf")
    parent_task = await deploy(services, admin, "Parent")
    for _ in range(200):
        parent_now = await tasks.get_task(services, admin, parent_task)
        if parent_now["children"] and parent_now["children"][0]["state"] == "executing":
            break
        await asyncio.sleep(0.05)
    await tasks.cancel_task(services, admin, parent_task)
    parent_end = await finished(services, admin, parent_task, waiting=False)
    assert parent_end["state"] == "canceled"
    child = await finished(services, admin, parent_end["children"][0]["id"], waiting=False)
    assert child["state"] == "canceled"
