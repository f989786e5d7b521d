"""One writer for the runtime, one transaction per engine event (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conveyor.domain.errors import InvalidTransition
from conveyor.domain.interruptions import Kind
from conveyor.domain.runtime import Lease
from conveyor.engine.node import Node
from conveyor.services import execution as ex
from conveyor.services import interruptions, tasks
from conveyor.services.config import parse_public_id
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.integration.test_engine import deploy, engine, finished, project, setup

__all__ = ["engine"]  # the fixture, used by name below

LEAF = "        - name: S\n          type: script\n          script: echo leaf\n"
PARENT = "        - name: Child\n          type: deploy_release\n          project: Leaf\n"
APPROVE = (
    "        - name: Approve\n          type: manual_intervention\n          instructions: Go?\n"
)


def _id(public: str) -> int:
    found = parse_public_id("tasks", public)
    assert found is not None
    return found


async def _count(services: Services, query: object) -> int:
    async with services.read() as session:
        return int((await session.execute(query)).scalar_one())  # type: ignore[call-overload]


async def test_a_child_is_queued_only_together_with_its_parent_step(
    services: Services, admin: Caller
) -> None:
    """No engine runs: the test makes each move itself. A parent step that may not wait (it
    never started) refuses the child, and the child queued in that transaction goes with it;
    before, the child was committed first and the step written in a second transaction."""
    await setup(services, admin, project("Leaf", LEAF), project("Parent", PARENT))
    await deploy(services, admin, "Leaf")  # the release the parent release chooses
    parent_task = _id(await deploy(services, admin, "Parent"))
    run = await ex.load_run(services, Lease(parent_task, 0))  # as queued, before any claim
    choice = run.release.children[0]
    children = select(func.count()).where(t.deployments.c.parent_id == run.deployment_id)

    with pytest.raises(InvalidTransition, match="cannot wait for a child"):
        await ex.start_child(services, run, 0, choice, [])
    assert await _count(services, children) == 0, "a child was left without its parent step"

    await ex.begin_step(services, run, 0)
    child_task = await ex.start_child(services, run, 0, choice, [])
    async with services.read() as session:
        step = (
            await session.execute(
                select(t.task_steps).where(
                    t.task_steps.c.task_id == parent_task, t.task_steps.c.idx == 0
                )
            )
        ).one()
        child = (await session.execute(select(t.tasks).where(t.tasks.c.id == child_task))).one()
    assert (step.state, step.child_task_id) == ("waiting", child_task)
    assert child.parent_task_id == parent_task
    assert await _count(services, children) == 1


async def test_an_interruption_is_raised_only_together_with_the_waiting_step(
    services: Services, admin: Caller
) -> None:
    await setup(services, admin, project("Asks", APPROVE))
    task = _id(await deploy(services, admin, "Asks"))
    run = await ex.load_run(services, Lease(task, 0))
    asked = select(func.count()).where(t.interruptions.c.task_id == task)
    question = {
        "kind": Kind.MANUAL_INTERVENTION.value,
        "title": "Go?",
        "instructions": "Go?",
        "responsible_teams": (),
        "settings": {},
    }

    with pytest.raises(InvalidTransition, match="cannot wait for a person"):
        await ex.raise_interruption(services, run, 0, **question)  # type: ignore[arg-type]
    assert await _count(services, asked) == 0, "an interruption was left with no step waiting"

    await ex.begin_step(services, run, 0)
    raised = await ex.raise_interruption(services, run, 0, **question)  # type: ignore[arg-type]
    async with services.read() as session:
        step = (
            await session.execute(select(t.task_steps).where(t.task_steps.c.task_id == task))
        ).one()
    assert (step.state, step.interruption_id) == ("waiting", raised)
    assert await _count(services, asked) == 1


async def test_a_resumed_task_holds_its_project_and_environment(
    services: Services, admin: Caller, engine: Node
) -> None:
    """After an approval the task runs again: it shows executing, and another deployment of the
    same project to the same environment queues behind it. Before, the resumed task still said
    "waiting for a person", held nothing, and the second deployment ran at the same time."""
    slow = "        - name: Slow\n          type: script\n          script: sleep 3\n"
    await setup(services, admin, project("Resumes", APPROVE + slow))
    first = await deploy(services, admin, "Resumes")
    waiting = await finished(services, admin, first)
    assert waiting["state"] == "waiting"
    pending = await interruptions.list_interruptions(services, admin)
    await interruptions.submit(services, admin, pending[0]["id"], "proceed")
    for _ in range(200):
        now = await tasks.get_task(services, admin, first)
        if now["steps"][1]["state"] == "running":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the slow step never started: {now}")
    assert now["state"] == "executing"

    second = await deploy(services, admin, "Resumes", skip=["Approve"])
    await asyncio.sleep(1.0)  # the engine has had time to claim it, had it been free
    behind = await tasks.get_task(services, admin, second)
    assert behind["state"] == "queued", behind
    assert first in (behind["queue_reason"] or "")
    assert (await finished(services, admin, first, waiting=False))["state"] == "success"
    assert (await finished(services, admin, second, waiting=False))["state"] == "success"


RUNTIME_TABLES = ("tasks", "deployments", "task_steps", "interruptions", "dashboard")
ALLOWED = {Path("conveyor/store/runs.py")}  # claims, leases and takeovers included


def test_only_the_run_store_writes_the_runtime_tables() -> None:
    root = Path(__file__).resolve().parents[2]
    tables = "|".join(RUNTIME_TABLES)
    write = re.compile(
        rf"(?:update|insert|delete)\(\s*(?:t\.)?(?:{tables})\b"
        rf"|\b(?:t\.)?(?:{tables})\.(?:update|insert|delete)\("
    )
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted((root / "conveyor").rglob("*.py"))
        if path.relative_to(root) not in ALLOWED and "migrations" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if write.search(line)
    ]
    assert not offenders, offenders
