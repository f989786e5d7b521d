"""SIGKILL a real server at random moments of a parent/child deployment with an approval; after
every kill the database holds no orphan: each child deployment is known to its parent's step,
each waiting step has its question (or child) and each open question its waiting step, and in
the end every task finished exactly once and the audit chain verifies.

Before, queuing a child and writing the parent step's child id were two transactions, and so
were raising an interruption and setting its step waiting: a kill between them left a child no
parent waits for, or a question no step waits on (and that nobody can usefully answer)."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, text

from tests.e2e.conftest import describe, run_conveyor
from tests.e2e.test_crash import Restartable, applied_server

pytestmark = pytest.mark.e2e

KILLS = 20
ENDED = ("success", "failed", "canceled", "timed_out")

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
projects:
  - name: Leaf
    group: Crash
    lifecycle: Dev only
    process:
      steps:
        - name: Work
          type: script
          script: echo leaf
        - name: Check
          type: manual_intervention
          instructions: Leaf looks fine?
  - name: Stack
    group: Crash
    lifecycle: Dev only
    process:
      steps:
        - name: Before
          type: script
          script: echo before
        - name: Leaf
          type: deploy_release
          project: Leaf
        - name: Approve
          type: manual_intervention
          instructions: Ship it?
        - name: After
          type: script
          script: echo after
  # The same events, after a first step slow enough for the test to take its locks.
  - name: Paused
    group: Crash
    lifecycle: Dev only
    process:
      steps:
        - name: Before
          type: script
          script: sleep 2
        - name: Leaf
          type: deploy_release
          project: Leaf
  - name: Asks
    group: Crash
    lifecycle: Dev only
    process:
      steps:
        - name: Before
          type: script
          script: sleep 2
        - name: Approve
          type: manual_intervention
          instructions: Ship it?
"""


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[Restartable]:
    # Restarted over twenty times: from a process that imported the server once.
    with applied_server(database_url, tmp_path, CONFIG, preloaded=True) as server:
        yield server


def _sync_url(database_url: str) -> str:
    return database_url.replace("sqlite+aiosqlite://", "sqlite://")


ORPHAN_CHILDREN = """
SELECT child.id FROM deployments child
JOIN tasks child_task ON child_task.id = child.task_id
WHERE child.parent_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM task_steps s
    WHERE s.task_id = child_task.parent_task_id AND s.child_task_id = child.task_id)
"""
# A question still open whose step does not wait on it.
ORPHAN_QUESTIONS = """
SELECT i.id FROM interruptions i
WHERE i.state = 'pending' AND NOT EXISTS (
    SELECT 1 FROM task_steps s
    WHERE s.task_id = i.task_id AND s.idx = i.step_idx
      AND s.state = 'waiting' AND s.interruption_id = i.id)
"""
# A step waiting on nothing: no open question and no child it knows.
WAITING_ON_NOTHING = """
SELECT s.task_id, s.idx FROM task_steps s
WHERE s.state = 'waiting' AND s.child_task_id IS NULL AND NOT EXISTS (
    SELECT 1 FROM interruptions i WHERE i.id = s.interruption_id)
"""
ENDINGS = """
SELECT d.document FROM events e JOIN event_documents d ON d.event_id = e.id
WHERE e.category IN ('DeploymentSucceeded', 'DeploymentFailed', 'DeploymentCanceled')
  AND d.document LIKE 'ServerTasks-%'
"""


def check_invariants(database_url: str) -> Counter[str]:
    """Read while the server is dead (no writer): what a kill left behind. Returns how many
    times each task was recorded as ended."""
    engine = create_engine(_sync_url(database_url))
    try:
        with engine.connect() as db:
            orphans = db.execute(text(ORPHAN_CHILDREN)).all()
            questions = db.execute(text(ORPHAN_QUESTIONS)).all()
            nothing = db.execute(text(WAITING_ON_NOTHING)).all()
            endings = Counter(row[0] for row in db.execute(text(ENDINGS)))
    finally:
        engine.dispose()
    assert not orphans, f"child deployments no parent step knows: {orphans}"
    assert not questions, f"open questions no step waits on: {questions}"
    assert not nothing, f"steps waiting on nothing: {nothing}"
    twice = {task: n for task, n in endings.items() if n > 1}
    assert not twice, f"tasks that ended more than once: {twice}"
    return endings


