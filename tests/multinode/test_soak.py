"""200 deployments through three nodes while one is killed and restarted and another frozen.

Deployments are submitted round-robin through the nodes that answer; during the run the busiest
node is killed (SIGKILL) and started again, and the busiest of the others is frozen (SIGSTOP)
for longer than its lease, then continued. Afterwards every deployment has ended, each exactly
once in the audit log; no step ran twice (each script appends a mark carrying its task id); a
deployment that succeeded ran each of its steps exactly once; one that failed failed only
because its node stopped; and `conveyor audit verify` finds the hash chain intact.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.multinode.conftest import ENDED, STOPPED, Cluster, Node, cluster, until

pytestmark = pytest.mark.e2e

DEPLOYMENTS = 200
LEASE_SECONDS = 4
ENVIRONMENTS = ("Dev", "Test", "Prod")
# (project, whether it has a step that sleeps a second)
PROJECTS = (("Alpha", False), ("Beta", False), ("Gamma", False), ("Napper", True))
KILL_AT = 50  # deployments submitted when n1 is killed (and started again)
FREEZE_AT = 100  # ... when n2 is frozen, for longer than its lease
FROZEN_SECONDS = LEASE_SECONDS + 2


def _steps(nap: bool) -> list[str]:
    return ["one", "nap", "two"] if nap else ["one", "two"]


def _config() -> str:
    projects = ""
    for name, nap in PROJECTS:
        steps = ""
        for step in _steps(nap):
            pause = "sleep 1; " if step == "nap" else ""
            steps += f"""
        - name: {step}
          type: script
          target_roles: [marks]
          script: {pause}echo "#{{Conveyor.Task.Id}} {step}" >> marks.txt"""
        projects += f"""
  - name: {name}
    group: Soak
    lifecycle: Anywhere
    process:
      steps:{steps}"""
    environments = "".join(f"\n  - name: {e}" for e in ENVIRONMENTS)
    return f"""
environments:{environments}
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [{", ".join(ENVIRONMENTS)}]
project_groups:
  - name: Soak
targets:
  - name: Box
    environments: [{", ".join(ENVIRONMENTS)}]
    roles: [marks]
