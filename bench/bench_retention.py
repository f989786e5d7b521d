"""Retention at 200 projects x 100 releases x 4 environments (issue 16, item 2): how long the
plan takes (`conveyor retention plan`, the /retention page, the periodic job's first step) and
applying it.

Run: .venv/bin/python bench/bench_retention.py [--projects 200] [--releases 100] [--logs 5]
     [--runs 3] [--postgres URL]

It builds a fresh database (SQLite in a temporary folder, or a new database on the PostgreSQL
server of URL, dropped afterwards): 200 projects, 4 environments (Dev, Test, Staging, Prod) with
a phase each, a lifecycle that keeps the last 10 releases (Dev: its own 5, the later phases take
Dev's, docs/retention.md), the logs of the last 5 deployments and the last 10 versions of each
package. Per project 100 releases, each pinning a version of the project's package (a row in
the feed; no file), and each deployed to the four environments in order: 80,000 deployments and
tasks, ``--logs`` log lines each, the dashboard row of every cell pointing at the newest and the
one before. The history is bulk-inserted (for the benchmark only; the server writes one row at
a time). Then it times:

  - the plan as the job computes it (reading the facts and planning, in this process)
  - GET /api/v1/retention/plan (every item, as JSON) and GET /retention (the page) as the
    administrator, through the real app in process (httpx's ASGI transport)
  - applying the plan (`conveyor retention apply`: batches of 200, each checked and audited)
  - the plan again once applied (what the hourly job computes in a steady state)

and prints the wall time, this process's CPU time, and the Python heap's peak while planning.

Figures (2 shared cores, load 2-3 from other work, Python 3.11, --logs 5; median of 3; wall
ms / this process's CPU ms; the plan deletes 19,000 releases, 76,000 deployments and 18,000
package versions, and leaves 1,000 releases and 4,000 deployments):

                                    SQLite        PostgreSQL
    plan, full history           1320 / 1304     1347 / 1100
    GET /api/v1/retention/plan   1646 / 1567     1578 / 1418
    GET /retention               1572 / 1522     1476 / 1326
    apply (190 batches)         10229 / 6968    11024 / 7398
    plan once applied             219 /  109      129 /  100
    heap peak: whole plan           56 MB           54 MB
    heap peak: the job's parts      25 MB           24 MB

Before the plan was made a chunk of projects at a time (all the history at once) and its rows
were named tuples: SQLite 1832 / 1411 ms and a heap peak of 84 MB for the full history (83 MB
on PostgreSQL), 198 ms once applied. The full-history plan is bound by its output (95,000
removals to list, every one with its reason); the hourly job in a steady state reads what is
kept and answers in about 0.1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from bench_dashboard import PASSWORD, sign_in
from seeded import seeded
from sqlalchemy import create_engine, func, insert, select, text
from throwaway_db import pg_database

from conveyor.api.app import create_app, settle_heap
from conveyor.services import retention, retention_apply
from conveyor.services.config import load
from conveyor.services.core import Services, bootstrap, system_caller
from conveyor.services.users import create_api_key, set_password
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.db import sync_url, upgrade

ENVIRONMENTS = ("Dev", "Test", "Staging", "Prod")
BATCH = 10_000
BASE = "http://conveyor.bench"


def config(projects: int) -> str:
    lines = ["environments:", *(f"  - name: {e}" for e in ENVIRONMENTS)]
    lines += ["lifecycles:", "  - name: Kept", "    release_retention: {keep: 10}"]
    lines += ["    task_log_retention: {keep: 5}", "    package_retention: {keep: 10}"]
    lines += ["    phases:"]
    for env in ENVIRONMENTS:
        lines += [f"      - name: {env}", f"        environments: [{env}]"]
        if env == "Dev":
            lines += ["        release_retention: {keep: 5}"]
    lines += ["project_groups:", "  - name: Apps", "projects:"]
    for p in range(1, projects + 1):
        lines += [f"  - name: Project {p}", "    group: Apps", "    lifecycle: Kept"]
    return "\n".join(lines) + "\n"


def _batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), BATCH):
        yield rows[i : i + BATCH]


def fill(url: str, projects: list[int], envs: list[int], releases: int, logs: int) -> int:
    """Bulk-inserts the history, a project at a time; returns the deployments made."""
    sqlite = url.startswith("sqlite")
    now = datetime.now(UTC)

    def at(moment: datetime) -> Any:
        return moment.replace(tzinfo=None) if sqlite else moment

    engine = create_engine(sync_url(url))
    ids = {"release": 0, "deployment": 0, "package": 0}
    try:
        for project in projects:
            rows: dict[str, list[dict[str, Any]]] = {
                k: [] for k in ("releases", "deployments", "tasks", "task_logs", "packages")
            }
            last: dict[int, list[int]] = {env: [] for env in envs}
            package = f"App{project}"
            for n in range(1, releases + 1):
                made = now - timedelta(hours=(releases - n) * 6 + 5)
                ids["release"] += 1
                release = ids["release"]
                version = f"1.0.{n}"
                ids["package"] += 1
                rows["packages"].append(
                    {
                        "id": ids["package"],
                        "package_id": package,
                        "package_key": package.lower(),
                        "version": version,
                        "file_name": f"{package}.{version}.zip",
                        "format": "zip",
                        "size": 4096,
                        "sha256": "0" * 64,
                        "created_at": at(made - timedelta(minutes=5)),
                        "pushed_by": "bench",
                    }
                )
                rows["releases"].append(
                    {
                        "id": release,
                        "project_id": project,
                        "version": version,
                        "notes": "",
                        "created_at": at(made),
                        "created_by": "bench",
                        "snapshot": {},
                        "packages": {package: version},
                        "children": [],
                        "build": {},
                    }
                )
                for k, env in enumerate(envs):
                    ids["deployment"] += 1
                    dep = ids["deployment"]
                    queued = made + timedelta(minutes=30 * (k + 1))
                    done = queued + timedelta(minutes=5)
                    last[env].append(dep)
                    rows["deployments"].append(
                        {
                            "id": dep,
                            "release_id": release,
                            "project_id": project,
                            "environment_id": env,
                            "task_id": dep,
                            "parent_id": None,
                            "created_at": at(queued),
                            "created_by": "bench",
                            "state": "success",
                            "skip": [],
                            "guided_failure": False,
                            "variables": {},
                            "started_at": at(queued),
                            "completed_at": at(done),
                        }
                    )
                    rows["tasks"].append(
                        {
                            "id": dep,
                            "kind": "deploy",
                            "description": "bench",
                            "state": "success",
                            "deployment_id": dep,
                            "project_id": project,
                            "environment_id": env,
                            "created_at": at(queued),
                            "started_at": at(queued),
                            "completed_at": at(done),
                        }
                    )
                    rows["task_logs"].extend(
                        {
                            "task_id": dep,
                            "at": at(queued),
                            "step": 0,
                            "level": "info",
                            "line": f"line {i} of the deployment of {version}",
                        }
                        for i in range(logs)
                    )
            dashboard = [
                {
                    "project_id": project,
                    "environment_id": env,
                    "deployment_id": deps[-1],
                    "release_id": ids["release"],
                    "release_version": f"1.0.{releases}",
                    "state": "success",
                    "task_id": deps[-1],
                    "completed_at": at(now),
                    "previous_deployment_id": deps[-2] if len(deps) > 1 else None,
                    "success_release_id": ids["release"],
                    "success_version": f"1.0.{releases}",
                    "updated_at": at(now),
                }
                for env, deps in last.items()
            ]
            with engine.begin() as conn:
                for table, batch_rows in (
                    (t.packages, rows["packages"]),
                    (t.releases, rows["releases"]),
                    (t.tasks, rows["tasks"]),
                    (t.deployments, rows["deployments"]),
                    (t.task_logs, rows["task_logs"]),
                    (t.dashboard, dashboard),
                ):
                    for batch in _batches(batch_rows):
                        conn.execute(insert(table), batch)
        with engine.begin() as conn:
            if not sqlite:
                for table in ("releases", "deployments", "tasks", "packages", "task_logs"):
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE" if sqlite else "VACUUM ANALYZE"))
    finally:
        engine.dispose()
    return ids["deployment"]


Timing = tuple[list[float], list[float]]


async def timed(work: Callable[[], Awaitable[Any]], runs: int) -> Timing:
    """Wall and this process's CPU times (ms), after one run to warm the caches."""
    await work()
    wall, cpu = [], []
    for _ in range(runs):
        start, used = time.perf_counter(), time.process_time()
        await work()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    return wall, cpu


