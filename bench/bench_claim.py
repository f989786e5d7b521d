"""Claim latency and answer-to-resume with two `conveyor server` nodes on one PostgreSQL
(issue 11, item 5).

Run: .venv/bin/python bench/bench_claim.py [--deployments 400] [--resumes 30]
     [--claim-tasks 3000] [--connections 20] [--postgres URL]
     (the URL defaults to CONVEYOR_TEST_POSTGRES_URL)

One fresh PostgreSQL database (dropped afterwards) and one data folder shared by the nodes:

1. Queue to claim. Two real server processes (bench-a and bench-b, default slots) run
   ``--deployments`` deployments of a one-step script (`sleep 1`), each of its own project and
   environment (so none waits for another under the one-per-project-and-environment rule),
   submitted through both nodes' APIs in turn: a quarter at once, then another quarter at once,
   then the other half steadily at 20 a second. Claim latency = tasks.started_at -
   tasks.created_at, as the servers stamp them; both stamps are taken before the transaction
   gets a connection, so the benchmark also reads the tasks itself on every NOTIFY and every
   10 ms: two reads in a row bound when a deployment committed and when its claim did, by the
   database's clock, which gives committed -> claimed at most and at least. Also shown: the
   deploy request's HTTP time; which node claimed each task (tasks.node sampled while it runs:
   the column is cleared when it ends); and what the nodes' database sessions in a transaction
   were doing on average (pg_stat_activity every 20 ms), which shows where the time goes.
2. Answer to resume across nodes. bench-a restarts with CONVEYOR_TASK_SLOTS=0 (it serves the
   API and runs nothing); a project with a manual intervention and then a script step is
   deployed ``--resumes`` times, one after the other: once it waits, the intervention is
   answered through bench-a; latency = from the answer's HTTP response to the script step's
   started_at on bench-b, split by the servers' stamps: answered (interruptions.answered_at),
   claimed (tasks.lease_expires_at - the lease) and step started.
3. The claim transaction alone. With the servers stopped, ``--claim-tasks`` deployments, each of
   its own project and environment, are queued through `conveyor.store.runs.queue`, and two
   processes call `conveyor.services.queue.claim_many` in a loop until none is left, timing each
   call: p50/p99 per call and tasks per second, claiming 1 and then the node's batch per call.
   Every task must be claimed exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psycopg
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from throwaway_db import pg_database

import conveyor
from conveyor.engine.node import CLAIM_BATCH
from conveyor.engine.sandbox import status as sandbox_status
from conveyor.services import queue
from conveyor.services.core import Services, bootstrap
from conveyor.settings import Settings
from conveyor.store import runs
from conveyor.store import tables as t

CONVEYOR = Path(sys.executable).with_name("conveyor")
ENVIRONMENTS = 4  # deployment environments of part 1: projects = deployments / 4
LEASE_SECONDS = 20.0  # set on both servers, so that a claim's time is lease_expires_at - this
STEADY_PER_SECOND = 20.0
TERMINAL = ("success", "failed", "canceled", "timed_out")
# In a server's log: an exception's last line, or an error or warning it logged.
EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Detected|Lost)\b")
LOGGED = re.compile(r"\b(ERROR|WARNING)\b")
NODES = ("bench-a", "bench-b")
BENCH = "conveyor-bench"  # the application_name of the benchmark's own connections
# The tasks not seen before, and the tasks not seen claimed before (claimed: no longer queued).
COMMITS = """
SELECT statement_timestamp(),
  array(SELECT id FROM tasks WHERE id <> ALL(%s)),
  array(SELECT id FROM tasks WHERE state <> 'queued' AND id <> ALL(%s))
