"""`conveyor demo`: a fresh data folder, the example applied, printed passwords, a server up."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests import loopback
from tests.e2e.conftest import (
    CONVEYOR,
    clean_env,
    free_port,
    read_log,
    run_conveyor,
    stop,
    wait_for_api,
)

pytestmark = pytest.mark.e2e

DEMO_USERS = ("admin", "dev", "qa", "owner", "auditor", "ops")
# The demo applies the example and deploys its first releases before it answers: on a loaded
# two-core machine that has taken over 30 s. Only a failing start waits this long.
DEMO_START_TIMEOUT = 120.0


def start_demo(tmp_path: Path, data_dir: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"demo-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(CONVEYOR), "demo", "--port", str(port), "--data-dir", str(data_dir)],
            env=clean_env({}),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    return proc, log


def printed_passwords(log: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in read_log(log).splitlines():
        match = re.fullmatch(r"\s+(\w+)\s+(\S{8,})\s*", line)
        if match and match.group(1) in DEMO_USERS:
            found[match.group(1)] = match.group(2)
    return found


def test_demo_prints_users_and_serves(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, log = start_demo(tmp_path, data_dir, port)
    try:
        wait_for_api(url, proc, log, DEMO_START_TIMEOUT)
        # The passwords are printed before the server starts answering.
        deadline = time.monotonic() + 5
        while set(printed_passwords(log)) != set(DEMO_USERS) and time.monotonic() < deadline:
            time.sleep(0.1)
        passwords = printed_passwords(log)
        assert set(passwords) == set(DEMO_USERS), read_log(log)
        assert url in read_log(log)
        assert loopback.get(f"{url}/api/v1", timeout=5).json()["application"] == "Conveyor"
        # The admin's key for the command line is printed too, and the example is there.
        match = re.search(rf"CONVEYOR_SERVER={url} CONVEYOR_API_KEY=(\S+)", read_log(log))
        assert match, read_log(log)
        exported = loopback.get(f"{url}/api/v1/config/export", headers={"X-Api-Key": match[1]})
        assert exported.status_code == 200, exported.text
        assert "Deploy All" in exported.text and "QA approval" in exported.text
        for user in DEMO_USERS:
            assert f"username: {user}" in exported.text
        # A second demo on the same port is refused before it touches anything.
        busy = run_conveyor(("demo", "--port", str(port), "--data-dir", str(data_dir)), {})
        assert busy.returncode == 2, busy.stderr
        assert f"port {port}" in busy.stderr and "--port" in busy.stderr
        assert (data_dir / "conveyor.db").exists()
    finally:
        stop(proc)
    assert proc.returncode is not None
    assert "Traceback" not in read_log(log), read_log(log)


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    result = run_conveyor(("demo", "--port", str(free_port()), "--data-dir", str(precious)), {})
    assert result.returncode == 2, result.stderr
    assert "not made by `conveyor demo`" in result.stderr
    assert (precious / "keep.txt").read_text() == "mine"
