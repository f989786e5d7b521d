"""The dashboard and the deployment list at 100,000 and 1,000,000 deployments (issue 11, item 7).

Run: .venv/bin/python bench/bench_dashboard.py [--sizes 100000 1000000] [--runs 30]
     [--postgres URL]

For each size it builds a fresh database (SQLite in a temporary folder, or a new database on the
PostgreSQL server of URL, dropped afterwards): 500 projects in 25 groups, 6 environments, a
reader whose Project Viewer role is scoped to 3 groups (60 projects) and 3 environments, ten
releases per project, and the deployments bulk-inserted (for the benchmark only; the server
writes them one by one) spread evenly over projects and environments, with the dashboard
projection row of each (project, environment) pointing at its newest one. Then it times, through
the real app in process (httpx's ASGI transport):

  - GET /api/v1/dashboard as the administrator and as the reader (API key)
  - GET / (the dashboard page) as the administrator (signed-in browser session)
  - GET /api/v1/deployments?limit=50: page 1 and page 100 (by cursor) as the reader, and one
    project in one environment as the administrator

The goal (issue 11): the dashboard API and page p95 at most 150 ms, and the ratio of p95 at the
largest size to the smallest at most 1.3.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from seeded import seeded
from sqlalchemy import create_engine, insert, select, text
from throwaway_db import pg_database

from conveyor.api.app import create_app, settle_heap
from conveyor.services.config import load
from conveyor.services.core import Services, bootstrap, system_caller
from conveyor.services.users import create_api_key, set_password
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.db import sync_url, upgrade

PROJECTS, GROUPS, ENVIRONMENTS, RELEASES = 500, 25, 6, 10
BATCH = 20_000
BASE = "http://conveyor.bench"
PASSWORD = "a-long-enough-bench-password"
STATES = ["success"] * 90 + ["failed"] * 7 + ["canceled"] * 3


def config() -> str:
    envs = [f"Env {e}" for e in range(1, ENVIRONMENTS + 1)]
    lines = ["environments:", *(f"  - name: {e}" for e in envs)]
    lines += ["lifecycles:", "  - name: All", "    phases:", "      - name: All"]
    lines += [f"        environments: [{', '.join(envs)}]", "project_groups:"]
    lines += [f"  - name: Group {g}" for g in range(1, GROUPS + 1)]
    lines += ["users:", "  - username: reader", "teams:", "  - name: Readers"]
    lines += ["    members: [reader]", "    roles:", "      - role: Project Viewer"]
    lines += ["        project_groups: [Group 1, Group 2, Group 3]"]
    lines += [f"        environments: [{', '.join(envs[:3])}]", "projects:"]
    for p in range(1, PROJECTS + 1):
        group = (p - 1) % GROUPS + 1
        lines += [f"  - name: Project {p}", f"    group: Group {group}", "    lifecycle: All"]
    return "\n".join(lines) + "\n"


def _stamp(moment: datetime, sqlite: bool) -> Any:
    return moment.replace(tzinfo=None) if sqlite else moment


def fill(url: str, count: int, projects: list[int], environments: list[int]) -> None:
    """Releases, ``count`` deployments and the projection, straight into the tables."""
    engine = create_engine(sync_url(url))
    sqlite = url.startswith("sqlite")
    rng = random.Random(11)
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / count
    try:
        with engine.begin() as conn:
            releases = []
            for project in projects:
                for r in range(1, RELEASES + 1):
                    releases.append(
                        {
                            "project_id": project,
                            "version": f"1.0.{r}",
                            "notes": "",
                            "created_at": _stamp(start, sqlite),
                            "created_by": "bench",
                            "snapshot": {},
                            "packages": {},
                            "children": {},
                            "build": {},
                        }
                    )
            conn.execute(insert(t.releases), releases)
            ids = conn.execute(select(t.releases.c.id, t.releases.c.project_id)).all()
            by_project: dict[int, list[int]] = {}
            for release_id, project in ids:
                by_project.setdefault(project, []).append(release_id)
            versions = {rid: f"1.0.{i + 1}" for rids in by_project.values() for i, rid in
                        enumerate(sorted(rids))}  # fmt: skip
            newest: dict[tuple[int, int], dict[str, Any]] = {}

            def rows() -> Iterator[dict[str, Any]]:
                for n in range(1, count + 1):
                    project = projects[n % len(projects)]
                    env = environments[(n // len(projects)) % len(environments)]
                    release = by_project[project][min(n * RELEASES // count, RELEASES - 1)]
                    when = start + step * n
                    row = {
                        "id": n,
                        "release_id": release,
                        "project_id": project,
                        "environment_id": env,
                        "task_id": n,
                        "parent_id": None,
                        "created_at": _stamp(when, sqlite),
                        "created_by": "bench",
                        "state": rng.choice(STATES),
                        "skip": [],
                        "guided_failure": False,
                        "variables": {},
                        "started_at": _stamp(when, sqlite),
                        "completed_at": _stamp(when + timedelta(seconds=30), sqlite),
                    }
                    newest[(project, env)] = row
                    yield row

            batch: list[dict[str, Any]] = []
            for row in rows():
                batch.append(row)
                if len(batch) >= BATCH:
                    conn.execute(insert(t.deployments), batch)
                    batch = []
            if batch:
                conn.execute(insert(t.deployments), batch)
            conn.execute(
                insert(t.dashboard),
                [
                    {
                        "project_id": project,
                        "environment_id": env,
                        "deployment_id": row["id"],
                        "release_id": row["release_id"],
                        "release_version": versions[row["release_id"]],
                        "state": row["state"],
                        "task_id": row["task_id"],
                        "completed_at": row["completed_at"],
                        "previous_deployment_id": None,
                        "success_release_id": row["release_id"],
                        "success_version": versions[row["release_id"]],
                        "updated_at": row["completed_at"],
                    }
                    for (project, env), row in newest.items()
                ],
            )
            if not sqlite:
                conn.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('deployments', 'id'), "
                        "(SELECT max(id) FROM deployments))"
                    )
                )
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


async def timed(work: Callable[[], Awaitable[httpx.Response]], runs: int) -> list[float]:
    (await work()).raise_for_status()  # warm the caches once, and fail loudly on an error
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        response = await work()
        out.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return out


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)] if len(values) > 1 else values[0]


async def sign_in(browser: httpx.AsyncClient, username: str) -> None:
    page = await browser.get("/sign-in")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    form = {"csrf": found.group(1), "username": username, "password": PASSWORD, "next": "/"}
    signed = await browser.post("/sign-in", data=form)
    assert signed.status_code in (302, 303), signed.text


async def measure(services: Services, settings: Settings, runs: int) -> dict[str, list[float]]:
    admin_key = await create_api_key(services, system_caller(), "admin", "bench")
    reader_key = await create_api_key(services, system_caller(), "reader", "bench")
    await set_password(services, system_caller(), "admin", PASSWORD)
    app = create_app(settings, services)
    await load(services)
    settle_heap()  # as `conveyor server` does once started (the transport runs no lifespan)
    transport = httpx.ASGITransport(app=app)
    api = f"{BASE}/api/v1"
    admin = httpx.AsyncClient(transport=transport, base_url=api, headers={"X-Api-Key": admin_key})
    reader = httpx.AsyncClient(transport=transport, base_url=api, headers={"X-Api-Key": reader_key})
    browser = httpx.AsyncClient(transport=transport, base_url=BASE)
    try:
        await sign_in(browser, "admin")
        first = (await reader.get("/deployments", params={"limit": 50})).json()
        assert len(first) == 50, len(first)
        cursor = int(first[-1]["id"].split("-")[1])
        for _ in range(98):  # walk to page 100 (or the last full page), as a reader would
            page = (await reader.get("/deployments", params={"limit": 50, "before": cursor})).json()
            if len(page) < 50:
                break
            cursor = int(page[-1]["id"].split("-")[1])
        queries: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
            "dashboard API, admin": lambda: admin.get("/dashboard"),
            "dashboard API, reader": lambda: reader.get("/dashboard"),
            "dashboard page, admin": lambda: browser.get("/"),
            "list page 1, reader": lambda: reader.get("/deployments", params={"limit": 50}),
            "list page 100, reader": lambda: reader.get(
                "/deployments", params={"limit": 50, "before": cursor}
            ),
            "list project+env, admin": lambda: admin.get(
                "/deployments",
                params={"limit": 50, "project": "Project 7", "environment": "Env 2"},
            ),
        }
        return {name: await timed(q, runs) for name, q in queries.items()}
    finally:
        for client in (admin, reader, browser):
            await client.aclose()


async def one_size(url: str, count: int, runs: int) -> dict[str, list[float]]:
    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-dashboard-"))
    url = url or f"sqlite+aiosqlite:///{data / 'conveyor.db'}"
    try:
        upgrade(url)
        settings = Settings(
            data_dir=data, database_url=url, run_engine=False, insecure_fast_password_hashing=True
        )
        services = bootstrap(settings)
        try:
            _, projects, environments = await seeded(services, config())
            started = time.perf_counter()
            fill(url, count, projects, environments)
            print(f"filled {count:,} deployments in {time.perf_counter() - started:.0f} s")
            return await measure(services, settings, runs)
        finally:
            await services.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def main(flags: argparse.Namespace) -> None:
    results: dict[int, dict[str, list[float]]] = {}
    for count in flags.sizes:
        if flags.postgres:
            url, drop = pg_database(flags.postgres, "conveyor_bench_dashboard")
            try:
                results[count] = await one_size(url, count, flags.runs)
            finally:
                drop()
        else:
            results[count] = await one_size("", count, flags.runs)
    db = "PostgreSQL" if flags.postgres else "SQLite"
    sizes = list(results)
    print(f"\nDashboard and deployment list ({db}, {PROJECTS} projects x {ENVIRONMENTS} envs, ")
    print(f"Python {sys.version.split()[0]}, {flags.runs} runs; ms)")
    header = f"{'request':<26}" + "".join(f"{f'p50 {n:,}':>14}{f'p95 {n:,}':>14}" for n in sizes)
    if len(sizes) > 1:
        header += f"{'p95 ratio':>11}"
    print(header)
    for name in results[sizes[0]]:
        line = f"{name:<26}"
        for n in sizes:
            values = results[n][name]
            line += f"{statistics.median(values):>14.2f}{p95(values):>14.2f}"
        if len(sizes) > 1:
            low, high = results[sizes[0]][name], results[sizes[-1]][name]
            line += f"{p95(high) / p95(low):>10.2f}x"
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL")
    asyncio.run(main(parser.parse_args()))