def drive(server: Restartable, tasks: list[str], until: float) -> bool:
    """Answer every open question with proceed until every task ended (or time is up)."""
    while time.monotonic() < until:
        for pending in server.api("GET", "/interruptions"):
            if pending["state"] == "pending":
                server.api(
                    "POST", f"/interruptions/{pending['id']}/submit", json={"result": "proceed"}
                )
        if all(server.task(t)["state"] in ENDED for t in tasks):
            return True
        time.sleep(0.1)
    return False


def test_sigkill_at_random_moments_leaves_no_orphan(
    stack: Restartable, database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(20261130)  # fixed: a failure can be replayed
    parents: list[str] = []
    for kill in range(KILLS):
        if kill % 4 == 0:  # a new deployment every few kills; the others keep running
            version = f"1.0.{kill}"
            stack.api("POST", "/projects/Leaf/releases", json={"version": version})
            stack.api("POST", "/projects/Stack/releases", json={"version": version})
            queued = stack.api(
                "POST",
                "/deployments",
                json={"project": "Stack", "version": version, "environment": "Dev"},
            )
            parents.append(queued["task"])
        # Let it run (answering questions) for a random moment, then cut the power.
        drive(stack, parents, time.monotonic() + rng.uniform(0.0, 1.5))
        stack.kill()
        check_invariants(database_url)
        stack.start()

    assert drive(stack, parents, time.monotonic() + 120), "some deployments never finished"
    children = [
        step["child_task"]
        for parent in parents
        for step in stack.task(parent)["steps"]
        if step["child_task"] is not None
    ]
    assert drive(stack, children, time.monotonic() + 30)
    stack.kill()
    endings = check_invariants(database_url)
    for task in parents + children:
        assert endings[task] == 1, f"{task} ended {endings[task]} times"
    stack.start()
    verified = run_conveyor(
        ("audit", "verify"),
        {**stack.env, "CONVEYOR_SERVER": stack.url, "CONVEYOR_API_KEY": stack.api_key},
        cwd=tmp_path,
    )
    assert verified.returncode == 0, describe(verified)


# The audit chain's head row (`audit_head`): every transaction that records an event locks it
# just before it commits, so holding it holds the server at its next event.
HOLD_THE_CHAIN = "SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE"
STEP_STATE = "SELECT state FROM task_steps WHERE task_id = :task AND idx = :idx"


def _until_step(db: Connection, task: int, idx: int, state: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = db.execute(text(STEP_STATE), {"task": task, "idx": idx}).scalar()
        db.rollback()  # the next read sees what committed since
        if found == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"step {idx} of task {task} never got {state}")


@pytest.fixture
def postgres_locks(database_url: str) -> None:
    """Before the server is set up: there is nothing to start where the test cannot run."""
    if not database_url.startswith("postgresql"):
        pytest.skip("holding the server at one write needs PostgreSQL's locks")


@pytest.mark.parametrize("project", ["Paused", "Asks"])
def test_sigkill_between_the_two_writes_of_one_event(
    postgres_locks: None, stack: Restartable, database_url: str, project: str
) -> None:
    """Deterministic, with PostgreSQL's own locks (nothing in the server knows about the test):
    the server is held just before the event (a child queued, a question raised) commits, the
    test locks the row of the step that must wait, lets the event commit and kills the server.
    Written as two transactions, the first one committed and the step's write then waited on
    the row: a child no parent step knows, or a question no step waits on. Written as one, the
    step's row was already the event's, so all of it committed or none."""
    stack.api("POST", "/projects/Leaf/releases", json={"version": "1.0.0"})
    stack.api("POST", f"/projects/{project}/releases", json={"version": "1.0.0"})
    queued = stack.api(
        "POST", "/deployments", json={"project": project, "version": "1.0.0", "environment": "Dev"}
    )
    task = int(queued["task"].rsplit("-", 1)[1])
    engine = create_engine(database_url)
    try:
        with engine.connect() as gate, engine.connect() as row:
            _until_step(gate, task, 0, "running")
            gate.execute(text(HOLD_THE_CHAIN))  # held until the gate's transaction ends
            _until_step(row, task, 1, "running")
            time.sleep(1.0)  # the server is now in the event's transaction, at the chain lock
            row.execute(
                text(
                    "SELECT 1 FROM task_steps WHERE task_id = :task AND idx = 1 "
                    "FOR UPDATE SKIP LOCKED"
                ),
                {"task": task},
            )
            gate.commit()
            time.sleep(1.0)  # the event commits; a second write would now wait on the row
            stack.kill()
            row.rollback()
    finally:
        engine.dispose()
    check_invariants(database_url)
    stack.start()
    assert drive(stack, [queued["task"]], time.monotonic() + 60)
    stack.kill()
    assert check_invariants(database_url)[queued["task"]] == 1
