"""Deploying to machines (issue 12, item 9): targets on this machine, half agents and half SSH,
a 50 MB package, against a plain `ssh`/`scp` loop doing the same work in the same run.

Run (as root: it starts sshd): .venv/bin/python bench/bench_targets.py
     [--ssh 10] [--agents 10] [--megabytes 50] [--runs 3]

A real `conveyor server` (SQLite, its own data folder), ``--ssh`` real sshd processes on
loopback (each an ssh target), ``--agents`` real `conveyor agent run` processes (each enrolled
with a token), and ``--agents`` more sshd processes that stand in for the agents' machines in
the loop, so that the loop reaches as many machines as Conveyor does. The package holds random
bytes (incompressible), as a .tar.gz. Timed, each ``--runs`` times (median, and best):

1. **deploy**: a package step to every target at once, on a machine that has never seen the
   package (its files and extracted versions are removed before each run): from the deploy
   request (HTTP) to the task's end. Loop: for every machine at once (`&`, `wait`), `scp` the
   file, then one `ssh` that makes the version folder, extracts and switches `current`.
2. **redeploy**: the same release again: Conveyor sends nothing (the machines hold that exact
   file); the loop, which knows nothing, does everything again. Goal: faster than the loop.
3. **no-op script, per target**: a step running `true` on every target one at a time
   (`window: 1`), divided by the number of targets. Loop: `ssh HOST true` one machine after
   another, divided the same way.

Goal (the issue's): the first deploy within 1.5x of the loop, the redeploy faster than it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.sshd import Sshd, free_port, start_sshd

CONVEYOR = Path(sys.executable).with_name("conveyor")
PACKAGE = "Payload"
ENDED = ("success", "failed", "canceled", "timed_out")

CONFIG = """
environments:
  - name: Bench
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Bench]
project_groups:
  - name: Bench
targets:
{targets}
projects:
  - name: Payload
    group: Bench
    lifecycle: Anywhere
    process:
      steps:
        - name: Deploy payload
          type: package
          package: Payload
          target_roles: [app]
  - name: Noop
    group: Bench
    lifecycle: Anywhere
    process:
      steps:
        - name: Nothing
          type: script
          target_roles: [app]
          window: 1
          script: "true"