"""
# What each of the nodes' sessions that is in a transaction is doing.
SESSIONS = """
SELECT CASE
    WHEN wait_event = 'advisory' THEN 'waiting for advisory lock ' || coalesce((
        SELECT max(objid)::text FROM pg_locks l
        WHERE l.pid = a.pid AND l.locktype = 'advisory' AND NOT l.granted), '(just granted)')
    WHEN wait_event IN ('transactionid', 'tuple') THEN 'waiting for a row of ' || coalesce((
        SELECT max(relation::regclass::text) FROM pg_locks l
        WHERE l.pid = a.pid AND l.locktype = 'tuple'), 'a table')
    WHEN wait_event_type = 'Lock' THEN 'waiting for a lock (' || wait_event || ')'
    WHEN state = 'active' THEN 'running SQL'
    ELSE 'idle in transaction (the node is busy in Python, or waits for the CPU)'
  END, count(*)
FROM pg_stat_activity a
WHERE datname = current_database() AND state NOT IN ('idle', 'disabled')
  AND backend_type = 'client backend' AND application_name <> %s
GROUP BY 1
"""
Job = Callable[[], Coroutine[Any, Any, Any]]


# ---------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: of 30 values, p99 is the largest."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Row:
    label: str
    values: list[float]  # milliseconds
    goal: str = ""

    def cells(self) -> str:
        if not self.values:
            return f"{'(none)':>9}"
        p50, p99 = percentile(self.values, 0.5), percentile(self.values, 0.99)
        return f"{p50:>9.1f}{p99:>9.1f}{max(self.values):>9.1f}{len(self.values):>6}"


def print_rows(title: str, rows: Sequence[Row]) -> None:
    print(f"\n{title}")
    print(f"  {'':<52}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'n':>6}  goal")
    for row in rows:
        print(f"  {row.label:<52}{row.cells()}  {row.goal}")


def ms(later: datetime, earlier: datetime) -> float:
    return (aware(later) - aware(earlier)).total_seconds() * 1000


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def task_number(public: str) -> int:
    """``"ServerTasks-12"`` -> 12."""
    return int(public.rsplit("-", 1)[1])


def advisory_locks() -> dict[str, str]:
    """The advisory locks' keys and the names of their constants in the code (EVENT_LOCK)."""
    found: dict[str, str] = {}
    for path in Path(conveyor.__file__).parent.rglob("*.py"):
        for name, key in re.findall(r"^(\w+_LOCK) = ([\d_]+)$", path.read_text(), re.MULTILINE):
            found[key.replace("_", "")] = name
    return found


def named(doing: str, locks: dict[str, str]) -> str:
    """An advisory lock by its name in the code."""
    for key, name in locks.items():
        doing = doing.replace(f"advisory lock {key}", f"advisory lock {name}")
    return doing


def claimed_ids(claimed: Sequence[Any]) -> list[int]:
    """What claim_many returned: task ids, or leases with a ``task_id``."""
    return [c if isinstance(c, int) else int(c.task_id) for c in claimed]


# ---------------------------------------------------------------- the servers


def config(projects: int, queue_environments: int) -> str:
    claim_envs = [f"Claim {e}" for e in range(ENVIRONMENTS)]
    lines = ["environments:", *(f"  - name: {e}" for e in claim_envs), "  - name: Resume"]
    # Part 3 queues straight into the store: these need no lifecycle.
    lines += [f"  - name: Queue {e}" for e in range(queue_environments)]
    lines += ["lifecycles:", "  - name: Claim", "    phases:", "      - name: Claim"]
    lines += [f"        environments: [{', '.join(claim_envs)}]"]
    lines += ["  - name: Resume", "    phases:", "      - name: Resume"]
    lines += ["        environments: [Resume]", "project_groups:", "  - name: Bench", "projects:"]
    for name in ["Warm", *(f"App {p}" for p in range(projects))]:
        lines += [f"  - name: {name}", "    group: Bench", "    lifecycle: Claim", "    process:"]
        lines += ["      steps:", "        - name: Run", "          type: script"]
        lines += ["          script: sleep 1"]
    lines += ["  - name: Approval", "    group: Bench", "    lifecycle: Resume", "    process:"]
    lines += ["      steps:", "        - name: Approve", "          type: manual_intervention"]
    lines += ["          instructions: Go on", "        - name: Then", "          type: script"]
    lines += ["          script: echo resumed"]
    return "\n".join(lines) + "\n"


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes] = field(repr=False)
    log: Path


