"""Delivery insights at 100,000 deployments (issue 16, item 3): the goal is an answer within
300 ms.

Run: .venv/bin/python bench/bench_insights.py [--size 100000] [--runs 15] [--postgres URL]

It builds a fresh database (SQLite in a temporary folder, or a new database on the PostgreSQL
server of URL, dropped afterwards): 200 projects in 10 groups, 4 environments (Dev, Test,
Staging, Prod), a year of history bulk-inserted (for the benchmark only; the server writes one
row at a time), then the insights' facts computed in bulk by ``conveyor.store.facts.rebuild``
(what migration 0020 does for an upgraded database; the server writes each deployment's facts
as it ends, and the report only reads them). Each release (three commits with times in its
build information) goes through the four environments in order; about 6% of deployments fail
and are deployed again, 2% succeed by ignoring a guided failure, 1% of production deployments
are rolled back, half of the production deployments wait for a manual intervention (teams Ops
or QA) and a third for an approval given after they were queued (team Leads). Then it times,
through the real app in process (httpx's ASGI transport), GET /api/v1/insights:

  - the last 30 days, as the administrator (the page's default range)
  - the last 90 days, as the administrator
  - the whole year (every deployment), as the administrator
  - the last 30 days, as a reader who sees 2 groups in 2 environments
  - one project group in production over the year, as the administrator
  - the /insights page (the charts), last 30 days, as the administrator

and prints p50 and p95 for each, against the 300 ms goal.

Measured 2026-12-01 (15 runs, ms, wall time p50 / p95; 2 shared cores, load average 5 to 7;
before the facts, 30 days took about 400 ms and the year 4 to 6 s):

  request                  SQLite         PostgreSQL
  API 30 days, admin       22.0 / 22.8    25.6 / 26.6
  API 90 days, admin       35.4 / 37.0    33.9 / 35.2
  API whole year, admin    87.3 / 96.1    73.1 / 77.2
  API 30 days, reader       9.7 / 11.8    12.0 / 13.2
  API group+Prod, year     20.8 / 26.0    15.2 / 15.6
  page 30 days, admin      29.7 / 31.6    37.5 / 38.2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
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
from bench_dashboard import PASSWORD, p95, sign_in
from seeded import seeded
from sqlalchemy import create_engine, insert, text
from throwaway_db import pg_database

from conveyor.api.app import create_app, settle_heap
from conveyor.domain.insights import commit_columns
from conveyor.services.config import load
from conveyor.services.core import bootstrap, system_caller
from conveyor.services.users import create_api_key, set_password
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.db import sync_url, upgrade
from conveyor.store.facts import rebuild_sync

PROJECTS, GROUPS = 200, 10
ENVIRONMENTS = ("Dev", "Test", "Staging", "Prod")
BATCH = 10_000
BASE = "http://conveyor.bench"
GOAL_MS = 300.0


def config() -> str:
    envs = ", ".join(ENVIRONMENTS)
    lines = ["environments:", *(f"  - name: {e}" for e in ENVIRONMENTS)]
    lines += ["lifecycles:", "  - name: All", "    phases:", "      - name: All"]
    lines += [f"        environments: [{envs}]", "project_groups:"]
    lines += [f"  - name: Group {g}" for g in range(1, GROUPS + 1)]
    lines += ["users:", "  - username: reader", "teams:"]
    lines += ["  - name: Ops", "  - name: QA", "  - name: Leads", "  - name: Readers"]
    lines += ["    members: [reader]", "    roles:", "      - role: Project Viewer"]
    lines += ["        project_groups: [Group 1, Group 2]", "        environments: [Dev, Prod]"]
    lines += ["projects:"]
    for p in range(1, PROJECTS + 1):
        lines += [f"  - name: Project {p}", f"    group: Group {(p - 1) % GROUPS + 1}"]
        lines += ["    lifecycle: All"]
    return "\n".join(lines) + "\n"


def _stamp(moment: datetime, sqlite: bool) -> Any:
    return moment.replace(tzinfo=None) if sqlite else moment


class History:
    """The rows of a year of deployments, made in time order."""

    def __init__(self, count: int, projects: list[int], envs: list[int], sqlite: bool) -> None:
        self.count, self.projects, self.envs, self.sqlite = count, projects, envs, sqlite
        self.rng = random.Random(16)
        self.releases: list[dict[str, Any]] = []
        self.deployments: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.interruptions: list[dict[str, Any]] = []
        self.approvals: list[dict[str, Any]] = []

    def at(self, moment: datetime) -> Any:
        return _stamp(moment, self.sqlite)

    def make(self, now: datetime) -> None:
        # About 4.27 deployments a release: slightly more releases than make ``count`` in the
        # year, so that it stops at ``count`` a few days before now.
        releases = int(self.count / 4.2) + 1
        start = now - timedelta(days=365)
        gap = timedelta(days=365) / releases
        latest: dict[int, list[int]] = {}
        for k in range(releases):
            if len(self.deployments) >= self.count:
                break
            project = self.projects[k % len(self.projects)]
            made = start + gap * k
            release_id = len(self.releases) + 1
            commits = [
                {
                    "sha": f"{release_id:08x}{c:032x}",
                    "author": "dev",
                    "message": "a change",
                    "timestamp": (made - timedelta(hours=c * 3 + 1)).isoformat(),
                }
                for c in range(3)
            ]
            build = {"commit": commits[0]["sha"], "commits": commits}
            self.releases.append(
                {
                    "id": release_id,
                    "project_id": project,
                    "version": f"1.0.{release_id}",
                    "notes": "",
                    "created_at": self.at(made),
                    "created_by": "bench",
                    "snapshot": {},
                    "packages": {},
                    "children": {},
                    "build": build,
                    **{k: self.at(v) for k, v in commit_columns(build).items() if v},
                }
            )
            history = latest.setdefault(project, [])
            history.append(release_id)
            when = made
            for env in self.envs:
                when += timedelta(minutes=self.rng.randint(5, 240))
                when = self.deploy(project, env, release_id, when)
                prod = env == self.envs[-1]
                if prod and len(history) > 1 and self.rng.random() < 0.01:
                    when = self.deploy(project, env, history[-2], when + timedelta(minutes=30))

    def deploy(self, project: int, env: int, release: int, queued: datetime) -> datetime:
        """One deployment (and its retry when it fails); returns when the last one ended."""
        rng = self.rng
        prod = env == self.envs[-1]
        started = queued + timedelta(seconds=rng.randint(1, 30))
        approval = prod and rng.random() < 0.33
        if approval:
            given = queued + timedelta(minutes=rng.randint(2, 120))
            started = given + timedelta(seconds=5)
        run = timedelta(seconds=rng.randint(60, 900))
        asked = prod and rng.random() < 0.5
        if asked:
            run += timedelta(minutes=rng.randint(5, 90))
        ended = started + run
        roll = rng.random()
        state = "failed" if roll < 0.06 else "success"
        ignored = state == "success" and roll < 0.08
        deployment_id = len(self.deployments) + 1
        self.deployments.append(
            {
                "id": deployment_id,
                "release_id": release,
                "project_id": project,
                "environment_id": env,
                "task_id": deployment_id,
                "parent_id": None,
                "created_at": self.at(queued),
                "created_by": "bench",
                "state": state,
                "skip": [],
                "guided_failure": ignored or prod,
                "variables": {},
                "started_at": self.at(started),
                "completed_at": self.at(ended),
            }
        )
        if approval:
            self.approvals.append(
                {
                    "release_id": release,
                    "project_id": project,
                    "environment_id": env,
                    "username": "lead",
                    "teams": ["Leads"],
                    "notes": "",
                    "fields": {},
                    "digest": "0" * 64,
                    "given_at": self.at(given),
                    "expires_at": self.at(given + timedelta(days=7)),
                }
            )
        if asked or ignored:
            self.tasks.append(
                {
                    "id": deployment_id,
                    "kind": "deploy",
                    "description": "bench",
                    "state": state,
                    "deployment_id": deployment_id,
                    "project_id": project,
                    "environment_id": env,
                    "created_at": self.at(queued),
                }
            )
        if asked:
            asked_at = started + timedelta(seconds=30)
            self.interruption(deployment_id, project, env, "manual_intervention", asked_at,
                              ended - timedelta(seconds=20), rng.choice(["Ops", "QA"]))  # fmt: skip
        if ignored:
            self.interruption(deployment_id, project, env, "guided_failure", started,
                              started + timedelta(minutes=3), None)  # fmt: skip
        if state == "failed":
            return self.deploy(project, env, release, ended + timedelta(minutes=20))
        return ended

    def interruption(
        self,
        deployment: int,
        project: int,
        env: int,
        kind: str,
        asked: datetime,
        answered: datetime,
        team: str | None,
    ) -> None:
        self.interruptions.append(
            {
                "task_id": deployment,
                "deployment_id": deployment,
                "project_id": project,
                "environment_id": env,
                "step_idx": 0,
                "step_name": "Approve" if team else "Deploy",
                "kind": kind,
                "title": "bench",
                "instructions": "",
                "responsible_teams": [team] if team else [],
                "settings": {},
                "state": "answered",
                "created_at": self.at(asked),
                "result": "proceed" if team else "ignore",
                "answered_at": self.at(answered),
                "answers": [],
            }
        )


def _batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), BATCH):
        yield rows[i : i + BATCH]


def fill(url: str, count: int, projects: list[int], envs: list[int]) -> History:
    engine = create_engine(sync_url(url))
    sqlite = url.startswith("sqlite")
    history = History(count, projects, envs, sqlite)
    history.make(datetime.now(UTC))
    try:
        with engine.begin() as conn:
            for table, rows in (
                (t.releases, history.releases),
                (t.deployments, history.deployments),
                (t.tasks, history.tasks),
                (t.interruptions, history.interruptions),
                (t.approvals, history.approvals),
            ):
                for batch in _batches(rows):
                    conn.execute(insert(table), batch)
            if not sqlite:
                for table in ("releases", "deployments", "tasks"):
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
        # The facts the server writes as each deployment ends, in bulk (as the 0020 migration
        # fills them for an upgraded database).
        with engine.begin() as conn:
            rebuild_sync(conn, sqlite=sqlite)
        # As autovacuum would in time: statistics, and the visibility map index-only scans need.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE" if sqlite else "VACUUM ANALYZE"))
    finally:
        engine.dispose()
    return history


Timing = tuple[list[float], list[float]]


async def timed(work: Callable[[], Awaitable[httpx.Response]], runs: int) -> Timing:
    """Wall times and this process's CPU times (ms). The app runs in this process, so its CPU
    time is what the request cost, whatever else the machine is doing; the wall time is what a
    person waits, and grows when other work shares the cores (PostgreSQL's own CPU time is
    not in it)."""
    (await work()).raise_for_status()  # warm the caches once, and fail loudly on an error
    wall, cpu = [], []
    for _ in range(runs):
        start, used = time.perf_counter(), time.process_time()
        response = await work()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - used) * 1000)
        response.raise_for_status()
    return wall, cpu


async def run(url: str, count: int, runs: int) -> dict[str, Timing]:
    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-insights-"))
    url = url or f"sqlite+aiosqlite:///{data / 'conveyor.db'}"
    try:
        upgrade(url)
        settings = Settings(
            data_dir=data, database_url=url, run_engine=False, insecure_fast_password_hashing=True
        )
        services = bootstrap(settings)
        try:
            _, projects, envs = await seeded(services, config())
            started = time.perf_counter()
            history = fill(url, count, projects, envs)
            print(
                f"filled {len(history.deployments):,} deployments, {len(history.releases):,} "
                f"releases, {len(history.interruptions):,} interruptions and "
                f"{len(history.approvals):,} approvals in {time.perf_counter() - started:.0f} s"
            )
            admin_key = await create_api_key(services, system_caller(), "admin", "bench")
            reader_key = await create_api_key(services, system_caller(), "reader", "bench")
            await set_password(services, system_caller(), "admin", PASSWORD)
            app = create_app(settings, services)
            await load(services)
            settle_heap()
            transport = httpx.ASGITransport(app=app)
            api = f"{BASE}/api/v1"
            admin_api = httpx.AsyncClient(
                transport=transport, base_url=api, headers={"X-Api-Key": admin_key}
            )
            reader_api = httpx.AsyncClient(
                transport=transport, base_url=api, headers={"X-Api-Key": reader_key}
            )
            browser = httpx.AsyncClient(transport=transport, base_url=BASE)
            now = datetime.now(UTC)
            year = {"since": (now - timedelta(days=366)).isoformat()}
            try:
                await sign_in(browser, "admin")
                whole = (await admin_api.get("/insights", params=year)).json()
                print(
                    f"the whole year: {whole['overall']['deployments']:,} deployments, "
                    f"change failure rate {whole['overall']['change_failure_rate']}, "
                    f"lead time {whole['overall']['lead_time_seconds']} s"
                )
                queries: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
                    "API 30 days, admin": lambda: admin_api.get("/insights"),
                    "API 90 days, admin": lambda: admin_api.get(
                        "/insights", params={"since": (now - timedelta(days=90)).isoformat()}
                    ),
                    "API whole year, admin": lambda: admin_api.get("/insights", params=year),
                    "API 30 days, reader": lambda: reader_api.get("/insights"),
                    "API group+Prod, year": lambda: admin_api.get(
                        "/insights", params={**year, "group": "Group 3", "environment": "Prod"}
                    ),
                    "page 30 days, admin": lambda: browser.get("/insights"),
                }
                return {name: await timed(q, runs) for name, q in queries.items()}
            finally:
                for client in (admin_api, reader_api, browser):
                    await client.aclose()
        finally:
            await services.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def main(flags: argparse.Namespace) -> None:
    if flags.postgres:
        url, drop = pg_database(flags.postgres, "conveyor_bench_insights")
        try:
            results = await run(url, flags.size, flags.runs)
        finally:
            drop()
    else:
        results = await run("", flags.size, flags.runs)
    db = "PostgreSQL" if flags.postgres else "SQLite"
    print(f"\nInsights at {flags.size:,} deployments ({db}, Python {sys.version.split()[0]}, ")
    print(f"{flags.runs} runs; ms; goal {GOAL_MS:.0f} ms)")
    print(f"{'request':<24}{'p50':>10}{'p95':>10}{'CPU p50':>10}  goal (p95)")
    for name, (wall, cpu) in results.items():
        ok = "ok" if p95(wall) <= GOAL_MS else "OVER"
        print(
            f"{name:<24}{statistics.median(wall):>10.1f}{p95(wall):>10.1f}"
            f"{statistics.median(cpu):>10.1f}  {ok}"
        )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL")
    asyncio.run(main(parser.parse_args()))