async def peak_mb(work: Callable[[], Awaitable[Any]]) -> float:
    """The Python heap's peak above where it was, while ``work`` runs (once, untimed)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        await work()
        return (tracemalloc.get_traced_memory()[1] - base) / 1e6
    finally:
        tracemalloc.stop()


async def by_parts(services: Services) -> None:
    """The plan as the job reads it: a chunk of projects at a time, each part let go before
    the next (the job applies it in between)."""
    async for part in retention.plans(services):
        del part


async def counts(services: Services) -> dict[str, int]:
    out = {}
    async with services.read() as session:
        for table in (t.releases, t.deployments, t.tasks, t.task_logs, t.packages):
            query = select(func.count()).select_from(table)
            out[table.name] = int((await session.execute(query)).scalar_one())
    return out


async def run(url: str, flags: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-retention-"))
    url = url or f"sqlite+aiosqlite:///{data / 'conveyor.db'}"
    results: dict[str, Any] = {}
    try:
        upgrade(url)
        settings = Settings(
            data_dir=data, database_url=url, run_engine=False, insecure_fast_password_hashing=True
        )
        services = bootstrap(settings)
        try:
            admin, projects, envs = await seeded(services, config(flags.projects))
            started = time.perf_counter()
            made = fill(url, projects, envs, flags.releases, flags.logs)
            print(f"filled {made:,} deployments in {time.perf_counter() - started:.0f} s")
            results["before"] = await counts(services)
            admin_key = await create_api_key(services, system_caller(), "admin", "bench")
            await set_password(services, system_caller(), "admin", PASSWORD)
            app = create_app(settings, services)
            await load(services)
            settle_heap()
            transport = httpx.ASGITransport(app=app)
            api = httpx.AsyncClient(
                transport=transport,
                base_url=f"{BASE}/api/v1",
                headers={"X-Api-Key": admin_key},
                timeout=600,
            )
            browser = httpx.AsyncClient(transport=transport, base_url=BASE, timeout=600)

            async def get(client: httpx.AsyncClient, path: str) -> None:
                (await client.get(path)).raise_for_status()

            try:
                await sign_in(browser, "admin")
                plan = await retention.current_plan(services)
                results["planned"] = plan.counts()
                print(f"the plan deletes {plan.counts()}")
                del plan
                results["plan, full history"] = await timed(
                    lambda: retention.current_plan(services), flags.runs
                )
                results["peak MB, whole plan"] = await peak_mb(
                    lambda: retention.current_plan(services)
                )
                results["peak MB, job's parts"] = await peak_mb(lambda: by_parts(services))
                results["GET /api/v1/retention/plan"] = await timed(
                    lambda: get(api, "/retention/plan"), flags.runs
                )
                results["GET /retention"] = await timed(
                    lambda: get(browser, "/retention"), flags.runs
                )
                start, used = time.perf_counter(), time.process_time()
                applied = await retention_apply.apply_now(services, admin, "bench")
                results["apply"] = (
                    [(time.perf_counter() - start) * 1000],
                    [(time.process_time() - used) * 1000],
                )
                results["applied"] = applied.as_dict()
                results["after"] = await counts(services)
                results["plan once applied"] = await timed(
                    lambda: retention.current_plan(services), flags.runs
                )
                results["peak MB, once applied"] = await peak_mb(
                    lambda: retention.current_plan(services)
                )
                left = await retention.current_plan(services)
                results["left"] = left.counts()
            finally:
                await api.aclose()
                await browser.aclose()
        finally:
            await services.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return results


async def main(flags: argparse.Namespace) -> None:
    if flags.postgres:
        url, drop = pg_database(flags.postgres, "conveyor_bench_retention")
        try:
            results = await run(url, flags)
        finally:
            drop()
    else:
        results = await run("", flags)
    db = "PostgreSQL" if flags.postgres else "SQLite"
    print(
        f"\nRetention at {flags.projects} projects x {flags.releases} releases x "
        f"{len(ENVIRONMENTS)} environments, {flags.logs} log lines a deployment ({db}, "
        f"Python {sys.version.split()[0]}, median of {flags.runs} runs)"
    )
    print(f"rows before: {results['before']}")
    print(f"planned:     {results['planned']}")
    print(f"applied:     {results['applied']}")
    print(f"rows after:  {results['after']}; left to delete: {results['left']}")
    print(f"{'':<30}{'wall ms':>10}{'CPU ms':>10}")
    for name, value in results.items():
        if isinstance(value, tuple):
            wall, cpu = value
            print(f"{name:<30}{statistics.median(wall):>10.0f}{statistics.median(cpu):>10.0f}")
        elif name.startswith("peak"):
            print(f"{name:<30}{value:>10.1f} MB (Python heap)")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--releases", type=int, default=100)
    parser.add_argument("--logs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL")
    asyncio.run(main(parser.parse_args()))
