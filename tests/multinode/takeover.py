"""What the takeover tests (test_kill, test_freeze) share: projects whose middle step runs long,
and the checks that a task was interrupted, not continued, and ended once."""

from __future__ import annotations

from typing import Any

from tests.multinode.conftest import ENDED, STOPPED, Cluster, Node

# One environment and a target whose folder the scripts write their marks into.
DEV_WITH_A_TARGET = """
environments:
  - name: Dev
lifecycles:
  - name: Dev only
    phases:
      - name: Dev
        environments: [Dev]
project_groups:
  - name: Multinode
targets:
  - name: Box
    environments: [Dev]
    roles: [marks]
projects:"""


def three_step_config(long_step: str, *projects: str) -> str:
    """Projects of three steps: Before and After write a mark; Long writes one, then runs
    ``long_step`` (a shell fragment). Marks carry the task id, so a second run shows."""
    steps = f"""
        - name: Before
          type: script
          target_roles: [marks]
          script: echo "#{{Conveyor.Task.Id}} before" >> marks.txt
        - name: Long
          type: script
          target_roles: [marks]
          script: |
            echo "#{{Conveyor.Task.Id}} long-start" >> marks.txt
            {long_step}
            echo "#{{Conveyor.Task.Id}} long-done" >> marks.txt
        - name: After
          type: script
          target_roles: [marks]
          script: echo "#{{Conveyor.Task.Id}} after" >> marks.txt"""
    listed = "".join(
        f"""
  - name: {name}
    group: Multinode
    lifecycle: Dev only
    process:
      steps:{steps}"""
        for name in projects
    )
    return DEV_WITH_A_TARGET + listed + "\n"


def deploy(node: Node, project: str) -> str:
    node.api("POST", f"/projects/{project}/releases", json={"version": "1.0.0"})
    queued = node.api(
        "POST", "/deployments", json={"project": project, "version": "1.0.0", "environment": "Dev"}
    )
    task: str = queued["task"]
    return task


def steps_of(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in task["steps"]}


def long_running(node: Node, task: str) -> bool:
    return bool(steps_of(node.task(task))["Long"]["state"] == "running")


def all_ended(node: Node, tasks: list[str]) -> list[dict[str, Any]] | None:
    seen = [node.task(t) for t in tasks]
    return seen if all(t["state"] in ENDED for t in seen) else None


def assert_interrupted_and_not_continued(task: dict[str, Any], made: Cluster) -> None:
    steps = steps_of(task)
    assert task["state"] == "failed", (task, made.logs())
    assert steps["Before"]["state"] == "success", task
    assert steps["Long"]["state"] == "failed", (task, made.logs())
    assert steps["Long"]["reason"] == STOPPED, task
    assert steps["After"]["state"] not in ("running", "success", "failed"), task


def assert_each_ended_once_as_failed(made: Cluster, tasks: list[str]) -> None:
    """One end event per task in the audit log, a failure; never a success."""
    ends = made.events("DeploymentSucceeded", "DeploymentFailed", "DeploymentCanceled")
    for task in tasks:
        mine = [e["category"] for e in ends if task in e["documents"]]
        assert mine == ["DeploymentFailed"], (task, mine)


def task_project(node: Node, task: str) -> str:
    """The project's folder name on the target (its slug)."""
    project: str = node.task(task)["project"]
    return project.lower().replace(" ", "-")
