"""A node that stops (SIGTERM, an upgrade, a rolling restart) cancels nothing: each running
task carries on to its next step and is handed over there, so another node (or this one,
restarted) continues it; a step still running after the grace period is stopped and handed over
as interrupted, at once instead of when its lease would have expired."""

from __future__ import annotations

import asyncio
import os

from conveyor.engine.node import Node
from conveyor.services import queue, tasks
from conveyor.services.core import Caller, Services
from tests.integration.test_engine import deploy, finished, log_text, project, setup

TWO_STEPS = """        - name: First
          type: script
          script: sleep 1; echo first done
        - name: Second
          type: script
          script: echo second done
"""


async def _until_running(services: Services, admin: Caller, ref: str, idx: int) -> None:
    for _ in range(400):
        if (await tasks.get_task(services, admin, ref))["steps"][idx]["state"] == "running":
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"step {idx} of {ref} never started")


async def test_a_stopping_node_hands_its_task_over_at_the_next_step(
    services: Services, admin: Caller
) -> None:
    await setup(services, admin, project("Handed", TWO_STEPS))
    first = Node(services, slots=4, name=f"stopping-{os.getpid()}")
    await first.start()
    ref = await deploy(services, admin, "Handed")
    await _until_running(services, admin, ref, 0)
    await first.stop()  # within the grace period: the first step ends, the second waits

    between = await tasks.get_task(services, admin, ref)
    assert between["state"] == "executing", between
    assert [s["state"] for s in between["steps"]] == ["success", "pending"]

    second = Node(services, slots=4, name=f"taking-{os.getpid()}")
    await second.start()
    try:
        done = await finished(services, admin, ref, waiting=False)
    finally:
        await second.stop()
    assert done["state"] == "success", done
    log = await log_text(services, admin, ref)
    assert log.count("first done") == 1 and log.count("second done") == 1
    assert "This server is stopping: another one carries on from here" in log


async def test_a_step_running_past_the_grace_period_is_interrupted_and_handed_over(
    services: Services, admin: Caller
) -> None:
    steps = """        - name: Long
          type: script
          script: sleep 60
"""
    await setup(services, admin, project("Long", steps))
    services.settings.stop_grace_seconds = 0.5
    node = Node(services, slots=4, name=f"grace-{os.getpid()}")
    await node.start()
    ref = await deploy(services, admin, "Long")
    await _until_running(services, admin, ref, 0)
    await node.stop()

    after = await tasks.get_task(services, admin, ref)
    assert after["steps"][0]["state"] == "failed"
    assert after["steps"][0]["reason"] == queue.STOPPED
    # Handed over now, not when the lease expires: any node may claim it at once.
    resumed = await queue.claim(services, "another-node", node.lease)
    assert resumed is not None
