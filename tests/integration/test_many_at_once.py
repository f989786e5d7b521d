"""Many deployments at once on one node (issue 11, item 6): real scripts, SQLite and PostgreSQL.

A node with its default settings runs them all at the same time; every task's log is complete
and in order (the script numbers its lines: contiguous, nothing lost, nothing duplicated) with
secrets masked; the node's one log writer takes every task's lines in one INSERT per round,
bounds its memory, and writes what is buffered when a task ends and when the node stops.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select

from conveyor.engine import logs
from conveyor.engine.logs import LogWriter, TaskLog
from conveyor.engine.node import Node
from conveyor.services import execution as ex
from conveyor.services import queue, tasks
from conveyor.services.config import parse_public_id
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from conveyor.store.db import sync_url
from tests.e2e.conftest import describe, run_conveyor, stop
from tests.e2e.test_crash import Restartable, _deploy
from tests.integration.test_engine import deploy, finished, project, setup

COUNT = 24
LINES = 1500
SECRET = "s3cret-in-every-log"
TERMINAL = ("success", "failed", "canceled", "timed_out")


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, delta in edges:
        running += delta
        best = max(best, running)
    return best


async def lines_of(services: Services, admin: Caller, task: str) -> list[str]:
    got: list[str] = []
    after = 0
    while True:
        page = await tasks.task_log(services, admin, task, after=after, limit=5000)
        got += [line["line"] for line in page["lines"]]
        if page["next"] == after:
            return got
        after = page["next"]


async def task_ids(services: Services, task: str) -> int:
    task_id = parse_public_id("tasks", task)
    assert task_id is not None
    return task_id


async def test_a_node_with_default_settings_runs_them_all_at_once_with_complete_logs(
    services: Services, admin: Caller
) -> None:
    # Each script prints numbered lines, then waits at a barrier that opens only once all of
    # them are connected to it at the same moment (so the node must run them all at once, however
    # slow the machine), then prints more; the sensitive value it echoes must be masked in every
    # one of the logs.
    waiting: list[asyncio.StreamWriter] = []
    everyone = asyncio.Event()

    async def arrive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        waiting.append(writer)
        if len(waiting) == COUNT:
            everyone.set()
            for each in waiting:
                each.write(b"go\n")
                await each.drain()

    barrier = await asyncio.start_server(arrive, "127.0.0.1", 0)
    port = barrier.sockets[0].getsockname()[1]
    script = (
        f'seq -f "first %g #{{Password}}" 1 {LINES}; '
        f"exec 3<>/dev/tcp/127.0.0.1/{port}; read -r -t 90 go <&3; "
        f'seq -f "second %g" 1 {LINES}'
    )
    steps = f"""        - name: Chatty
          type: script
          script: '{script}'
"""
    variables = f"""      - name: Password
        value: {SECRET}
        sensitive: true
