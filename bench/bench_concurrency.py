"""Many deployments at once on one node, with its default settings.

Run: .venv/bin/python bench/bench_concurrency.py [--deployments 100] [--seconds 5]
     [--lines 200000] [--postgres URL]

1. ``--deployments`` projects, each a release whose one script step sleeps ``--seconds``, are
   deployed at once (``asyncio.gather`` of the deploy service call, as many API requests would).
   Printed: submission time, wall time from the first submission to the last success, the most
   scripts running at the same moment (from the steps' recorded start and end), how far apart
   the tasks were claimed and their scripts started, and the wall time against the ideal (one
   script's duration).
2. While they run, the dashboard is asked every 50 ms (the API's own handler, in the node's
   event loop, as in the server): its p50 and p95.
3. One script prints ``--lines`` lines: ingestion rate = lines stored / (task end - step start),
   and the peak over one-second windows (the log's row count sampled while it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select
from throwaway_db import pg_database

from conveyor.api.routers.deployments import dashboard
from conveyor.engine.node import Node
from conveyor.services import deployments, releases
from conveyor.services.access import caller_for_user, get_user
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, bootstrap
from conveyor.services.users import initialise
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.db import upgrade

TERMINAL = ("success", "failed", "canceled", "timed_out")
HEAD = """
environments:
  - name: Bench
lifecycles:
  - name: Bench
    phases:
      - name: Bench
        environments: [Bench]
project_groups:
  - name: Bench
