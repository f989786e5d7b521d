"""Conveyor installs like a real tool: the wheel, installed into a fresh virtual environment,
runs `conveyor demo` from a folder outside the repository, and its first deployments land.

Nothing is downloaded. The wheel is built offline with this environment's setuptools
(``--no-build-isolation``) from a copy of the sources, so the shared checkout gets no ``build/``.
The fresh environment gets the wheel alone (``--no-deps``) and reads its dependencies from this
environment's site-packages through a ``.pth`` line (whose own ``.pth`` files, among them the
editable install of the checkout, are not processed); it checks that every ``Requires-Dist`` of the
wheel is satisfied there. ``CONVEYOR_TEST_WHEEL_PYTHON`` names another interpreter to build with
(one whose setuptools can build wheels) when this one's cannot.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests import loopback
from tests.e2e.conftest import REPO, clean_env, free_port, read_log, stop

pytestmark = pytest.mark.e2e

# The demo applies the example and ships four packages before it answers: on a loaded machine
# (the suite's other workers) that takes a while, and it is waited for once.
DEMO_TIMEOUT = 120.0
BUILDER = os.environ.get("CONVEYOR_TEST_WHEEL_PYTHON", sys.executable)
# What a build reads: the sdist's content (MANIFEST.in) without tests, docs and caches.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "conveyor", "examples")
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.egg-info", "build", "dist")
LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([a-z0-9-]+)==(\S+) \\$", re.MULTILINE)
COMPONENTS = ("Database", "Shopping Cart Service", "Product Service", "Website")

# Every Requires-Dist of the installed wheel (and of the extras it asks for), against what
# the fresh environment can import.
# Every Requires-Dist of the installed wheel, and of what it requires in turn, against what the
# fresh environment can import; and the names of all the distributions that this reaches.
CHECK_REQUIREMENTS = """
import importlib.metadata as md, json
import conveyor
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

reached, unmet = set(), []

def visit(requirements, extras=("",)):
    for line in requirements or []:
        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        try:
            found = md.version(req.name)
        except md.PackageNotFoundError:
            unmet.append(f"{req}: not installed")
            continue
        if not req.specifier.contains(found, prereleases=True):
            unmet.append(f"{req}: {found} installed")
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key not in reached:
            reached.add(key)
            visit(md.requires(req.name), ("", *sorted(req.extras)))

visit(md.requires("conveyor"))
names = sorted({name for name, _ in reached})
print(json.dumps({"unmet": unmet, "reached": names, "file": conveyor.__file__}))
"""


def can_build_wheels(python: str) -> bool:
    probe = (
        "from setuptools.dist import Distribution; Distribution().get_command_class('bdist_wheel')"
    )
    return subprocess.run([python, "-c", probe], capture_output=True, check=False).returncode == 0


def run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=120, check=False, env=env, cwd=cwd
    )
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


def build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=CACHES)
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp / "dist"
    quiet = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    offline = ("--no-deps", "--no-build-isolation", "--no-index")
    run(
        [BUILDER, "-m", "pip", "wheel", *offline, "--wheel-dir", str(dist), str(source)],
        env={**os.environ, **quiet},
        cwd=tmp,
    )
    (wheel,) = dist.glob("conveyor-*.whl")
    return wheel


def files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new environment with the wheel alone; its dependencies read from this environment."""
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    alone = ("--no-deps", "--no-index", "--disable-pip-version-check")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", *alone, str(wheel)])
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    ours = sysconfig.get_path("purelib")
    (Path(purelib.stdout.strip()) / "conveyor-test-dependencies.pth").write_text(ours + "\n")
    return venv


def installed_env(extra: dict[str, str]) -> dict[str, str]:
    env = clean_env(extra)
    env.pop("PYTHONPATH", None)  # nothing of the checkout: only what the wheel installed
    env.pop("VIRTUAL_ENV", None)
    return env


