"""A node frozen (SIGSTOP) past its lease, then continued (SIGCONT): a VM paused, a long GC, a
process stopped in a debugger. The frozen node wakes up believing it still runs its tasks;
fencing must refuse every write it then makes, so the takeover stands: the tasks stay failed and
their next step never runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multinode.conftest import Cluster, cluster, until
from tests.multinode.takeover import (
    all_ended,
    assert_each_ended_once_as_failed,
    assert_interrupted_and_not_continued,
    deploy,
    long_running,
    task_project,
    three_step_config,
)

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 4  # short: the test waits for it to run out


@pytest.fixture
def freezable(pg_template: str, tmp_path: Path) -> Iterator[Cluster]:
    # Long waits for a file the test drops into its folder: the test decides when it ends.
    config = three_step_config(
        "while [ ! -e go ]; do sleep 0.1; done", "Ends while frozen", "Ends after thaw"
    )
    nodes = {"sleeper": {"task_slots": 4, "lease_seconds": LEASE_SECONDS}}
    with cluster(pg_template, tmp_path, config, nodes) as made:
        yield made


def test_a_node_frozen_past_its_lease_does_not_overwrite_the_takeover(
    freezable: Cluster,
) -> None:
    sleeper = freezable["sleeper"]
    frozen_end = deploy(sleeper, "Ends while frozen")
    thawed_end = deploy(sleeper, "Ends after thaw")
    tasks = [frozen_end, thawed_end]
    until(lambda: all(long_running(sleeper, t) for t in tasks), 30, "Long running", freezable.logs)
    taker = freezable.add("taker", task_slots=4, lease_seconds=LEASE_SECONDS)
    assert freezable.running_on() == dict.fromkeys(tasks, "sleeper")

    sleeper.freeze()
    frozen_at = time.monotonic()
    # This script ends while its node is frozen: the node finds it done when it wakes up.
    _go(freezable, frozen_end)
    ended = until(
        lambda: all_ended(taker, tasks),
        30,
        "the taker ending the frozen node's tasks",
        freezable.logs,
    )
    taken_over_after = time.monotonic() - frozen_at
    for task in ended:
        assert_interrupted_and_not_continued(task, freezable)

    sleeper.thaw()
    thawed_at = time.monotonic()
    # This one ends after its node woke up (unless fencing stopped it first).
    _go(freezable, thawed_end)
    time.sleep(3)  # ample for a woken node to write what it believes: its heartbeat is 0.4 s

    assert sleeper.proc is not None and sleeper.proc.poll() is None, freezable.logs()
    print(
        f"\nfrozen {thawed_at - frozen_at:.1f} s (lease {LEASE_SECONDS} s); "
        f"taken over {taken_over_after:.1f} s after the freeze"
    )
    for task in tasks:
        assert_interrupted_and_not_continued(taker.task(task), freezable)
        project = task_project(taker, task)
        lines = [line for line in freezable.marks("dev", project) if line.startswith(f"{task} ")]
        # The interrupted step's script may have finished (it outlived the freeze), but no
        # step ran twice and the step after it never ran.
        assert lines[:2] == [f"{task} before", f"{task} long-start"], lines
        assert set(lines[2:]) <= {f"{task} long-done"} and len(lines) <= 3, lines
    assert_each_ended_once_as_failed(freezable, tasks)
    assert "lost the lease" in sleeper.log(), sleeper.log()
    freezable.verify_audit()


def _go(made: Cluster, task: str) -> None:
    """Let the Long step of ``task`` finish: drop the file its script waits for."""
    project = task_project(made.any, task)
    (made.data_dir / "targets" / "box" / "dev" / project / "go").touch()
