"""Leases fence a run: once another node took a task over, the node that held it (frozen past
its lease, then continuing) can write nothing more, neither a step, nor the task's end, nor a
log line. And two nodes claiming at once never run two deployments of one project to one
environment. Real databases, real claims; the takeover is the one the heartbeat makes."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from conveyor.domain import runtime as rt
from conveyor.domain.runtime import Lease, LeaseLost, Outcome
from conveyor.services import execution as ex
from conveyor.services import queue, tasks
from conveyor.services.config import parse_public_id
from conveyor.services.core import Caller, Services, bootstrap, utcnow
from conveyor.services.users import create_api_key
from conveyor.settings import Settings
from conveyor.store import tables as t
from tests.integration.test_engine import deploy, project, setup

LEASE = timedelta(seconds=30)
SCRIPT = "        - name: Work\n          type: script\n          script: 'true'\n"


def _id(public: str) -> int:
    found = parse_public_id("tasks", public)
    assert found is not None
    return found


async def _expire_and_take_over(services: Services) -> list[int]:
    """node-b's heartbeat, a minute later: the leases of the frozen node-a have expired."""
    services.clock = lambda: utcnow() + timedelta(minutes=1)
    try:
        return await queue.recover(services, "node-b", own_tasks_too=False)
    finally:
        services.clock = utcnow


async def test_a_node_that_lost_its_lease_writes_nothing_more(
    services: Services, admin: Caller
) -> None:
    await setup(services, admin, project("Fenced", SCRIPT))
    task = _id(await deploy(services, admin, "Fenced"))
    first = await queue.claim(services, "node-a", LEASE)
    assert first == Lease(task, 1)
    run = await ex.load_run(services, first)
    await ex.started(services, run)
    await ex.begin_step(services, run, 0)

    # node-a freezes; node-b takes the task over and runs it again under a new epoch.
    assert await _expire_and_take_over(services) == [task]
    second = await queue.claim(services, "node-b", LEASE)
    assert second == Lease(task, 3)  # moved on by the takeover, and again by the claim

    # node-a continues: its step's end, the task's end and its log lines are all refused.
    with pytest.raises(LeaseLost):
        await ex.end_step(services, run, 0, Outcome.succeeded())
    with pytest.raises(LeaseLost):
        await ex.finish(services, run, rt.fail_internally(run.task, "late"))
    with pytest.raises(LeaseLost):
        await ex.cancel(services, run)
    dropped = await ex.write_logs(
        services,
        [
            {
                "task_id": task,
                "epoch": 1,
                "at": utcnow(),
                "step": 0,
                "level": "info",
                "line": "late line from the frozen node",
            },
            {
                "task_id": task,
                "epoch": 3,
                "at": utcnow(),
                "step": 0,
                "level": "info",
                "line": "line from the node that holds it",
            },
        ],
    )
    assert dropped == 1

    seen = await tasks.get_task(services, admin, f"ServerTasks-{task}")
    assert seen["state"] == "executing"
    assert seen["steps"][0]["state"] == "failed"
    assert seen["steps"][0]["reason"] == queue.STOPPED
    log = await tasks.task_log(services, admin, f"ServerTasks-{task}")
    lines = [line["line"] for line in log["lines"]]
    assert "line from the node that holds it" in lines
    assert "late line from the frozen node" not in lines

    # The holder's writes go through.
    holder = await ex.load_run(services, second)
    await ex.finish(services, holder, rt.finish(holder.task))
    assert (await tasks.get_task(services, admin, f"ServerTasks-{task}"))["state"] == "failed"


async def test_renewing_tells_a_node_which_tasks_it_lost(services: Services, admin: Caller) -> None:
    await setup(services, admin, project("One", SCRIPT), project("Two", SCRIPT))
    await deploy(services, admin, "One")
    await deploy(services, admin, "Two")
    held = await queue.claim_many(services, "node-a", LEASE, 2)
    assert len(held) == 2
    renewal = await queue.renew(services, "node-a", held, LEASE)
    assert renewal.lost == set() and renewal.cancel == set()

    await _expire_and_take_over(services)
    retaken = await queue.claim(services, "node-b", LEASE)
    assert retaken is not None
    renewal = await queue.renew(services, "node-a", held, LEASE)
    assert renewal.lost == {lease.task_id for lease in held}


async def test_two_nodes_claiming_at_once_run_one_deployment_per_pair(
    services: Services, admin: Caller, settings: Settings
) -> None:
    """Two processes' worth of claims racing over 3 projects x 8 deployments each: at no point
    do two tasks of one project and environment hold it, and every task is claimed once."""
    await setup(services, admin, *(project(f"Race {i}", SCRIPT) for i in range(3)))
    for _ in range(8):
        for i in range(3):
            await deploy(services, admin, f"Race {i}")
    other = bootstrap(settings)  # a second node: its own engine and connection pool
    try:
        claimed: list[Lease] = []
        for _ in range(12):
            a, b = await asyncio.gather(
                queue.claim_many(services, "node-a", LEASE, 5),
                queue.claim_many(other, "node-b", LEASE, 5),
            )
            claimed += a + b
            async with services.read() as session:
                running = (
                    (
                        await session.execute(
                            select(t.tasks.c.concurrency_key).where(t.tasks.c.state == "executing")
                        )
                    )
                    .scalars()
                    .all()
                )
            assert len(running) == len(set(running)), f"two tasks hold one pair: {running}"
            # The running ones end, so the next in each pair becomes claimable.
            async with services.write() as session:
                await session.execute(
                    t.tasks.update()
                    .where(t.tasks.c.state == "executing")
                    .values(state="success", node=None)
                )
        ids = [lease.task_id for lease in claimed]
        assert len(ids) == len(set(ids)) == 24
    finally:
        await other.close()


async def test_a_node_frozen_inside_a_transaction_does_not_hold_the_others(
    settings: Settings, admin: Caller, services: Services
) -> None:
    """A node stopped (SIGSTOP, a paused VM) between two statements of a transaction holds its
    row locks: here the audit chain's head, which every audited write takes. PostgreSQL ends
    its session after the lease, so the other nodes wait at most that long."""
    if services.is_sqlite:
        pytest.skip("one node only on SQLite")
    frozen = bootstrap(settings.model_copy(update={"lease_seconds": 2.0}))
    try:
        conn = await frozen.engine.connect()
        await conn.begin()
        await conn.execute(
            select(t.audit_head.c.id).where(t.audit_head.c.id == 1).with_for_update()
        )
        started = asyncio.get_running_loop().time()
        # Another node writes an audited change meanwhile; the frozen one does nothing.
        await asyncio.wait_for(
            create_api_key(services, admin, "admin", "while another node is frozen"), 15
        )
        waited = asyncio.get_running_loop().time() - started
        with pytest.raises(DBAPIError):  # the frozen node's session is gone
            await conn.execute(select(1))
        with contextlib.suppress(Exception):
            await conn.close()
        assert 1.5 < waited < 10, f"the audited write waited {waited:.1f} s"
    finally:
        await frozen.close()