projects:{projects}
"""


@pytest.fixture
def three_nodes(pg_template: str, tmp_path: Path) -> Iterator[Cluster]:
    settings = {"task_slots": 10, "lease_seconds": LEASE_SECONDS}
    nodes = {name: settings for name in ("n1", "n2", "n3")}
    with cluster(pg_template, tmp_path, _config(), nodes) as made:
        yield made


class Chaos:
    """Kills (and restarts) the busiest node, then freezes the busiest of the others, on cue;
    says which nodes answer, for the submissions meanwhile."""

    def __init__(self, made: Cluster) -> None:
        self.made = made
        self.killed: Node | None = None
        self.restarting: Future[None] | None = None
        self.frozen: Node | None = None
        # Thawed on a timer, not between submissions: a submission may wait for a lock that
        # the frozen node holds (until it is continued).
        self.thaw: threading.Timer | None = None
        self.slowest = 0.0  # the longest a submission took
        self.caught: dict[str, list[str]] = {}  # "killed n1": the tasks n1 ran then
        self.pool = ThreadPoolExecutor(1)

    def answering(self) -> list[Node]:
        restarting = self.restarting is not None and not self.restarting.done()
        return [
            n for n in self.made.nodes if not n.frozen and not (restarting and n is self.killed)
        ]

    def cue(self, submitted: int) -> None:
        if submitted == KILL_AT:
            self.killed = self.busiest(self.made.nodes, "killed")
            self.killed.kill()
            self.restarting = self.pool.submit(self.killed.start)
        if submitted == FREEZE_AT:
            others = [n for n in self.answering() if n is not self.killed]
            self.frozen = self.busiest(others, "frozen")
            self.frozen.freeze()
            self.thaw = threading.Timer(FROZEN_SECONDS, self.frozen.thaw)
            self.thaw.start()

    def busiest(self, nodes: list[Node], fate: str) -> Node:
        """The node of ``nodes`` running the most tasks, once one runs any: the kill or freeze
        must catch work (the nodes share it unevenly: the first to wake claims a batch)."""
        names = {n.name for n in nodes}

        def running() -> dict[str, list[str]]:
            by_node: dict[str, list[str]] = {}
            for task, node in self.made.running_on().items():
                if node in names:
                    by_node.setdefault(node, []).append(task)
            return by_node

        by_node: dict[str, list[str]] = until(running, 10, "a node running a task", self.made.logs)
        name = max(by_node, key=lambda n: len(by_node[n]))
        self.caught[f"{fate} {name}"] = by_node[name]
        return self.made[name]

    def finish(self) -> None:
        if self.thaw is not None:
            self.thaw.join()
        if self.restarting is not None:
            self.restarting.result()  # it answered again (or the start's failure is raised)
        self.pool.shutdown()


def _submit_all(made: Cluster, chaos: Chaos) -> dict[str, tuple[str, str]]:
    """task id -> (project, environment), for DEPLOYMENTS deployments."""
    lanes = itertools.cycle(itertools.product(PROJECTS, ENVIRONMENTS))
    turn = itertools.count()
    submitted: dict[str, tuple[str, str]] = {}
    try:
        for n in range(DEPLOYMENTS):
            chaos.cue(n)
            (project, _), environment = next(lanes)
            nodes = chaos.answering()
            via = nodes[next(turn) % len(nodes)]
            began = time.monotonic()
            queued = via.api(
                "POST",
                "/deployments",
                json={"project": project, "version": "1.0.0", "environment": environment},
            )
            chaos.slowest = max(chaos.slowest, time.monotonic() - began)
            submitted[queued["task"]] = (project, environment)
    finally:
        chaos.finish()
    return submitted


def _all_ended(made: Cluster) -> list[dict[str, Any]] | None:
    rows: list[dict[str, Any]] = made.any.api("GET", f"/deployments?limit={DEPLOYMENTS + 10}")
    return rows if all(r["state"] in ENDED for r in rows) else None


def test_200_deployments_through_three_nodes_with_a_kill_and_a_freeze_each_end_once(
    three_nodes: Cluster,
) -> None:
    made = three_nodes
    for project, _ in PROJECTS:
        made.any.api("POST", f"/projects/{project}/releases", json={"version": "1.0.0"})
    started = time.monotonic()
    chaos = Chaos(made)
    submitted = _submit_all(made, chaos)
    submitted_in = time.monotonic() - started
    rows = until(lambda: _all_ended(made), 90, "every deployment ending", made.logs)
    wall = time.monotonic() - started

    assert {r["task"] for r in rows} == set(submitted), "a deployment is missing or extra"
    states = Counter(r["state"] for r in rows)
    print(
        f"\n{DEPLOYMENTS} deployments on 3 nodes (one killed and restarted at {KILL_AT}, one "
        f"frozen {FROZEN_SECONDS} s at {FREEZE_AT}): submitted in {submitted_in:.1f} s, all ended "
        f"after {wall:.1f} s; {dict(states)}"
    )
    print(
        f"running when killed or frozen: {chaos.caught}; slowest submission {chaos.slowest:.1f} s"
    )
    assert set(states) <= {"success", "failed"}, states

    # A failure is only a step caught running by the kill or the freeze.
    failed = [r["task"] for r in rows if r["state"] == "failed"]
    for task in failed:
        steps = made.any.task(task)["steps"]
        reasons = [s["reason"] for s in steps if s["state"] == "failed"]
        assert reasons == [STOPPED], (task, steps)

    _assert_each_ended_once(made, submitted)
    _assert_no_step_ran_twice(made, submitted, {r["task"]: r["state"] for r in rows})
    made.verify_audit()


def _assert_each_ended_once(made: Cluster, submitted: dict[str, tuple[str, str]]) -> None:
    """Exactly one start and one end event per task in the audit log."""
    ends = made.events("DeploymentSucceeded", "DeploymentFailed", "DeploymentCanceled")
    starts = made.events("DeploymentStarted")
    for events, what in ((ends, "end"), (starts, "start")):
        per_task = Counter(d for e in events for d in e["documents"] if d in submitted)
        wrong = {t: per_task[t] for t in submitted if per_task[t] != 1}
        assert not wrong, f"tasks without exactly one {what} event: {wrong}"


def _assert_no_step_ran_twice(
    made: Cluster, submitted: dict[str, tuple[str, str]], states: dict[str, str]
) -> None:
    runs: Counter[tuple[str, str]] = Counter()
    for (project, _), environment in itertools.product(PROJECTS, ENVIRONMENTS):
        for line in made.marks(environment.lower(), project.lower()):
            task, step = line.split()
            runs[(task, step)] += 1
    twice = {k: n for k, n in runs.items() if n > 1}
    assert not twice, f"steps that ran more than once: {twice}"
    naps = dict(PROJECTS)
    for task, (project, _) in submitted.items():
        if states[task] == "success":
            missing = [s for s in _steps(naps[project]) if runs[(task, s)] != 1]
            assert not missing, f"{task} succeeded without running {missing}"
