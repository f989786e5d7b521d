"""SSH targets: steps run on machines reached over SSH, through the real engine, against real
OpenSSH servers (`tests/sshd.py`) with generated host and user keys, on SQLite and PostgreSQL.

Each target keeps its files in its own folder of this machine (``work_dir``), so that a test
can look at what the step left there, as a person logged in to the host would."""

from __future__ import annotations

import asyncio
import io
import os
import random
import tarfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import select

from conveyor.domain.documents import Target
from conveyor.domain.targets import HealthState
from conveyor.engine.node import Node
from conveyor.engine.ssh import SSHRunner
from conveyor.services import deployments, packages, releases, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.integration.test_engine import deploy, finished
from tests.sshd import Sshd, keypair, start_sshd, without_comment

HEAD = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Web
"""


def _target(
    name: str, server: Sshd, folder: Path, *, host_key: str | None = None, extra: str = ""
) -> str:
    """A target document for ``server`` (its key pinned unless ``host_key`` says otherwise);
    its private key comes in as ${env:KEY_<name>}."""
    pin = server.host_key if host_key is None else host_key
    return (
        f"  - name: {name}\n"
        "    kind: ssh\n"
        "    environments: [Dev]\n"
        "    roles: [web]\n"
        f"    host: {server.host}\n"
        f"    port: {server.port}\n"
        f"    user: {server.user}\n"
        f"    private_key: ${{env:KEY_{name.replace('-', '_').upper()}}}\n"
        f"    work_dir: {folder}\n" + (f"    host_key: {pin}\n" if pin else "") + extra
    )


async def _apply(
    services: Services, admin: Caller, targets: str, steps: str, servers: dict[str, Sshd]
) -> None:
    keys = {f"KEY_{n.replace('-', '_').upper()}": s.private_key for n, s in servers.items()}
    text = (
        HEAD
        + "targets:\n"
        + targets
        + """projects:
  - name: Site
    group: Web
    lifecycle: Anywhere
    variables:
      - name: Greeting
        value: hello there
      - name: Password
        value: s3cret-value
        sensitive: true
    process:
      steps:
"""
        + steps
    )
    await apply_text(services, admin, text, secrets=keys)


@pytest.fixture
async def node(services: Services) -> AsyncIterator[Node]:
    running = Node(services, slots=4, name=f"ssh-{os.getpid()}")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        cast(SSHRunner, running.executor.runners["ssh"]).close()


async def _log(services: Services, admin: Caller, task: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = (await tasks.task_log(services, admin, task))["lines"]
    return lines


def _text(lines: list[dict[str, Any]]) -> str:
    return "\n".join(str(line["line"]) for line in lines)


def _secret_free(text: str, *servers: Sshd) -> None:
    for server in servers:
        body = [line for line in server.private_key.splitlines() if "PRIVATE KEY" not in line]
        assert all(part not in text for part in body), "a private key reached the log"


async def test_a_script_runs_on_two_ssh_targets(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    servers = {"web-1": start_sshd(tmp_path / "s1"), "web-2": start_sshd(tmp_path / "s2")}
    try:
        targets = "".join(_target(n, s, tmp_path / f"{n}-home") for n, s in servers.items())
        script = """        - name: Greet
          type: script
          target_roles: [web]
          script: |
            echo "on #{Conveyor.Target.Name}: $GREETING"
            echo "warning from #{Conveyor.Target.Name}" >&2
            echo "secret #{Password}"
            echo "##conveyor[setVariable name='Colour' value='blue']"
            pwd > where.txt
            [ "#{Conveyor.Target.Name}" != "#{Failing}" ] || exit 3
