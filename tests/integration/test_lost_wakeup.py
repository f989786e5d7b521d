"""A parent never waits forever for a child that has ended (issue 11).

A child's end wakes its parent in the child's transaction, and a suspending parent checks for a
child that ended meanwhile in its own; on PostgreSQL's read committed the two can miss each other
(seen once in the full suite: a Deploy All stuck waiting). The race itself cannot be scheduled
from outside, so this test leaves the database exactly as that race does, a child ended and its
waiting parent not woken, and expects the node's heartbeat to wake the parent.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from conveyor.engine.node import Node
from conveyor.services import releases, tasks
from conveyor.services.config import parse_public_id
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.integration.test_engine import deploy, engine, finished, project, setup

__all__ = ["engine"]  # the fixture, imported for its name

LEAF = """        - name: Approve
          type: manual_intervention
          instructions: Wait here
"""
PARENT = """        - name: Child
          type: deploy_release
          project: Leaf
"""


async def test_a_parent_whose_child_ended_unseen_is_woken_by_the_heartbeat(
    services: Services, admin: Caller, engine: Node
) -> None:
    await setup(services, admin, project("Leaf", LEAF), project("Parent", PARENT))
    await releases.create_release(services, admin, "Leaf")
    parent = await deploy(services, admin, "Parent")
    child = None
    for _ in range(200):
        view = await tasks.get_task(services, admin, parent)
        if view["children"] and view["children"][0]["state"] == "waiting":
            child = view["children"][0]["id"]
            break
        await asyncio.sleep(0.05)
    assert child is not None, "the child never came to wait for its approval"
    # What the lost wake-up leaves: the child ended, the parent still suspended and not woken.
    child_id = parse_public_id("tasks", child)
    async with services.write() as session:
        await session.execute(
            update(t.tasks)
            .where(t.tasks.c.id == child_id)
            .values(state="success", completed_at=services.clock(), node=None)
        )
        await session.execute(
            update(t.deployments)
            .where(t.deployments.c.task_id == child_id)
            .values(state="success", completed_at=services.clock())
        )
    ended = await finished(services, admin, parent, timeout=20, waiting=False)
    assert ended["state"] == "success", ended
