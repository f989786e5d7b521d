"""The README's "Shipping a release" walk-through, run exactly as written against `conveyor
demo`, in a fresh git repository holding the example where the README's clone holds it.

The commands are read from README.md, so the README cannot drift from what works: only its two
placeholders (the demo's address and API key) and the PATH line are filled in here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    CONVEYOR,
    REPO,
    clean_env,
    free_port,
    read_log,
    stop,
    wait_for_api,
)
from tests.e2e.test_demo import DEMO_START_TIMEOUT, start_demo
from tests.gitrepos import GitRepo

pytestmark = pytest.mark.e2e

HEADING = "Shipping a release"
PATH_LINE = 'export PATH="$PWD/.venv/bin:$PATH"'
DEMO_SERVER = "http://127.0.0.1:8080"
KEY_PLACEHOLDER = "API-..."


def readme_block() -> list[str]:
    """The command lines of the first ``sh`` block after the heading's paragraph."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    after = text[text.index(HEADING) :]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block, "the README has no sh block after 'Shipping a release'"
    return [line for line in block[1].splitlines() if line.strip()]


def fresh_clone(root: Path) -> Path:
    """A repository with the example at examples/octopetshop, committed (as a clone has it)."""
    shutil.copytree(
        REPO / "examples" / "octopetshop",
        root / "examples" / "octopetshop",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (root / "README.md").write_text("# a clone\n")
    git = GitRepo(root)
    git.commit("the repository as cloned")
    return root


def demo_key(log: Path, url: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        match = re.search(rf"CONVEYOR_SERVER={url} CONVEYOR_API_KEY=(\S+)", read_log(log))
        if match:
            return match[1]
        time.sleep(0.1)
    pytest.fail(f"the demo printed no API key:\n{read_log(log)}")


def test_the_readme_walk_through_works_as_written_on_the_demo(tmp_path: Path) -> None:
    lines = readme_block()
    assert lines[0].startswith(PATH_LINE), lines[0]
    assert lines[1].startswith(f"export CONVEYOR_SERVER={DEMO_SERVER} ")
    assert f"CONVEYOR_API_KEY={KEY_PLACEHOLDER} " in lines[1]
    commands = lines[2:]
    assert all(c.startswith("conveyor ") for c in commands), commands

    clone = fresh_clone(tmp_path / "clone")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, log = start_demo(tmp_path, tmp_path / "demo", port)
    try:
        wait_for_api(url, proc, log, DEMO_START_TIMEOUT)
        key = demo_key(log, url)
        script = "\n".join(
            [
                "set -e",
                f'export PATH="{CONVEYOR.parent}:$PATH"',  # where this suite's conveyor is
                lines[1].replace(DEMO_SERVER, url).replace(KEY_PLACEHOLDER, key),
                *(f"echo '$ {c.replace(chr(39), '')}'\n{c}" for c in commands),
            ]
        )
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=clone,
            env=clean_env({}),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        said = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nserver:\n{read_log(log)}"
        assert done.returncode == 0, said
        assert "Traceback" not in said
        out = done.stdout
        # changes names the projects (watch paths relative to --repo), and then no longer
        # Database, whose release recorded the commit.
        first, second = out.split("$ conveyor changes")[1:3]
        assert "Database (from scratch): 4 files" in first, said
        assert "Unchanged: Database" in second and "Database (from" not in second, said
        assert (clone / "packages" / "OctoPetShop.Database.1.0.1.zip").is_file()
        assert not list(clone.glob("*.zip")), "package pack wrote into the repository's root"
        # The version is suggested after the demo's Deploy All 1.0.0; its Database is 1.0.1.
        assert "Created Deploy All 1.0.1" in out and "child   Database 1.0.1" in out, said
        assert "to Test: succeeded" in out, said
        # Staging waits for the approvals, which the interruption list shows.
        listed = out.split("$ conveyor interruption list")[1]
        assert "QA approval" in listed and "pending" in listed, said
    finally:
        stop(proc)