"""
        await _apply(services, admin, targets, script.replace("#{Failing}", "none"), servers)
        task = await deploy(services, admin, "Site")
        result = await finished(services, admin, task, waiting=False)
        assert result["state"] == "success", result
        lines = await _log(services, admin, task)
        for name in servers:
            theirs = [line for line in lines if line["target"] == name]
            said = {str(line["line"]): line["level"] for line in theirs}
            assert said.get(f"on {name}: hello there") == "info", theirs
            assert said.get(f"warning from {name}") == "warn", theirs
            assert "secret ********" in said, theirs  # masked like any other output
            assert "Output variable Colour set" in said
            # The script ran in this project's folder on the machine; its scratch folder went.
            project = tmp_path / f"{name}-home" / "targets" / "dev" / "site"
            assert (project / "where.txt").read_text().strip() == str(project)
            assert not list((tmp_path / f"{name}-home" / "work").glob("*")), "scratch left"
        assert "s3cret-value" not in _text(lines)
        _secret_free(_text(lines), *servers.values())

        await _apply(services, admin, targets, script.replace("#{Failing}", "web-2"), servers)
        task = await deploy(services, admin, "Site")
        result = await finished(services, admin, task, waiting=False)
        assert result["state"] == "failed", result
        text = _text(await _log(services, admin, task))
        assert "exited with code 3" in text, text
    finally:
        for server in servers.values():
            server.stop()


def _tar(path: Path, version: str) -> None:
    with tarfile.open(path, "w:gz") as archive:
        data = f"site {version}\n".encode()
        info = tarfile.TarInfo("version.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def _zip(path: Path, version: str) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("version.txt", f"site {version}\n")


async def _push(services: Services, admin: Caller, folder: Path, version: str) -> None:
    zipped = version.endswith("1")
    path = folder / f"Site.{version}.{'zip' if zipped else 'tar.gz'}"
    (_zip if zipped else _tar)(path, version)

    async def body() -> AsyncIterator[bytes]:
        yield path.read_bytes()

    await packages.push_package(services, admin, body(), file_name=path.name)


async def _deploy(services: Services, admin: Caller, release: str) -> str:
    queued = await deployments.deploy(services, admin, "Site", release, "Dev")
    task: str = queued.as_dict()["task"]
    done = await finished(services, admin, task, waiting=False)
    assert done["state"] == "success", (done, _text(await _log(services, admin, task)))
    return task


async def test_a_package_goes_to_an_ssh_target_once_and_rolls_back_by_link(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    try:
        home = tmp_path / "web-1-home"
        step = """        - name: Install
          type: package
          package: Site
          target_roles: [web]
          post_deploy_script: |
            echo "#{Greeting}: $(cat version.txt) in $PWD" > ../seen.txt
            echo "$CONVEYOR_ACTION_PACKAGE_INSTALLATIONDIRECTORYPATH" >> ../seen.txt
"""
        await _apply(services, admin, _target("web-1", server, home), step, {"web-1": server})
        await _push(services, admin, tmp_path, "1.0.0")
        first = await releases.create_release(services, admin, "Site")
        task = await _deploy(services, admin, first.version)
        base = home / "targets" / "dev" / "site"
        assert (base / "1.0.0" / "version.txt").read_text() == "site 1.0.0\n"
        assert os.readlink(base / "current") == "1.0.0"
        seen = (base / "seen.txt").read_text().splitlines()
        assert seen == [f"hello there: site 1.0.0 in {base / '1.0.0'}", str(base / "1.0.0")]
        text = _text(await _log(services, admin, task))
        assert "Sent Site.1.0.0.tar.gz to web-1" in text, text

        sent = home / "packages" / "site.1.0.0.tar.gz"
        before = sent.stat()
        task = await _deploy(services, admin, first.version)  # a redeploy sends nothing
        after = sent.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        text = _text(await _log(services, admin, task))
        assert "Site 1.0.0 is already on web-1: nothing sent" in text, text
        assert "Sent " not in text

        services.settings.keep_package_versions = 2
        made = {"1.0.0": first.version}
        for version in ("1.0.1", "1.0.2"):
            await _push(services, admin, tmp_path, version)
            made[version] = (await releases.create_release(services, admin, "Site")).version
            await _deploy(services, admin, made[version])
        versions = {p.name for p in base.iterdir() if p.name.startswith("1.0.")}
        assert versions == {"1.0.1", "1.0.2"}  # the last two kept
        assert (base / "1.0.1" / "version.txt").read_text() == "site 1.0.1\n"  # a .zip
        packages_left = {p.name for p in (home / "packages").glob("site.*")}
        assert packages_left == {"site.1.0.1.zip", "site.1.0.2.tar.gz"}, packages_left

        kept = (base / "1.0.1").stat().st_ino
        task = await _deploy(services, admin, made["1.0.1"])  # a rollback: a link switch
        assert os.readlink(base / "current") == "1.0.1"
        assert (base / "1.0.1").stat().st_ino == kept, "a kept version is not extracted again"
        assert (base / "seen.txt").read_text().startswith("hello there: site 1.0.1")
        text = _text(await _log(services, admin, task))
        assert "Site 1.0.1 is already on web-1: nothing sent" in text, text
        _secret_free(text, server)
    finally:
        server.stop()


async def test_a_wrong_host_key_is_refused_with_how_to_pin_it(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    try:
        _, other = keypair(tmp_path / "other", "not the host")
        target = _target("web-1", server, tmp_path / "home", host_key=without_comment(other))
        step = """        - name: Greet
          type: script
          target_roles: [web]
          script: echo "should not run"