def test_the_wheel_installs_and_runs_the_demo_from_anywhere(tmp_path: Path) -> None:
    if not can_build_wheels(BUILDER):
        pytest.skip(
            f"{BUILDER}'s setuptools cannot build wheels (no bdist_wheel: setuptools>=70.1 "
            "has it); set CONVEYOR_TEST_WHEEL_PYTHON to an interpreter whose setuptools can"
        )
    wheel = build_wheel(tmp_path)

    # Every file of the package (migrations, templates, static files) and of the example is in
    # the wheel, the example as package data.
    names = set(zipfile.ZipFile(wheel).namelist())
    source = tmp_path / "source"
    package_files = {p.relative_to(source).as_posix() for p in files(source / "conveyor")}
    example = source / "examples" / "octopetshop"
    example_files = {f"conveyor/{p.relative_to(source).as_posix()}" for p in files(example)}
    assert "conveyor/store/migrations/env.py" in package_files
    assert "conveyor/examples/octopetshop/conveyor.yaml" in example_files
    assert sorted((package_files | example_files) - names) == []

    venv = fresh_venv(tmp_path, wheel)
    python, conveyor = str(venv / "bin" / "python"), str(venv / "bin" / "conveyor")
    checked = json.loads(run([python, "-c", CHECK_REQUIREMENTS], cwd=tmp_path).stdout)
    assert checked["unmet"] == []
    assert Path(checked["file"]).is_relative_to(venv), checked["file"]

    # The container image installs what scripts/runtime_lock.py keeps of the lock: all of that,
    # each pinned with its hashes, and none of the development tools.
    kept = run([sys.executable, str(REPO / "scripts" / "runtime_lock.py"), str(LOCK), str(wheel)])
    pins = dict(PIN.findall(kept.stdout))
    assert sorted(set(checked["reached"]) - set(pins)) == []
    assert not {"pytest", "mypy", "ruff", "playwright"} & set(pins)
    assert kept.stdout.count("--hash=sha256:") >= len(pins)

    # The demo, from a folder that is neither the repository nor the environment.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [conveyor, "demo", "--port", str(port)],
            env=installed_env({}),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=elsewhere,
        )
    try:
        key = wait_for_demo(url, proc, log)
        cli = installed_env({"CONVEYOR_SERVER": url, "CONVEYOR_API_KEY": key})
        wait_for_first_deployments(url, key, proc, log)
        shown = run([conveyor, "dashboard", "--output", "json"], env=cli, cwd=elsewhere)
        cells = json.loads(shown.stdout)["cells"]
        development = {c["project"]: c for c in cells if c["environment"] == "Development"}
        for project in COMPONENTS:
            assert development[project]["release"] == "1.0.0", (development, read_log(log))
            assert development[project]["state"] == "success", (development, read_log(log))
    finally:
        stop(proc)
    # The demo's data is in the folder it ran from, not in the installation.
    data = elsewhere / ".conveyor" / "demo"
    assert (data / "conveyor.db").is_file()
    assert f"data folder: {data.resolve()}" in read_log(log)
    assert not list(venv.rglob("conveyor.db"))
    assert "Traceback" not in read_log(log), read_log(log)


def wait_for_demo(url: str, proc: subprocess.Popen[bytes], log: Path) -> str:
    """Until the demo answers; the admin's API key it printed."""
    deadline = time.monotonic() + DEMO_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{read_log(log)}")
        with contextlib.suppress(httpx.TransportError):
            if loopback.get(f"{url}/api/v1", timeout=2).status_code == 200:
                key = re.search(r"CONVEYOR_API_KEY=(\S+)", read_log(log))
                assert key, read_log(log)
                return key[1]
        time.sleep(0.05)
    pytest.fail(f"the demo did not answer within {DEMO_TIMEOUT:.0f} s:\n{read_log(log)}")


def wait_for_first_deployments(
    url: str, key: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """The demo deploys the four components to Development as it starts: until they ended."""
    deadline = time.monotonic() + DEMO_TIMEOUT
    while time.monotonic() < deadline:
        rows = loopback.get(f"{url}/api/v1/deployments", headers={"X-Api-Key": key}, timeout=10)
        done = [r for r in rows.json() if r["state"] not in ("queued", "executing")]
        if len(done) >= len(COMPONENTS):
            return
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{read_log(log)}")
        time.sleep(0.1)
    pytest.fail(f"the demo's first deployments did not end:\n{read_log(log)}")