projects:
"""


def project(name: str, script: str) -> str:
    return (
        f"  - name: {name}\n    group: Bench\n    lifecycle: Bench\n    process:\n      steps:\n"
        f"        - name: Run\n          type: script\n          script: {script}\n"
    )


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def wait_all(services: Services, task_ids: list[int]) -> list[Any]:
    while True:
        async with services.read() as session:
            rows = (await session.execute(select(t.tasks).where(t.tasks.c.id.in_(task_ids)))).all()
        if all(r.state in TERMINAL for r in rows):
            return list(rows)
        await asyncio.sleep(0.25)


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, delta in events:
        running += delta
        best = max(best, running)
    return best


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sample_dashboard(services: Services, admin: Caller, stop: asyncio.Event) -> list[float]:
    times: list[float] = []
    while not stop.is_set():
        start = time.perf_counter()
        await dashboard(services, admin)
        times.append(time.perf_counter() - start)
        await asyncio.sleep(0.05)
    return times


async def concurrent(services: Services, admin: Caller, count: int, seconds: float) -> None:
    names = [f"App {i}" for i in range(count)]
    versions = [(await releases.create_release(services, admin, n)).version for n in names]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_dashboard(services, admin, stop))
    start = time.perf_counter()
    began = datetime.now(UTC)
    queued = await asyncio.gather(
        *(
            deployments.deploy(services, admin, n, v, "Bench")
            for n, v in zip(names, versions, strict=True)
        )
    )
    submitted = time.perf_counter() - start
    rows = await wait_all(services, [q.task_id for q in queued])
    stop.set()
    times = await sampler
    ended = max(aware(r.completed_at) for r in rows)
    async with services.read() as session:
        steps = (
            await session.execute(
                select(t.task_steps.c.started_at, t.task_steps.c.completed_at).where(
                    t.task_steps.c.task_id.in_([q.task_id for q in queued])
                )
            )
        ).all()
    overlap = max_overlap([(aware(s.started_at), aware(s.completed_at)) for s in steps])
    wall = (ended - began).total_seconds()
    failed = [r.id for r in rows if r.state != "success"]
    print(f"{count} deployments of a {seconds:g} s script, submitted at once")
    print(f"  submission: {submitted:.2f} s ({submitted / count * 1000:.0f} ms each)")
    print(f"  wall time:  {wall:.1f} s (ideal {seconds:g} s: {wall / seconds:.1f}x)")
    print(f"  max overlap: {overlap} scripts running at once (of {count})")
    claimed = sorted(aware(r.started_at) for r in rows)
    scripts = sorted(aware(s.started_at) for s in steps)
    print(
        f"  claimed within {(claimed[-1] - claimed[0]).total_seconds():.1f} s of each other; "
        f"scripts started within {(scripts[-1] - scripts[0]).total_seconds():.1f} s"
    )
    print(
        f"  dashboard during the run: p50 {statistics.median(times) * 1000:.0f} ms, "
        f"p95 {percentile(times, 0.95) * 1000:.0f} ms ({len(times)} requests; goal p95 150 ms)"
    )
    if failed:
        print(f"  NOT ALL SUCCEEDED: {len(failed)} failed")


async def ingestion(services: Services, admin: Caller, lines: int) -> None:
    version = (await releases.create_release(services, admin, "Chatty")).version
    queued = await deployments.deploy(services, admin, "Chatty", version, "Bench")
    samples: list[tuple[float, int]] = []
    while True:
        async with services.read() as session:
            stored = (
                await session.execute(
                    select(func.count()).where(t.task_logs.c.task_id == queued.task_id)
                )
            ).scalar_one()
            state = (
                await session.execute(select(t.tasks.c.state).where(t.tasks.c.id == queued.task_id))
            ).scalar_one()
        samples.append((time.perf_counter(), int(stored)))
        if state in TERMINAL:
            break
        await asyncio.sleep(0.25)
    async with services.read() as session:
        step = (
            await session.execute(
                select(t.task_steps.c.started_at).where(t.task_steps.c.task_id == queued.task_id)
            )
        ).one()
        task = (await session.execute(select(t.tasks).where(t.tasks.c.id == queued.task_id))).one()
    took = (aware(task.completed_at) - aware(step.started_at)).total_seconds()
    stored = samples[-1][1]
    peak = 0.0
    for i, (at, count) in enumerate(samples):
        later = [(a, c) for a, c in samples[i + 1 :] if a - at >= 1.0]
        if later:
            peak = max(peak, (later[0][1] - count) / (later[0][0] - at))
    print(f"a script printing {lines:,} lines ({task.state})")
    print(
        f"  ingested {stored:,} lines in {took:.2f} s: {stored / took:,.0f} lines/s "
        f"(peak {peak:,.0f}/s over 1 s; goal 20,000/s)"
    )


async def main(count: int, seconds: float, lines: int, database_url: str | None) -> None:
    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    try:
        settings = Settings(
            data_dir=data,
            database_url=database_url,
            run_engine=False,
            insecure_fast_password_hashing=True,
        )
        upgrade(settings.resolved_database_url)
        services = bootstrap(settings)
        await initialise(services)
        async with services.read() as session:
            admin = await caller_for_user(session, await get_user(session, "admin"))
        config = HEAD + "".join(project(f"App {i}", f"sleep {seconds:g}") for i in range(count))
        config += project("Chatty", f"seq 1 {lines}")
        await apply_text(services, admin, config)
        node = Node(services, name="bench")  # the default slots: what a server runs with
        await node.start()
        db = "PostgreSQL" if database_url else "SQLite"
        print(f"One node, {node.slots} slots (default), {db}, Python {sys.version.split()[0]}")
        try:
            await concurrent(services, admin, count, seconds)
            await ingestion(services, admin, lines)
        finally:
            await node.stop()
            await services.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument(
        "--postgres",
        default=None,
        help="a PostgreSQL server's URL: a database is made on it and dropped (default: SQLite)",
    )
    args = parser.parse_args()
    if args.postgres:
        url, drop = pg_database(args.postgres, "conveyor_bench_concurrency")
        try:
            asyncio.run(main(args.deployments, args.seconds, args.lines, url))
        finally:
            drop()
    else:
        asyncio.run(main(args.deployments, args.seconds, args.lines, None))