"""
        await _apply(services, admin, target, step, {"web-1": server})
        task = await deploy(services, admin, "Site")
        result = await finished(services, admin, task, waiting=False)
        assert result["state"] == "failed", result
        text = _text(await _log(services, admin, task))
        real = server.host_key.split()[1]
        assert f"the host key of web-1 ({server.host}:{server.port}) is not the one pinned" in text
        assert real in text, text  # the key seen, to compare with the host's owner
        assert "SHA256:" in text
        assert f"ssh-keyscan -p {server.port} {server.host}" in text
        assert "should not run" not in text.replace('echo "should not run"', "")
        _secret_free(text + repr(result), server)
        assert not (tmp_path / "home").exists(), "nothing ran on a host with a wrong key"
    finally:
        server.stop()


async def test_trust_on_first_use_pins_the_key_then_refuses_a_changed_one(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    try:
        target = _target(
            "web-1",
            server,
            tmp_path / "home",
            host_key="",
            extra="    trust_first_host_key: true\n",
        )
        step = """        - name: Greet
          type: script
          target_roles: [web]
          script: |
            echo "hello from #{Conveyor.Target.Name}"
"""
        await _apply(services, admin, target, step, {"web-1": server})
        task = await deploy(services, admin, "Site")
        result = await finished(services, admin, task, waiting=False)
        assert result["state"] == "success", (result, _text(await _log(services, admin, task)))
        async with services.read() as session:
            pinned = (await session.execute(select(t.target_host_keys))).all()
            events = (
                await session.execute(
                    select(t.events.c.message).where(t.events.c.category == "TargetHostKeyPinned")
                )
            ).all()
        assert [(row.target, row.host_key) for row in pinned] == [("web-1", server.host_key)]
        assert len(events) == 1 and "SHA256:" in events[0].message, events

        # The host comes back with another key (reinstalled, or another machine on its address).
        server.stop()
        (tmp_path / "sshd" / "host_ed25519").unlink()
        (tmp_path / "sshd" / "host_ed25519.pub").unlink()
        moved = start_sshd(tmp_path / "sshd2", port=server.port)
        try:
            task = await deploy(services, admin, "Site")
            result = await finished(services, admin, task, waiting=False)
            assert result["state"] == "failed", result
            text = _text(await _log(services, admin, task))
            assert "is not the one pinned" in text, text
            assert moved.host_key.split()[1] in text
            assert "hello from web-1" not in text
        finally:
            moved.stop()
    finally:
        server.stop()


def _sleepers(marker: str) -> list[int]:
    """The processes of this machine whose command line is ``sleep <marker>``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", marker.encode()]:
            found.append(int(entry.name))
    return found


async def _until_logged(services: Services, admin: Caller, task: str, text: str) -> None:
    for _ in range(200):
        if text in _text(await _log(services, admin, task)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} never logged: {_text(await _log(services, admin, task))}")