class Cluster:
    """Server processes on one data folder and one database, started and stopped by name."""

    def __init__(self, data: Path, database_url: str, connections: int) -> None:
        self.data = data
        self.database_url = database_url
        self.connections = connections
        self.api_key = ""
        self.servers: dict[str, Server] = {}
        self.starts = 0

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env |= {
            "CONVEYOR_DATA_DIR": str(self.data / "data"),
            "CONVEYOR_DATABASE_URL": self.database_url,
            "CONVEYOR_LEASE_SECONDS": str(LEASE_SECONDS),
            "CONVEYOR_DATABASE_CONNECTIONS": str(self.connections),
        }
        if not sandbox_status(Settings(allow_unsandboxed_scripts=False)).usable:
            env["CONVEYOR_ALLOW_UNSANDBOXED_SCRIPTS"] = "true"
        return env | (extra or {})

    def cli(self, *args: str, server: Server | None = None) -> str:
        extra = {"CONVEYOR_API_KEY": self.api_key}
        if server:
            extra["CONVEYOR_SERVER"] = server.url
        done = subprocess.run(
            [str(CONVEYOR), *args],
            env=self.env(extra),
            capture_output=True,
            text=True,
            cwd=self.data,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"conveyor {' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done.stdout

    def init(self) -> None:
        self.api_key = json.loads(self.cli("admin", "init", "--output", "json"))["api_key"]

    def start(self, *names: str, slots: int | None = None) -> None:
        for name in names:
            port = free_port()
            self.starts += 1
            log = self.data / f"{name}-{self.starts}.log"
            extra = {"CONVEYOR_NODE_NAME": name}
            if slots is not None:
                extra["CONVEYOR_TASK_SLOTS"] = str(slots)
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [str(CONVEYOR), "server", "--port", str(port)],
                    env=self.env(extra),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.data,
                )
            self.servers[name] = Server(name, f"http://127.0.0.1:{port}", proc, log)
        for name in names:
            wait_for_api(self.servers[name])

    def stop(self, name: str) -> None:
        proc = self.servers[name].proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in self.servers:
            self.stop(name)

    def problems(self) -> list[str]:
        """What went wrong in the servers' logs: each distinct exception or logged error or
        warning, how often, and in which log."""
        found: Counter[str] = Counter()
        for log in sorted(self.data.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if EXCEPTION.match(line) or LOGGED.search(line):
                    found[f"{log.stem}: {line[:220]}"] += 1
        return [f"{count:>4} x {line}" for line, count in found.most_common(12)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_api(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            if httpx.get(f"{server.url}/api/v1", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    tail = server.log.read_text(errors="replace")[-5000:]
    raise SystemExit(f"{server.name} did not start:\n{tail}")


class Api:
    """The HTTP API of each node, as the admin."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.client = httpx.AsyncClient(
            headers={"X-Api-Key": cluster.api_key},
            timeout=60,
            limits=httpx.Limits(max_connections=300, max_keepalive_connections=300),
        )

    async def call(self, node: str, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.cluster.servers[node].url}/api/v1{path}"
        response = await self.client.request(method, url, json=body)
        if response.status_code >= 400:
            raise SystemExit(f"{method} {path} on {node}: {response.status_code} {response.text}")
        return response.json()

    async def deploy(self, node: str, project: str, environment: str) -> int:
        body = {"project": project, "version": "1.0.0", "environment": environment}
        return task_number((await self.call(node, "POST", "/deployments", body))["task"])

    async def release(self, node: str, project: str) -> None:
        await self.call(node, "POST", f"/projects/{project}/releases", {"version": "1.0.0"})


async def wait_ended(db: AsyncEngine, task_ids: Sequence[int], within: float = 180) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with db.connect() as conn:
            states = (
                await conn.execute(select(t.tasks.c.state).where(t.tasks.c.id.in_(list(task_ids))))
            ).scalars()
            open_ = [s for s in states if s not in TERMINAL]
        if not open_:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{len(open_)} of {len(task_ids)} tasks did not end in {within:.0f} s")


# ---------------------------------------------------------------- 1. queue to claim


@dataclass
class Submitted:
    task_id: int
    phase: str
    via: str
    requested: float  # time.time() when the deploy request was sent
    responded: float  # and when its response arrived


class Watch:
    """What the benchmark sees of the tasks while they run, from its own connections, in
    threads: its event loop is busy sending requests, and would see everything late."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.node: dict[int, str] = {}  # the node that held it
        # When each task's deployment committed, and its claim, by the database's clock: after
        # the last read that did not see it, at or before the first that did (a read sees what
        # committed before it began). The servers' own stamps (created_at, started_at) are
        # taken before their transaction waits for a connection from the pool.
        self.committed: dict[int, tuple[datetime, datetime]] = {}
        self.claimed: dict[int, tuple[datetime, datetime]] = {}
        # The nodes' database sessions: what they were doing, summed over samples, per phase.
        self.phase = ""
        self.sessions: dict[str, Counter[str]] = {}
        self.samples: Counter[str] = Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.nodes), threading.Thread(target=self.commits)]

    def __enter__(self) -> Watch:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def nodes(self) -> None:
        """Which node holds each task, read while it runs (the column is cleared at its end),
        and what the nodes' database sessions are doing (where the time goes)."""
        with psycopg.connect(self.url, autocommit=True, application_name=BENCH) as conn:
            while not self.stop.wait(0.02):
                for task_id, node in conn.execute(
                    "SELECT id, node FROM tasks WHERE node IS NOT NULL"
                ).fetchall():
                    self.node.setdefault(task_id, node)
                sessions = self.sessions.setdefault(self.phase, Counter())
                for doing, count in conn.execute(SESSIONS, (BENCH,)).fetchall():
                    sessions[doing] += count
                self.samples[self.phase] += 1

    def busy(self, phase: str) -> str:
        """The nodes' sessions in a transaction, on average while ``phase`` ran."""
        samples = max(1, self.samples[phase])
        sessions = self.sessions.get(phase, Counter())
        locks = advisory_locks()
        return ", ".join(
            f"{n / samples:.1f} {named(doing, locks)}" for doing, n in sessions.most_common()
        )

    def commits(self) -> None:
        """Read the tasks on each NOTIFY a commit sends (as the nodes are woken) and every
        10 ms: the time between two reads bounds when what the second saw first committed,
        by the database's clock, however late this process runs."""
        with psycopg.connect(self.url, autocommit=True, application_name=BENCH) as conn:
            conn.execute("LISTEN conveyor_tasks")
            before = None
            while not self.stop.is_set():
                # Not "above the last id seen": concurrent deployments commit out of id order.
                read, new, taken = conn.execute(
                    COMMITS, (list(self.committed), list(self.claimed))
                ).fetchall()[0]
                # (The tasks there at the first read, not measured, get no window at all.)
                self.committed |= {task_id: (before or read, read) for task_id in new}
                self.claimed |= {task_id: (before or read, read) for task_id in taken}
                before = read
                for _ in conn.notifies(timeout=0.01, stop_after=1):
                    pass


async def queue_to_claim(api: Api, db: AsyncEngine, url: str, count: int) -> tuple[list[Row], str]:
    projects = math.ceil(count / ENVIRONMENTS)
    await gather_limited(
        [partial(api.release, NODES[p % 2], f"App {p}") for p in range(projects)], 20
    )
    await api.release("bench-a", "Warm")
    for i in range(4):  # each node loads the configuration and runs a script once
        await wait_ended(db, [await api.deploy(NODES[i % 2], "Warm", "Claim 0")])
    pairs = [(f"App {p}", f"Claim {e}") for e in range(ENVIRONMENTS) for p in range(projects)]
    pairs = pairs[:count]
    quarter = count // 4
    phases = [
        ("burst", pairs[:quarter]),
        ("burst", pairs[quarter : 2 * quarter]),
        ("steady", pairs[2 * quarter :]),
    ]
    submitted: list[Submitted] = []
    with Watch(url) as watch:
        for phase, chunk in phases:
            watch.phase = phase
            work = [
                partial(submit, api, submitted, i, phase, p, e) for i, (p, e) in enumerate(chunk)
            ]
            await (gather_limited(work, len(work)) if phase == "burst" else steadily(work))
            await wait_ended(db, [s.task_id for s in submitted[-len(work) :]])
    async with db.connect() as conn:
        rows = {
            int(r.id): r
            for r in await conn.execute(
                select(
                    t.tasks.c.id,
                    t.tasks.c.created_at,
                    t.tasks.c.started_at,
                    t.tasks.c.state,
                    t.tasks.c.error,
                ).where(t.tasks.c.id.in_([s.task_id for s in submitted]))
            )
        }
    busy = "".join(f"\n    {phase}: {watch.busy(phase) or 'none'}" for phase in ("burst", "steady"))
    note = f"the nodes' database sessions in a transaction, on average:{busy}"
    return claim_rows(submitted, watch, rows, quarter), split_note(submitted, watch, rows) + (
        "\n  " + note
    )


async def submit(
    api: Api, submitted: list[Submitted], index: int, phase: str, project: str, environment: str
) -> None:
    via = NODES[index % 2]
    requested = time.time()
    task_id = await api.deploy(via, project, environment)
    submitted.append(Submitted(task_id, phase, via, requested, time.time()))


def claim_rows(
    submitted: Sequence[Submitted], watch: Watch, rows: dict[int, Any], quarter: int
) -> list[Row]:
    created: dict[str, list[float]] = {"burst": [], "steady": []}
    at_most: dict[str, list[float]] = {"burst": [], "steady": []}
    at_least: list[float] = []
    transaction: list[float] = []
    for s in submitted:
        row = rows[s.task_id]
        after, by = watch.committed[s.task_id]
        claimed_after, claimed_by = watch.claimed[s.task_id]
        created[s.phase].append(ms(row.started_at, row.created_at))
        at_most[s.phase].append(ms(claimed_by, after))
        at_least.append(ms(claimed_after, by))
        transaction.append(ms(after, row.created_at))
    bursts = f"  {len(created['burst'])} in two bursts of {quarter}"
    steady = f"  {len(created['steady'])} steadily, {STEADY_PER_SECOND:g}/s"
    count = len(submitted)
    return [
        Row(
            f"all {count}: created -> claimed",
            created["burst"] + created["steady"],
            "p50 <= 20, p99 <= 100",
        ),
        Row(bursts, created["burst"]),
        Row(steady, created["steady"]),
        Row(f"all {count}: committed -> claimed, at most", at_most["burst"] + at_most["steady"]),
        Row(bursts, at_most["burst"]),
        Row(steady, at_most["steady"]),
        Row(f"all {count}: committed -> claimed, at least", at_least),
        Row("all: created -> committed, at least", transaction),
        Row("the deploy request (HTTP)", [(s.responded - s.requested) * 1000 for s in submitted]),
    ]


def split_note(submitted: Sequence[Submitted], watch: Watch, rows: dict[int, Any]) -> str:
    held = [watch.node.get(s.task_id) for s in submitted]
    split = ", ".join(f"{n} {held.count(n)}" for n in sorted({h for h in held if h}))
    note = f"claimed by {split}"
    if None in held:
        note += f", not seen running {held.count(None)}"
    local = sum(1 for s, h in zip(submitted, held, strict=True) if h == s.via)
    note += f"; by the node that took the deploy request: {local}"
    failed = [r for r in rows.values() if r.state != "success"]
    if failed:
        reasons = Counter(f"{r.state}: {str(r.error).splitlines()[0][:200]}" for r in failed)
        note += f"\n  NOT SUCCESSFUL: {len(failed)}: " + "; ".join(
            f"{count} x {reason}" for reason, count in reasons.most_common(3)
        )
    return note


async def gather_limited(work: Sequence[Job], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(job: Job) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in work))


async def steadily(work: Sequence[Job]) -> None:
    """Start each job at its time, STEADY_PER_SECOND a second, without waiting for the last."""
    start = time.monotonic()
    jobs: list[asyncio.Task[Any]] = []
    for i, job in enumerate(work):
        await asyncio.sleep(max(0.0, start + i / STEADY_PER_SECOND - time.monotonic()))
        jobs.append(asyncio.create_task(job()))
    await asyncio.gather(*jobs)


# ---------------------------------------------------------------- 2. answer to resume


@dataclass
class Resume:
    requested: float
    responded: float
    answered_at: datetime
    claimed_at: datetime
    started_at: datetime
    node: str | None


async def answer_to_resume(api: Api, db: AsyncEngine, count: int) -> tuple[list[Row], str]:
    await api.release("bench-a", "Approval")
    resumes = [await resume_once(api, db) for _ in range(count + 1)][1:]  # the first warms up
    on_b = sum(1 for r in resumes if r.node == "bench-b")
    renewed = [r for r in resumes if r.claimed_at > r.started_at]
    split = [r for r in resumes if r not in renewed]
    rows = [
        Row(
            "answer's HTTP response -> next step started",
            [ms(r.started_at, from_epoch(r.responded)) for r in resumes],
            "p50 <= 100",
        ),
        Row(
            "  answer's HTTP request sent -> next step started",
            [ms(r.started_at, from_epoch(r.requested)) for r in resumes],
        ),
        Row("  the answer's HTTP request", [(r.responded - r.requested) * 1000 for r in resumes]),
        Row(
            "  answered_at -> claimed on bench-b (their stamps)",
            [ms(r.claimed_at, r.answered_at) for r in split],
        ),
        Row("  claimed -> step started", [ms(r.started_at, r.claimed_at) for r in split]),
    ]
    note = f"resumed on bench-b: {on_b} of {len(resumes)} (bench-a has 0 slots)"
    if renewed:
        note += f"; {len(renewed)} lease(s) renewed before read: left out of the split"
    return rows, note


async def resume_once(api: Api, db: AsyncEngine) -> Resume:
    task_id = await api.deploy("bench-a", "Approval", "Resume")
    interruption = await poll(
        db,
        select(t.interruptions.c.id).where(
            t.interruptions.c.task_id == task_id, t.interruptions.c.state == "pending"
        ),
        0.005,
    )
    requested = time.time()
    await api.call(
        "bench-a",
        "POST",
        f"/interruptions/Interruptions-{interruption.id}/submit",
        {"result": "proceed"},
    )
    responded = time.time()
    step = await poll(
        db,
        select(
            t.task_steps.c.started_at,
            t.tasks.c.node,
            t.tasks.c.lease_expires_at,
            t.interruptions.c.answered_at,
        )
        .join(t.tasks, t.tasks.c.id == t.task_steps.c.task_id)
        .join(t.interruptions, t.interruptions.c.id == interruption.id)
        .where(
            t.task_steps.c.task_id == task_id,
            t.task_steps.c.name == "Then",
            t.task_steps.c.started_at.is_not(None),
        ),
        0.002,
    )
    await wait_ended(db, [task_id], within=30)
    return Resume(
        requested,
        responded,
        aware(step.answered_at),
        aware(step.lease_expires_at) - timedelta(seconds=LEASE_SECONDS),
        aware(step.started_at),
        step.node,
    )


async def poll(db: AsyncEngine, query: Any, every: float, within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is not None:
            return row
        await asyncio.sleep(every)
    raise SystemExit(f"nothing came of {query} in {within:.0f} s")


# ---------------------------------------------------------------- 3. the claim transaction


async def queue_directly(services: Services, projects: int, environments: list[str]) -> int:
    """One deployment of each project to each of ``environments``, through the store's writer."""
    async with services.read() as session:
        env_ids = {
            r.name: r.id
            for r in await session.execute(select(t.environments.c.name, t.environments.c.id))
        }
        releases = (
            await session.execute(
                select(t.projects.c.name, t.releases.c.id, t.releases.c.project_id).join(
                    t.releases, t.releases.c.project_id == t.projects.c.id
                )
            )
        ).all()
    apps = [r for r in releases if r.name.startswith("App ")][:projects]
    new = [
        runs.NewRun(
            release_id=r.id,
            release_version="1.0.0",
            release_channel="Default",
            project_id=r.project_id,
            environment_id=env_ids[e],
            description=f"Deploy {r.name} 1.0.0 to {e}",
            created_by_id=None,
            created_by="bench",
            skip=(),
            guided_failure=False,
            variables=(),
            steps=(("Run", "script"),),
        )
        for e in environments
        for r in apps
    ]
    for start in range(0, len(new), 250):
        async with services.write() as session:
            for run in new[start : start + 250]:
                await runs.queue(session, services.clock(), run, sqlite=False)
    return len(new)


def claim_round(data: Path, url: str, limit: int) -> tuple[list[float], int, float, set[int]]:
    """Two worker processes claim until the queue is empty: per-call times (ms, calls that
    claimed something), tasks claimed, wall seconds, and the ids claimed twice."""
    args = [sys.executable, __file__, "--postgres", url, "--data", str(data), "--limit", str(limit)]
    workers = [
        subprocess.Popen(
            [*args, "--claim-worker", f"claimer-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise SystemExit("a claim worker did not start")
    for worker in workers:  # both go at once
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = [json.loads(worker.communicate(timeout=300)[0]) for worker in workers]
    calls = [c for r in results for c in r["calls"]]
    ids = [i for r in results for i in r["ids"]]
    wall = max(r["last"] for r in results) - min(r["first"] for r in results)
    twice = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
    return [c[0] for c in calls if c[1]], len(set(ids)), wall, twice


async def claim_worker(data: Path, url: str, name: str, limit: int) -> None:
    services = bootstrap(Settings(data_dir=data, database_url=url, run_engine=False))
    lease = timedelta(seconds=LEASE_SECONDS)
    async with services.read() as session:  # the pool's first connection, before the clock
        await session.execute(text("SELECT 1"))
    print("ready", flush=True)
    sys.stdin.readline()
    calls: list[tuple[float, int]] = []
    ids: list[int] = []
    first = last = time.time()
    empty = 0
    while empty < 3:  # the other process may hold the last ones a moment: ask again
        start = time.perf_counter()
        claimed = claimed_ids(await queue.claim_many(services, name, lease, limit))
        calls.append(((time.perf_counter() - start) * 1000, len(claimed)))
        if claimed:
            ids += claimed
            last = time.time()
            empty = 0
        else:
            empty += 1
            await asyncio.sleep(0.01)
    await services.close()
    print(json.dumps({"calls": calls, "ids": ids, "first": first, "last": last}))


async def claim_transaction(
    data: Path, url: str, projects: int, tasks: int
) -> tuple[list[Row], list[str]]:
    per_round = math.ceil(tasks / projects)
    services = bootstrap(Settings(data_dir=data / "data", database_url=url, run_engine=False))
    rows: list[Row] = []
    notes: list[str] = []
    try:
        for number, limit in enumerate((1, CLAIM_BATCH)):
            # Fresh environments each round: the first round's tasks still hold theirs.
            environments = [f"Queue {number * per_round + e}" for e in range(per_round)]
            queued = await queue_directly(services, projects, environments)
            times, claimed, wall, twice = claim_round(data / "data", url, limit)
            rows.append(Row(f"claim_many({limit}) per call, 2 processes", times))
            notes.append(
                f"claim_many({limit}): {claimed} of {queued} queued claimed in {wall:.2f} s, "
                f"{claimed / wall:,.0f} tasks/s"
                + (f"; CLAIMED TWICE: {len(twice)}" if twice else "; none claimed twice")
            )
    finally:
        await services.close()
    return rows, notes


# ---------------------------------------------------------------- main


@contextmanager
def cluster_on(server_url: str, connections: int) -> Iterator[tuple[Cluster, str]]:
    url, drop = pg_database(server_url, "conveyor_bench_claim")
    data = Path(tempfile.mkdtemp(prefix="conveyor-bench-claim-"))
    cluster = Cluster(data, url, connections)
    try:
        yield cluster, url
    except BaseException:
        for problem in cluster.problems():  # the folder goes: show why a server failed first
            print(problem, file=sys.stderr)
        raise
    finally:
        cluster.stop_all()
        shutil.rmtree(data, ignore_errors=True)
        drop()


async def main(
    deployments: int, resumes: int, claim_tasks: int, server_url: str, connections: int
) -> None:
    projects = math.ceil(deployments / ENVIRONMENTS)
    queue_envs = 2 * math.ceil(claim_tasks / projects)
    started = time.monotonic()
    load_before = os.getloadavg()[0]  # others' work on the machine skews every figure
    with cluster_on(server_url, connections) as (cluster, url):
        cluster.init()
        cluster.start("bench-a", "bench-b")
        (cluster.data / "config.yaml").write_text(config(projects, queue_envs))
        cluster.cli(
            "apply", "-f", str(cluster.data / "config.yaml"), server=cluster.servers["bench-a"]
        )
        db = create_async_engine(url, pool_size=5, connect_args={"application_name": BENCH})
        api = Api(cluster)
        try:
            claim_rows, claim_note = await queue_to_claim(api, db, url, deployments)
            cluster.stop("bench-a")
            cluster.start("bench-a", slots=0)
            resume_rows, resume_note = await answer_to_resume(api, db, resumes)
        finally:
            await api.client.aclose()
            await db.dispose()
        cluster.stop_all()
        transaction_rows, transaction_notes = await claim_transaction(
            cluster.data, url, projects, claim_tasks
        )
        problems = cluster.problems()
    print(
        f"Two `conveyor server` nodes on PostgreSQL, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}, {connections} database connections a node; "
        f"{time.monotonic() - started:.0f} s in all; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print_rows("1. Queue to claim (tasks.started_at - created_at)", claim_rows)
    print(f"  {claim_note}")
    print_rows(
        "2. Answer to resume across nodes (answered through bench-a, run on bench-b)", resume_rows
    )
    print(f"  {resume_note}")
    print_rows("3. The claim transaction alone (queue.claim_many)", transaction_rows)
    for note in transaction_notes:
        print(f"  {note}")
    if problems:
        print("\nIN THE SERVER LOGS (the most frequent):\n" + "\n".join(problems))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=400)
    parser.add_argument("--resumes", type=int, default=30)
    parser.add_argument("--claim-tasks", type=int, default=3000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("CONVEYOR_TEST_POSTGRES_URL"),
        help="a PostgreSQL server URL (default: CONVEYOR_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=20,
        help="CONVEYOR_DATABASE_CONNECTIONS of each node (default 20: two nodes at the default "
        "40 leave little of PostgreSQL's default max_connections of 100 to anyone else)",
    )
    # A claim process of part 3, started by the benchmark itself.
    parser.add_argument("--claim-worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.postgres:
        raise SystemExit(
            "Two nodes need PostgreSQL: pass --postgres URL or set CONVEYOR_TEST_POSTGRES_URL"
        )
    if args.claim_worker:
        asyncio.run(claim_worker(args.data, args.postgres, args.claim_worker, args.limit))
    else:
        asyncio.run(
            main(args.deployments, args.resumes, args.claim_tasks, args.postgres, args.connections)
        )
