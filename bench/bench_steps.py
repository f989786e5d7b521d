"""Per-step orchestration overhead: a release of N no-op script steps, against a plain loop.

Run: .venv/bin/python bench/bench_steps.py [--steps 1 10 50] [--runs 5] [--postgres URL]

For each N it deploys a release whose process has N script steps (`echo step i`) and measures,
from the deployment request to the task's success, the time Conveyor took; next to it, the time
of running the same N commands in a plain loop of subprocesses, measured in the same run. The
slope (T(N) - T(1)) / (N - 1) is the cost of one more step.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from conveyor.engine.node import Node
from conveyor.services import deployments, releases
from conveyor.services.access import caller_for_user, get_user
from conveyor.services.configfile import apply_text
from conveyor.services.core import bootstrap
from conveyor.services.users import initialise
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.db import upgrade

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


def project(n: int) -> str:
    steps = "".join(
        f"          - name: Step {i}\n            type: script\n            script: echo step {i}\n"
        for i in range(1, n + 1)
    )
    return (
        f"  - name: Steps {n}\n    group: Bench\n    lifecycle: Bench\n"
        f"    process:\n      steps:\n{steps}"
    )


def shell_loop(n: int) -> float:
    start = time.perf_counter()
    for i in range(1, n + 1):
        subprocess.run(["bash", "-c", f"echo step {i}"], check=True, capture_output=True)
    return time.perf_counter() - start


async def deploy_once(services: object, caller: object, n: int) -> float:
    release = await releases.create_release(services, caller, f"Steps {n}")  # type: ignore[arg-type]
    queued = await deployments.deploy(services, caller, f"Steps {n}", release.version, "Bench")  # type: ignore[arg-type]
    while True:  # a light poll: the times come from what the task recorded, not from here
        async with services.read() as session:  # type: ignore[attr-defined]
            row = (
                await session.execute(select(t.tasks).where(t.tasks.c.id == queued.task_id))
            ).one()
        if row.state in ("success", "failed", "canceled", "timed_out"):
            break
        await asyncio.sleep(0.05)
    if row.state != "success":
        raise SystemExit(f"the benchmark deployment ended {row.state}")
    return float((row.completed_at - row.created_at).total_seconds())


async def main(sizes: list[int], runs: int, database_url: str | None) -> None:
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
        await apply_text(services, admin, HEAD + "".join(project(n) for n in sizes))
        node = Node(services, slots=4, name="bench")
        await node.start()
        results: dict[int, tuple[list[float], list[float]]] = {}
        for _ in range(runs):
            for n in sizes:  # alternate ours and the plain loop within each run
                ours = await deploy_once(services, admin, n)
                plain = await asyncio.to_thread(shell_loop, n)
                results.setdefault(n, ([], []))[0].append(ours)
                results[n][1].append(plain)
        await node.stop()
        await services.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    db = "PostgreSQL" if database_url else "SQLite"
    print(
        f"Conveyor per-step overhead ({db}, Python {sys.version.split()[0]}, {runs} runs, median)"
    )
    print(f"{'steps':>6} {'conveyor s':>11} {'plain loop s':>13} {'ratio':>7}")
    medians = {}
    for n in sizes:
        ours, plain = (statistics.median(v) for v in results[n])
        medians[n] = (ours, plain)
        print(f"{n:>6} {ours:>11.3f} {plain:>13.3f} {ours / plain:>7.1f}x")
    if len(sizes) > 1:
        low, high = min(sizes), max(sizes)
        slope = (medians[high][0] - medians[low][0]) / (high - low)
        plain_slope = (medians[high][1] - medians[low][1]) / (high - low)
        print(
            f"slope: {slope * 1000:.1f} ms per step (plain loop {plain_slope * 1000:.1f} ms); "
            f"overhead above the loop {(slope - plain_slope) * 1000:.1f} ms per step"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    asyncio.run(main(args.steps, args.runs, args.postgres))