async def test_cancel_kills_the_remote_process_group(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    marker = str(3000 + random.randrange(10**6))
    try:
        step = f"""        - name: Wait
          type: script
          target_roles: [web]
          script: |
            sleep {marker} &
            echo "the script started"
            wait
"""
        await _apply(
            services, admin, _target("web-1", server, tmp_path / "home"), step, {"web-1": server}
        )
        task = await deploy(services, admin, "Site")
        await _until_logged(services, admin, task, "the script started")
        assert _sleepers(marker), (
            await tasks.get_task(services, admin, task),
            _text(await _log(services, admin, task)),
        )
        await tasks.cancel_task(services, admin, task)
        result = await finished(services, admin, task, waiting=False)
        assert result["state"] == "canceled", result
        for _ in range(50):
            if not _sleepers(marker):
                break
            await asyncio.sleep(0.1)
        assert not _sleepers(marker), "a process the script started outlived the cancel"
    finally:
        server.stop()


async def test_a_timeout_stops_the_remote_process_group(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    marker = str(3000 + random.randrange(10**6))
    try:
        step = f"""        - name: Wait
          type: script
          target_roles: [web]
          timeout: 1
          script: |
            sleep {marker} &
            wait
"""
        await _apply(
            services, admin, _target("web-1", server, tmp_path / "home"), step, {"web-1": server}
        )
        task = await deploy(services, admin, "Site")
        result = await finished(services, admin, task, waiting=False)
        assert result["state"] == "timed_out", result
        assert "timed out after 1 s" in _text(await _log(services, admin, task))
        assert not _sleepers(marker), "a process the script started outlived its timeout"
    finally:
        server.stop()


async def test_max_sessions_limits_the_commands_run_at_once(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    try:
        steps = "".join(
            f"""        - name: Step {n}
          type: script
          target_roles: [web]
{"          start: with_previous" + chr(10) if n else ""}          script: |
            echo "start $(date +%s.%N)" >> ../times.txt
            sleep 0.5
            echo "end $(date +%s.%N)" >> ../times.txt
"""
            for n in range(2)
        )
        times = tmp_path / "home" / "targets" / "dev" / "times.txt"
        for limit, expected in ((1, "start end start end"), (8, "start start end end")):
            extra = f"    max_sessions: {limit}\n"
            target = _target("web-1", server, tmp_path / "home", extra=extra)
            await _apply(services, admin, target, steps, {"web-1": server})
            times.unlink(missing_ok=True)
            task = await deploy(services, admin, "Site")
            result = await finished(services, admin, task, waiting=False)
            assert result["state"] == "success", result
            said = times.read_text().split()
            # With one session, each script ends before the other starts; with more, at once.
            assert " ".join(said[0::2]) == expected, (limit, said)
    finally:
        server.stop()


async def test_a_machine_lost_mid_step_fails_it_with_the_reason(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    try:
        step = """        - name: Wait
          type: script
          target_roles: [web]
          script: |
            echo "the script started"
            sleep 30
"""
        await _apply(
            services, admin, _target("web-1", server, tmp_path / "home"), step, {"web-1": server}
        )
        task = await deploy(services, admin, "Site")
        await _until_logged(services, admin, task, "the script started")
        server.stop()  # sshd and the connection it served are gone
        result = await finished(services, admin, task, timeout=15, waiting=False)
        assert result["state"] == "failed", result
        text = _text(await _log(services, admin, task))
        assert f"lost the connection to web-1 ({server.host}:{server.port})" in text, text
    finally:
        server.stop()


async def test_steps_on_a_target_share_one_connection(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    try:
        steps = "".join(
            f"""        - name: Step {n}
          type: script
          target_roles: [web]
          script: echo "step {n}"
"""
            for n in range(4)
        )
        await _apply(
            services, admin, _target("web-1", server, tmp_path / "home"), steps, {"web-1": server}
        )
        for _ in range(2):
            task = await deploy(services, admin, "Site")
            result = await finished(services, admin, task, waiting=False)
            assert result["state"] == "success", result
        text = _text(await _log(services, admin, task))
        assert all(f"step {n}" in text for n in range(4)), text
        assert server.connections() == 1, server.log.read_text()
    finally:
        server.stop()


async def test_check_reports_os_and_free_disk_or_why_not(
    services: Services, tmp_path: Path
) -> None:
    server = start_sshd(tmp_path / "sshd")
    runner = SSHRunner(services)
    target = Target(
        name="web-1",
        environments=("Dev",),
        roles=("web",),
        kind="ssh",
        host=server.host,
        port=server.port,
        user=server.user,
        private_key=server.private_key,
        host_key=server.host_key,
        work_dir=str(tmp_path / "home"),
    )
    try:
        health = await runner.check(target)
        assert health.state is HealthState.HEALTHY, health
        assert health.os.startswith(os.uname().sysname), health
        assert health.free_disk_bytes is not None and health.free_disk_bytes > 0
        server.stop()
        health = await runner.check(target)
        assert health.state is HealthState.UNHEALTHY
        assert f"cannot connect to web-1 ({server.host}:{server.port})" in health.message
        _secret_free(health.message, server)
    finally:
        runner.close()
        server.stop()
