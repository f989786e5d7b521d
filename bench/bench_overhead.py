"""What the size of the configuration costs a request and a deployment (issue 11, item 4).

Run: .venv/bin/python bench/bench_overhead.py [--projects 5 500] [--requests 200] [--runs 5]
     [--postgres URL]

For each size it builds a fresh database (SQLite in a temporary folder, or a new database on the
PostgreSQL server of URL, dropped afterwards) with that many projects in 6 environments, each with
a one-step process and four variables (two sensitive), and teams scoping a reader to groups of
them. It then measures, through the real app in process (httpx's ASGI transport) with the reader's
API key:

  - GET /environments/{name}: an authenticated read of one document (p50, p95)
  - GET /dashboard (p50, p95)

and with a real engine (``Node``), from the deployment request to the task's success:

  - a deployment of a project with 1 script step and one with 10 (median of the runs): the
    per-step overhead is (T10 - T1) / 9, the fixed cost of a deployment T1 minus one step.

The last table is the ratio of the largest size to the smallest (goal: at most 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from sqlalchemy import select
from throwaway_db import pg_database

from conveyor.api.app import create_app
from conveyor.engine.node import Node
from conveyor.services import deployments, releases
from conveyor.services.access import caller_for_user, get_user
from conveyor.services.configfile import apply_text
from conveyor.services.core import Services, bootstrap, system_caller
from conveyor.services.users import create_api_key, initialise
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.db import upgrade

ENVIRONMENTS = 6
BASE = "http://conveyor.bench/api/v1"


def config(projects: int) -> str:
    envs = [f"Env {e}" for e in range(1, ENVIRONMENTS + 1)]
    groups = max(1, projects // 25)
    lines = ["environments:", *(f"  - name: {e}" for e in envs)]
    lines += ["lifecycles:", "  - name: All", "    phases:", "      - name: All"]
    lines += [f"        environments: [{', '.join(envs)}]", "project_groups:"]
    lines += [f"  - name: Group {g}" for g in range(groups)]
    lines += ["users:", "  - username: reader", "teams:"]
    for g in range(groups):
        lines += [f"  - name: Team {g}", "    members: [reader]", "    roles:"]
        lines += ["      - role: Project Viewer", f"        project_groups: [Group {g}]"]
        lines += ["      - role: Environment Viewer"]
    lines += ["projects:"]
    for p in range(projects):
        lines += [f"  - name: Project {p}", f"    group: Group {p % groups}", "    lifecycle: All"]
        lines += ["    process:", "      steps:", "        - name: Run"]
        lines += ["          type: script", "          script: echo run"]
        lines += ["    variables:"]
        for v in range(4):
            lines += [f"      - name: Var{v}", f'        value: "value-{p}-{v}-{"x" * 24}"']
            if v % 2:
                lines += ["        sensitive: true"]
    for n in (1, 10):
        lines += [f"  - name: Steps {n}", "    group: Group 0", "    lifecycle: All"]
        lines += ["    process:", "      steps:"]
        for i in range(n):
            lines += [f"        - name: Step {i}", "          type: script"]
            lines += [f"          script: echo step {i}"]
    return "\n".join(lines) + "\n"


async def timed(work: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    for _ in range(3):
        await work()  # warm up: the first read of a revision loads it
    out = []
    for _ in range(count):
        start = time.perf_counter()
        await work()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95) - 1]


async def deploy_once(services: Services, caller: Any, project: str) -> float:
    release = await releases.create_release(services, caller, project)
    queued = await deployments.deploy(services, caller, project, release.version, "Env 1")
    while True:
        async with services.read() as session:
            row = (
                await session.execute(select(t.tasks).where(t.tasks.c.id == queued.task_id))
            ).one()
        if row.state in ("success", "failed", "canceled", "timed_out"):
            break
        await asyncio.sleep(0.02)
    if row.state != "success":
        raise SystemExit(f"the benchmark deployment ended {row.state}")
    return float((row.completed_at - row.created_at).total_seconds() * 1000)


async def measure(projects: int, requests: int, runs: int, url: str) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    settings = Settings(
        data_dir=data, database_url=url, run_engine=False, insecure_fast_password_hashing=True
    )
    upgrade(settings.resolved_database_url)
    services = bootstrap(settings)
    try:
        await initialise(services)
        async with services.read() as session:
            admin = await caller_for_user(session, await get_user(session, "admin"))
        await apply_text(services, admin, config(projects))
        key = await create_api_key(services, system_caller(), "reader", "bench")
        app = create_app(settings, services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE, headers={"X-Api-Key": key}
        ) as client:

            def get(path: str) -> Callable[[], Awaitable[Any]]:
                async def one() -> None:
                    response = await client.get(path)
                    if response.status_code != 200:
                        raise SystemExit(f"GET {path}: {response.status_code} {response.text}")

                return one

            environment = await timed(get("/environments/Env 3"), requests)
            dashboard = await timed(get("/dashboard"), max(20, requests // 4))
        node = Node(services, slots=4, name="bench")
        await node.start()
        one, ten = [], []
        try:
            await deploy_once(services, admin, "Steps 1")  # warm up
            for _ in range(runs):
                one.append(await deploy_once(services, admin, "Steps 1"))
                ten.append(await deploy_once(services, admin, "Steps 10"))
        finally:
            await node.stop()
    finally:
        await services.close()
        shutil.rmtree(data, ignore_errors=True)
    t1, t10 = statistics.median(one), statistics.median(ten)
    step = (t10 - t1) / 9
    return {
        "GET environment p50 ms": statistics.median(environment),
        "GET environment p95 ms": p95(environment),
        "GET dashboard p50 ms": statistics.median(dashboard),
        "GET dashboard p95 ms": p95(dashboard),
        "deployment fixed cost ms": t1 - step,
        "per-step overhead ms": step,
    }


def database_for(postgres: str | None, data: Path, size: int) -> tuple[str, Callable[[], None]]:
    if postgres is None:
        return f"sqlite+aiosqlite:///{data / f'bench-{size}.db'}", lambda: None
    return pg_database(postgres, "conveyor_bench")


async def main(sizes: list[int], requests: int, runs: int, postgres: str | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="conveyor-bench-db-"))
    results: dict[int, dict[str, float]] = {}
    try:
        for size in sizes:
            url, drop = database_for(postgres, folder, size)
            try:
                results[size] = await measure(size, requests, runs, url)
            finally:
                drop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    db = "PostgreSQL" if postgres else "SQLite"
    print(f"Configuration size and overhead ({db}, Python {sys.version.split()[0]})")
    header = f"{'':<28}" + "".join(f"{f'{s} projects':>16}" for s in sizes)
    low, high = min(sizes), max(sizes)
    print(header + f"{'ratio':>10}")
    for name in results[low]:
        row = f"{name:<28}" + "".join(f"{results[s][name]:>16.1f}" for s in sizes)
        ratio = results[high][name] / results[low][name] if results[low][name] > 0 else 0.0
        print(row + f"{ratio:>9.2f}x")
    print(f"goal: each ratio {high}/{low} projects at most 1.2x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, nargs="+", default=[5, 500])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    asyncio.run(main(args.projects, args.requests, args.runs, args.postgres))