"""
    await setup(services, admin, *(project(f"App {i}", steps, variables) for i in range(COUNT)))
    node = Node(services, name=f"many-{os.getpid()}")  # default slots, as a server runs
    await node.start()
    try:
        task_refs = await asyncio.gather(
            *(deploy(services, admin, f"App {i}") for i in range(COUNT))
        )
        results = [await finished(services, admin, ref, timeout=120) for ref in task_refs]
    finally:
        await node.stop()
        barrier.close()
        for each in waiting:
            each.close()
    assert everyone.is_set(), f"only {len(waiting)} of {COUNT} scripts ever ran at once"
    assert [r["state"] for r in results] == ["success"] * COUNT, results
    for ref in task_refs:
        lines = await lines_of(services, admin, ref)
        first = [line for line in lines if line.startswith("first ")]
        second = [line for line in lines if line.startswith("second ")]
        assert first == [f"first {i} ********" for i in range(1, LINES + 1)], ref
        assert second == [f"second {i}" for i in range(1, LINES + 1)], ref
        assert not any(SECRET in line for line in lines)
        assert lines[-1] == "The deployment succeeded"
    # All at once: with the old default of 10 slots at most 10 scripts overlapped.
    ids = [await task_ids(services, ref) for ref in task_refs]
    async with services.read() as session:
        spans = (
            await session.execute(
                select(t.task_steps.c.started_at, t.task_steps.c.completed_at).where(
                    t.task_steps.c.task_id.in_(ids)
                )
            )
        ).all()
    assert max_overlap([(aware(s.started_at), aware(s.completed_at)) for s in spans]) == COUNT


async def write_counted(services: Services, calls: list[int]) -> Any:
    async def write(rows: list[dict[str, Any]]) -> None:
        calls.append(len(rows))
        await ex.write_logs(services, rows)

    return write


async def queued_task(services: Services, admin: Caller) -> int:
    """A real task row to log against (no node runs it)."""
    await setup(
        services,
        admin,
        project("Quiet", "        - name: S\n          type: script\n          script: 'true'\n"),
    )
    return await task_ids(services, await deploy(services, admin, "Quiet"))


async def test_one_writer_takes_every_tasks_lines_in_one_insert(
    services: Services, admin: Caller
) -> None:
    """Fifty tasks logging at once: one INSERT for all of them, not one (or more) per task."""
    task_id = await queued_task(services, admin)
    calls: list[int] = []
    writer = LogWriter(await write_counted(services, calls))
    task_logs = [writer.open(task_id) for _ in range(50)]
    for n, task_log in enumerate(task_logs):
        for i in range(100):
            task_log.line(f"log {n} line {i}")
    await asyncio.gather(*(task_log.flush() for task_log in task_logs))
    await writer.close()
    assert calls == [5000]
    async with services.read() as session:
        stored = (
            (
                await session.execute(
                    select(t.task_logs.c.line)
                    .where(t.task_logs.c.task_id == task_id)
                    .order_by(t.task_logs.c.id)
                )
            )
            .scalars()
            .all()
        )
    # Each task's lines in the order logged, the tasks one after the other.
    assert stored == [f"log {n} line {i}" for n in range(50) for i in range(100)]


async def test_memory_is_bounded_a_fast_producer_waits_for_the_database(
    services: Services, admin: Caller
) -> None:
    task_id = await queued_task(services, admin)
    calls: list[int] = []
    writer = LogWriter(await write_counted(services, calls))
    task_log = writer.open(task_id)
    most = 0
    total = logs.MAX_BUFFERED_LINES * 3
    for i in range(total):  # what the script output reader does with each line
        full = task_log.line(f"line {i}")
        most = max(most, writer.buffered_lines)
        if full is not None:
            await full
    await task_log.close()
    await writer.close()
    assert most <= logs.MAX_BUFFERED_LINES
    assert sum(calls) == total
    async with services.read() as session:
        count = (
            await session.execute(select(func.count()).where(t.task_logs.c.task_id == task_id))
        ).scalar_one()
    assert count == total


async def test_a_canceled_script_waiting_for_room_does_not_cancel_the_others(
    services: Services, admin: Caller
) -> None:
    """Two scripts' readers wait for the full buffers; one is canceled (its task was): the other
    still gets room and its lines are written."""
    task_id = await queued_task(services, admin)
    writer = LogWriter(await write_counted(services, []))
    first, second = writer.open(task_id), writer.open(task_id)
    full = None
    while full is None:
        full = first.line("filler")
    later = second.line("after the wait")
    assert later is not None

    async def reader(room: Awaitable[None]) -> None:  # as the runner's output reader waits
        await room

    waits_first = asyncio.create_task(reader(full))
    waits_second = asyncio.create_task(reader(later))
    await asyncio.sleep(0)
    waits_first.cancel()
    await asyncio.wait_for(waits_second, timeout=30)  # CancelledError here before the fix
    await second.flush()
    await writer.close()
    async with services.read() as session:
        stored = (
            await session.execute(
                select(t.task_logs.c.line, func.count())
                .where(t.task_logs.c.task_id == task_id)
                .group_by(t.task_logs.c.line)
            )
        ).all()
    assert sorted((line, count) for line, count in stored) == [
        ("after the wait", 1),
        ("filler", logs.MAX_BUFFERED_LINES),
    ]


async def test_a_burst_is_claimed_in_one_transaction_one_per_project_and_environment(
    services: Services, admin: Caller
) -> None:
    """Claiming many at once keeps the rule: of two deployments of one project to one
    environment the second waits, also when both would fit in the same claim."""
    script = "        - name: S\n          type: script\n          script: 'true'\n"
    await setup(services, admin, *(project(f"Burst {i}", script) for i in range(4)))
    refs = [await deploy(services, admin, f"Burst {i}") for i in range(4)]
    refs.append(await deploy(services, admin, "Burst 0"))  # behind the first one
    ids = [await task_ids(services, ref) for ref in refs]
    claimed = await queue.claim_many(services, "burst-node", timedelta(seconds=30), 10)
    assert [lease.task_id for lease in claimed] == ids[:4]
    blocked = await tasks.get_task(services, admin, refs[4])
    assert blocked["state"] == "queued"
    assert blocked["queue_reason"].startswith(f"waiting for {refs[0]}")
    assert await queue.claim_many(services, "burst-node", timedelta(seconds=30), 10) == []


async def test_a_script_flooding_output_waits_for_the_database_not_the_servers_memory(
    services: Services, admin: Caller
) -> None:
    """The real path: script -> runner -> step -> log. `seq` prints far faster than any
    database takes rows; the node's buffers stay within their bound, and nothing is lost."""
    total = 300_000
    steps = f"""        - name: Flood
          type: script
          script: seq 1 {total}
"""
    await setup(services, admin, project("Flood", steps))
    node = Node(services, name=f"flood-{os.getpid()}")
    await node.start()
    most = 0
    try:
        ref = await deploy(services, admin, "Flood")
        while (await tasks.get_task(services, admin, ref))["state"] not in TERMINAL:
            for _ in range(20):
                most = max(most, node.executor.logs.buffered_lines)
                await asyncio.sleep(0.005)
    finally:
        await node.stop()
    assert most <= logs.MAX_BUFFERED_LINES + 10, most
    numbers = [line for line in await lines_of(services, admin, ref) if line.isdigit()]
    assert numbers == [str(i) for i in range(1, total + 1)]