"""


def env_for(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return env | {"CONVEYOR_DATA_DIR": str(data), "CONVEYOR_TARGET_CHECK_SECONDS": "0"} | extra


def cli(data: Path, *args: str, **extra: str) -> str:
    done = subprocess.run(
        [str(CONVEYOR), *args], env=env_for(data, **extra), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"conveyor {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextmanager
def server(data: Path) -> Iterator[tuple[str, str]]:
    """A real server on a free port: (its URL, the admin's API key)."""
    secrets = json.loads(cli(data, "admin", "init", "--output", "json"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(CONVEYOR), "server", "--port", str(port)],
        env=env_for(data),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/v1", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the server did not start: see {data / 'server.log'}")
            time.sleep(0.1)
        yield url, secrets["api_key"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def make_package(folder: Path, megabytes: int) -> Path:
    """Payload.1.0.0.tar.gz with ``megabytes`` of random bytes and a small text file."""
    content = folder / "content"
    content.mkdir()
    with (content / "blob.bin").open("wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1024 * 1024))
    (content / "VERSION").write_text("1.0.0\n")
    archive = folder / f"{PACKAGE}.1.0.0.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(content.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def target_yaml(name: str, sshd: Sshd | None) -> str:
    if sshd is None:
        return f"  - name: {name}\n    kind: agent\n    environments: [Bench]\n    roles: [app]\n"
    return (
        f"  - name: {name}\n    kind: ssh\n    environments: [Bench]\n    roles: [app]\n"
        f"    host: {sshd.host}\n    port: {sshd.port}\n    user: {sshd.user}\n"
        f"    host_key: {sshd.host_key}\n    private_key: ${{env:KEY_{name.replace('-', '_')}}}\n"
        f"    work_dir: {sshd.folder / 'conveyor'}\n    max_sessions: 8\n"
    )


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/api/v1", headers={"X-Api-Key": key}, timeout=60)

    def deploy(self, project: str, version: str) -> float:
        """Seconds from the deploy request to the task's end; it must succeed."""
        started = time.perf_counter()
        answer = self.http.post(
            "/deployments", json={"project": project, "version": version, "environment": "Bench"}
        )
        answer.raise_for_status()
        task = answer.json()["task"]
        while True:
            state = self.http.get(f"/tasks/{task}").json()["state"]
            if state in ENDED:
                took = time.perf_counter() - started
                if state != "success":
                    log = self.http.get(f"/tasks/{task}/log").text
                    raise SystemExit(f"{project} {version} ended {state}:\n{log[-3000:]}")
                return took
            time.sleep(0.02)


def ssh_options(key: Path) -> list[str]:
    return [
        "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def loop_deploy(machines: list[tuple[Sshd, Path]], archive: Path, parallel: bool) -> float:
    """What a plain script does: scp, then one ssh to extract and switch, per machine."""

    def one(sshd: Sshd, key: Path) -> str:
        base = sshd.folder / "loop"
        remote = f"{sshd.user}@{sshd.host}"
        options = " ".join(ssh_options(key))
        extract = (
            f"mkdir -p {base}/1.0.0 && tar -xzf {base}/{archive.name} -C {base}/1.0.0 "
            f"&& ln -sfn 1.0.0 {base}/current.new && mv -T {base}/current.new {base}/current"
        )
        return (
            f"mkdir -p {base} && scp -q -P {sshd.port} {options} {archive} "
            f"{remote}:{base}/{archive.name} && ssh -p {sshd.port} {options} {remote} '{extract}'"
        )

    lines = [one(sshd, key) for sshd, key in machines]
    if parallel:  # every machine at once; any failure fails the loop
        script = "pids=''\n" + "".join(f'( {line} ) & pids="$pids $!"\n' for line in lines)
        script += "for pid in $pids; do wait $pid; done\n"
    else:
        script = "\n".join(lines) + "\n"
    started = time.perf_counter()
    done = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the ssh/scp loop failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def loop_noop(machines: list[tuple[Sshd, Path]]) -> float:
    started = time.perf_counter()
    for sshd, key in machines:
        subprocess.run(
            ["ssh", "-p", str(sshd.port), *ssh_options(key), f"{sshd.user}@{sshd.host}", "true"],
            check=True,
        )
    return time.perf_counter() - started


def forget(folders: list[Path], *names: str) -> None:
    """A machine that never saw the package: ``names`` are Conveyor's folders (``conveyor``
    for ssh, the agent's ``packages`` and ``targets``) or the loop's (``loop``)."""
    for folder in folders:
        for name in names:
            shutil.rmtree(folder / name, ignore_errors=True)


OURS = ("conveyor", "agent/packages", "agent/targets")


def timed(runs: int, before: Callable[[], None], work: Callable[[], float]) -> list[float]:
    out = []
    for _ in range(runs):
        before()
        out.append(work())
    return out


def show(name: str, ours: list[float], loop: list[float], per: int = 1) -> dict[str, float]:
    o, l_ = statistics.median(ours) / per, statistics.median(loop) / per
    unit, scale = ("ms", 1000) if per > 1 else ("s", 1)
    print(
        f"{name:<28} conveyor {o * scale:8.2f} {unit} (best {min(ours) / per * scale:.2f})   "
        f"loop {l_ * scale:8.2f} {unit} (best {min(loop) / per * scale:.2f})   "
        f"ratio {o / l_:.2f}"
    )
    return {"conveyor": o, "loop": l_, "ratio": o / l_}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ssh", type=int, default=10)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it starts sshd")
    tmp = Path(tempfile.mkdtemp(prefix="bench-targets-"))
    data = tmp / "data"
    data.mkdir()
    sshds: list[Sshd] = []
    agents: list[subprocess.Popen[bytes]] = []
    try:
        archive = make_package(tmp, args.megabytes)
        for i in range(args.ssh + args.agents):  # the agents' stand-ins are sshd's for the loop
            sshds.append(start_sshd(tmp / f"machine-{i + 1}"))
        keys = []
        for sshd in sshds:
            key = sshd.folder / "user_ed25519"
            key.chmod(0o600)
            keys.append(key)
        names = [f"ssh-{i + 1}" for i in range(args.ssh)]
        names += [f"agent-{i + 1}" for i in range(args.agents)]
        machines = list(zip(sshds, keys, strict=True))
        with server(data) as (url, key):
            targets = "".join(
                target_yaml(name, sshds[i] if name.startswith("ssh") else None)
                for i, name in enumerate(names)
            )
            config = tmp / "bench.yaml"
            config.write_text(CONFIG.format(targets=targets))
            secrets = {
                f"KEY_{n.replace('-', '_')}": sshds[i].private_key
                for i, n in enumerate(names[: args.ssh])
            }
            common = {"CONVEYOR_SERVER": url, "CONVEYOR_API_KEY": key}
            cli(data, "apply", "-f", str(config), **common, **secrets)
            cli(data, "package", "push", str(archive), **common)
            for name in names[args.ssh :]:
                token = json.loads(
                    cli(
                        data,
                        "agent",
                        "token",
                        "create",
                        "--target",
                        name,
                        "--output",
                        "json",
                        **common,
                    )
                )["token"]
                work = sshds[args.ssh + len(agents)].folder / "agent"
                agents.append(
                    subprocess.Popen(
                        [
                            str(CONVEYOR),
                            "agent",
                            "run",
                            "--server",
                            url,
                            "--token",
                            token,
                            "--work-dir",
                            str(work),
                        ],
                        env=env_for(tmp),
                        stdout=(tmp / f"{name}.log").open("wb"),
                        stderr=subprocess.STDOUT,
                    )
                )
            api = Api(url, key)
            version = {}
            for project in ("Payload", "Noop"):
                made = api.http.post(f"/projects/{project}/releases", json={})
                made.raise_for_status()
                version[project] = made.json()["version"]
            time.sleep(2)  # the agents enrol and poll
            folders = [s.folder for s in sshds]
            print(
                f"{len(names)} targets ({args.ssh} ssh, {args.agents} agents), a "
                f"{archive.stat().st_size / 1e6:.0f} MB package, {args.runs} runs each\n"
            )
            results = {}
            first = timed(
                args.runs,
                lambda: forget(folders, *OURS),
                lambda: api.deploy("Payload", version["Payload"]),
            )
            loop_first = timed(
                args.runs,
                lambda: forget(folders, "loop"),
                lambda: loop_deploy(machines, archive, True),
            )
            results["deploy"] = show("deploy (all at once)", first, loop_first)
            serial = timed(
                1, lambda: forget(folders, "loop"), lambda: loop_deploy(machines, archive, False)
            )
            print(f"{'':<28} (the loop one machine at a time: {serial[0]:.2f} s)")
            again = timed(
                args.runs, lambda: None, lambda: api.deploy("Payload", version["Payload"])
            )
            loop_again = timed(
                args.runs, lambda: None, lambda: loop_deploy(machines, archive, True)
            )
            results["redeploy"] = show("redeploy (same release)", again, loop_again)
            noop = timed(args.runs, lambda: None, lambda: api.deploy("Noop", version["Noop"]))
            loop_noops = timed(args.runs, lambda: None, lambda: loop_noop(machines))
            results["noop_per_target"] = show(
                "no-op script, per target", noop, loop_noops, per=len(names)
            )
            print(
                f"\ngoals: deploy within 1.5x of the loop: "
                f"{'met' if results['deploy']['ratio'] <= 1.5 else 'NOT met'}; "
                f"redeploy faster than the loop: "
                f"{'met' if results['redeploy']['ratio'] < 1 else 'NOT met'}"
            )
            print(
                json.dumps({k: {m: round(v, 4) for m, v in r.items()} for k, r in results.items()})
            )
    finally:
        for proc in agents:
            proc.terminate()
        for proc in agents:
            proc.wait(timeout=30)
        for sshd in sshds:
            sshd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
