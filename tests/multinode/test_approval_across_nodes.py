"""An approval answered through one node resumes the deployment on another node.

Node "front" runs no task (CONVEYOR_TASK_SLOTS=0): it only serves the API. Node "worker" runs
every deployment. A person takes and answers each manual intervention through "front"; the step
after the approval must then start on "worker", woken across processes (LISTEN/NOTIFY), not by
its slow poll. The latency from the answer to that step starting is measured and reported; the
goal of issue 11 (p50 <= 100 ms) is measured by the benchmark, the bound here only catches a
resume that waits for a poll.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.multinode.conftest import ENDED, Cluster, Node, cluster, percentile, until
from tests.multinode.takeover import DEV_WITH_A_TARGET

pytestmark = pytest.mark.e2e

ROUNDS = 10
# Generous: a wake-up by the 5 s safety-net poll fails it, a slow CI machine does not.
P50_BOUND_SECONDS = 1.0

CONFIG = (
    DEV_WITH_A_TARGET
    + """
  - name: Approval
    group: Multinode
    lifecycle: Dev only
    process:
      steps:
        - name: Before
          type: script
          target_roles: [marks]
          script: echo "#{Conveyor.Task.Id} before" >> marks.txt
        - name: Approve
          type: manual_intervention
          instructions: Say yes
        - name: After
          type: script
          target_roles: [marks]
          script: echo "#{Conveyor.Task.Id} after" >> marks.txt
"""
)


@pytest.fixture
def two_nodes(pg_template: str, tmp_path: Path) -> Iterator[Cluster]:
    nodes = {"worker": {"task_slots": 4}, "front": {"task_slots": 0}}
    with cluster(pg_template, tmp_path, CONFIG, nodes) as made:
        yield made


def _step(task: dict[str, object], name: str) -> dict[str, object]:
    steps = task["steps"]
    assert isinstance(steps, list)
    found: dict[str, object] = next(s for s in steps if s["name"] == name)
    return found


def _answer_and_time_the_resume(made: Cluster, front: Node, worker: Node) -> tuple[float, float]:
    """Deploy through "worker", answer through "front"; seconds from sending the answer and
    from its response to the step after the approval starting."""
    task: str = worker.api(
        "POST",
        "/deployments",
        json={"project": "Approval", "version": "1.0.0", "environment": "Dev"},
    )["task"]
    until(
        lambda: front.api("GET", f"/interruptions?task={task}&pending=true"),
        30,
        f"{task} waiting for its approval",
        made.logs,
    )
    [pending] = front.api("GET", f"/interruptions?task={task}&pending=true")
    front.api("POST", f"/interruptions/{pending['id']}/take")
    sent = datetime.now(UTC)
    front.api("POST", f"/interruptions/{pending['id']}/submit", json={"result": "proceed"})
    answered = datetime.now(UTC)
    ended = until(
        lambda: (t := front.task(task))["state"] in ENDED and t,
        30,
        f"{task} ending after its approval",
        made.logs,
    )
    assert ended["state"] == "success", (ended, made.logs())
    assert _step(ended, "Approve")["state"] == "success"
    after = _step(ended, "After")
    assert after["state"] == "success", ended
    resumed = datetime.fromisoformat(str(after["started"]))
    return (resumed - sent).total_seconds(), (resumed - answered).total_seconds()


def test_an_approval_answered_on_one_node_resumes_the_task_on_another(
    two_nodes: Cluster,
) -> None:
    front, worker = two_nodes["front"], two_nodes["worker"]
    worker.api("POST", "/projects/Approval/releases", json={"version": "1.0.0"})
    from_sending: list[float] = []
    from_response: list[float] = []
    started = time.monotonic()
    for _ in range(ROUNDS):
        sent, answered = _answer_and_time_the_resume(two_nodes, front, worker)
        from_sending.append(sent)
        from_response.append(answered)

    p50 = percentile(from_response, 50)
    print(
        f"\nanswer (through front) -> next step started (on worker), {ROUNDS} rounds in "
        f"{time.monotonic() - started:.1f} s: from the answer's response p50 {p50 * 1000:.0f} ms, "
        f"max {max(from_response) * 1000:.0f} ms; from sending it p50 "
        f"{percentile(from_sending, 50) * 1000:.0f} ms, max {max(from_sending) * 1000:.0f} ms"
    )
    assert p50 <= P50_BOUND_SECONDS, (from_response, two_nodes.logs())

    # Each deployment ran each script once, on the worker: the front node ran nothing.
    lines = two_nodes.marks("dev", "approval")
    tasks = {line.split()[0] for line in lines}
    assert len(tasks) == ROUNDS
    assert sorted(lines) == sorted(f"{t} {step}" for t in tasks for step in ("before", "after"))
    nodes = {row["name"]: row for row in front.api("GET", "/nodes")}
    assert nodes["front"]["slots"] == 0 and nodes["front"]["alive"] is True
    assert "Traceback" not in front.log() + worker.log(), two_nodes.logs()