async def test_a_task_log_is_complete_the_moment_the_task_has_finished(
    services: Services, admin: Caller
) -> None:
    """`task log` right after `task wait`: the writer flushed before the end was recorded."""
    steps = """        - name: Loud
          type: script
          script: 'seq -f "n %g" 1 20000'
"""
    await setup(services, admin, project("Loud", steps))
    node = Node(services, name=f"loud-{os.getpid()}")
    await node.start()
    try:
        ref = await deploy(services, admin, "Loud")
        while (await tasks.get_task(services, admin, ref))["state"] not in ("success", "failed"):
            await asyncio.sleep(0.01)
        lines = await lines_of(services, admin, ref)  # no wait between the two
    finally:
        await node.stop()
    assert [line for line in lines if line.startswith("n ")] == [f"n {i}" for i in range(1, 20001)]
    assert lines[-1] == "The deployment succeeded"


async def test_lines_still_buffered_are_written_when_the_node_stops(
    services: Services, admin: Caller
) -> None:
    task_id = await queued_task(services, admin)
    # No task slots: the queued task is only something to log against. A node that took it
    # would hand it over on stopping and log so, between the lines this test counts.
    node = Node(services, slots=0, name=f"stopping-{os.getpid()}")
    await node.start()
    task_log: TaskLog = node.executor.logs.open(task_id)
    for i in range(10):
        task_log.line(f"last words {i}")
    await node.stop()  # well within FLUSH_SECONDS: only the final flush can have written them
    async with services.read() as session:
        stored = (
            (
                await session.execute(
                    select(t.task_logs.c.line)
                    .where(t.task_logs.c.task_id == task_id)
                    .order_by(t.task_logs.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert stored == [f"last words {i}" for i in range(10)]


async def test_a_nul_character_in_script_output_does_not_fail_the_task(
    services: Services, admin: Caller
) -> None:
    """PostgreSQL text cannot hold NUL: the whole batch (every task's lines) was refused."""
    steps = """        - name: Binary
          type: script
          script: printf 'before\\0after\\n'; echo done
"""
    await setup(services, admin, project("Binary", steps))
    node = Node(services, name=f"nul-{os.getpid()}")
    await node.start()
    try:
        ref = await deploy(services, admin, "Binary")
        result = await finished(services, admin, ref, waiting=False)
    finally:
        await node.stop()
    lines = await lines_of(services, admin, ref)
    assert result["state"] == "success", lines
    assert "before\ufffdafter" in lines and "done" in lines


KILL_CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Dev only
    phases:
      - name: Dev
        environments: [Dev]
project_groups:
  - name: Kill
projects:
  - name: Finisher
    group: Kill
    lifecycle: Dev only
    process:
      steps:
        - name: Count
          type: script
          script: seq -f "n %g" 1 30000
  - name: Flood
    group: Kill
    lifecycle: Dev only
    process:
      steps:
        - name: Forever
          type: script
          script: while true; do seq -f "flood %g" 1 10000; done
"""


def test_sigkill_right_after_a_task_finished_loses_none_of_its_log(
    database_url: str, tmp_path: Path
) -> None:
    """A real server, its log writer kept busy by a script flooding output (the buffers full):
    the moment another task is reported finished, the server is killed with SIGKILL. That
    task's 30,000 lines were all in the database already: none lost, none twice, in order."""
    server = Restartable(tmp_path, database_url)
    try:
        server.start()
        config = tmp_path / "kill.yaml"
        config.write_text(KILL_CONFIG)
        env = {**server.env, "CONVEYOR_SERVER": server.url, "CONVEYOR_API_KEY": server.api_key}
        applied = run_conveyor(("apply", "-f", str(config)), env, cwd=tmp_path)
        assert applied.returncode == 0, describe(applied)
        flood = _deploy(server, "Flood")
        server.until(flood, lambda t: t["steps"][0]["state"] == "running")
        finisher = _deploy(server, "Finisher")
        done = server.until(finisher, lambda t: t["state"] in TERMINAL, timeout=60)
        server.kill()
    finally:
        if server.proc is not None:
            stop(server.proc)
    assert done["state"] == "success", done
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            task_id = parse_public_id("tasks", finisher)
            stored = (
                conn.execute(
                    select(t.task_logs.c.line)
                    .where(t.task_logs.c.task_id == task_id)
                    .order_by(t.task_logs.c.id)
                )
                .scalars()
                .all()
            )
            flooded = conn.execute(
                select(func.count()).where(t.task_logs.c.task_id == parse_public_id("tasks", flood))
            ).scalar_one()
    finally:
        engine.dispose()
    assert [line for line in stored if line.startswith("n ")] == [f"n {i}" for i in range(1, 30001)]
    assert stored[-1] == "The deployment succeeded"
    assert flooded > 10_000  # the writer really was busy with the other task meanwhile
