"""End-to-end fixtures: a real `conveyor server` process, driven through the real `conveyor` CLI.

One server per test module and database (SQLite in the data folder, or a fresh PostgreSQL
database when CONVEYOR_TEST_POSTGRES_URL is set; otherwise the PostgreSQL variant is skipped with
a visible notice). Every command runs as a subprocess with only the documented environment
variables set, so the tests see exactly what a user or a build server sees.

Two things keep the suite fast without changing what is tested: `admin init` runs once per test
process and kind of database, and each server starts from a copy of that installation
(``install``); and the `conveyor` processes are forked from a helper that imported Conveyor once
(tests/e2e/preloaded.py) instead of each paying the interpreter's start-up and imports.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conveyor.store.db import sqlite_file
from tests import loopback
from tests.conftest import (
    NO_WAITING_FOR_THE_DISK,
    POSTGRES_URL,
    SANDBOX,
    SKIP_PG,
    _fresh_pg_database,
    _pg_admin_url,
    drop_pg_database_soon,
)
from tests.e2e import preloaded
from tests.e2e.preloaded import PreloadedProcess, start_preloaded

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "octopetshop" / "conveyor.yaml"
CONVEYOR = Path(sys.executable).with_name("conveyor")
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The test runner's environment without any CONVEYOR_* leaking in, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    # Wide enough that no message is wrapped by the terminal width of the test runner.
    env["COLUMNS"] = "200"
    env["NO_COLOR"] = "1"
    if not SANDBOX.usable:  # so the rest of the suite runs where bubblewrap cannot
        env["CONVEYOR_ALLOW_UNSANDBOXED_SCRIPTS"] = "true"
    env.update(extra)
    return env


preloaded.base_env = lambda: clean_env({})
# Every `conveyor` process of the tests is forked from a helper that imported Conveyor once
# (tests/e2e/preloaded.py): the same code, arguments, environment and streams, without a second
# of interpreter start-up each. Set TESTS_EXEC_CONVEYOR=1 to exec the real script every time.
EXEC_CONVEYOR = os.environ.get("TESTS_EXEC_CONVEYOR") == "1"


def run_conveyor(
    args: tuple[str, ...],
    env: Mapping[str, str],
    *,
    input: str | None = None,
    cwd: Path | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    if not EXEC_CONVEYOR:
        full = clean_env(env)
        done = preloaded.run_preloaded(args, full, cwd or Path.cwd(), input, timeout)
        return subprocess.CompletedProcess(
            [str(CONVEYOR), *args], done.returncode, done.stdout, done.stderr
        )
    return subprocess.run(
        [str(CONVEYOR), *args],
        env=clean_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def start_conveyor(
    args: list[str], env: Mapping[str, str], cwd: Path, log: Path, *, preloaded: bool = True
) -> subprocess.Popen[bytes] | PreloadedProcess:
    """A long-running `conveyor ARGS` (a server), its output in ``log``. ``preloaded=False``:
    the real script, where a test looks at the process itself (its /proc/PID/environ)."""
    if preloaded and not EXEC_CONVEYOR:
        return start_preloaded(list(args), clean_env(env), cwd, log)
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(CONVEYOR), *args],
            env=clean_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


def wait_for_api(
    url: str, proc: subprocess.Popen[bytes] | PreloadedProcess, log: Path, timeout: float
) -> None:
    """Until GET {url}/api/v1 answers 200; fail with the server's log when it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the server exited with {proc.returncode} before answering:\n{read_log(log)}"
            )
        with contextlib.suppress(httpx.TransportError):
            if loopback.get(f"{url}/api/v1", timeout=2).status_code == 200:
                return
        time.sleep(0.02)  # a start is waited for many times: each poll late is time lost
    pytest.fail(f"the server did not answer {url}/api/v1 within {timeout:.0f} s:\n{read_log(log)}")


def read_log(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-20_000:]
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes] | PreloadedProcess) -> None:
    """SIGTERM, then SIGKILL if it does not stop within 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class Server:
    url: str
    api_key: str
    admin_password: str
    data_dir: Path
    log: Path
    database_url: str | None
    tmp: Path
    proc: subprocess.Popen[bytes] | PreloadedProcess = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        """What both local and remote commands need: the data folder, the database, the server."""
        env = {"CONVEYOR_DATA_DIR": str(self.data_dir), "CONVEYOR_SERVER": self.url}
        if self.database_url:
            env["CONVEYOR_DATABASE_URL"] = self.database_url
        return env

    def cli(
        self,
        *args: str,
        api_key: str | None = None,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run `conveyor ARGS` as the admin (or as the holder of ``api_key``)."""
        full = {**self.env, "CONVEYOR_API_KEY": api_key or self.api_key, **(env or {})}
        return run_conveyor(args, full, input=input, cwd=self.tmp, timeout=timeout)

    def cli_in_process(
        self, *args: str, api_key: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The same command (remote or local, same environment), run by the CLI's own code inside
        the test process: for many questions, or where only the answer and exit code are at
        stake, since starting an interpreter per command would dominate the run. Tests of what a
        user sees from the real process use ``cli``."""
        from typer.testing import CliRunner

        from conveyor.cli.main import app

        env: dict[str, str | None] = {
            "CONVEYOR_DATABASE_URL": None,  # unset unless this server has one
            **self.env,
            "CONVEYOR_API_KEY": api_key or self.api_key,
        }
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
        return subprocess.CompletedProcess(
            ["conveyor", *args], result.exit_code, result.stdout, result.stderr
        )

    def get(self, path: str, api_key: str | None = None) -> httpx.Response:
        """GET /api/v1{path} straight from the test: to look at the server's state."""
        headers = {"X-Api-Key": api_key or self.api_key}
        response = loopback.get(f"{self.url}/api/v1{path}", headers=headers, timeout=30)
        response.raise_for_status()
        return response

    def export(self) -> str:
        """The server's configuration as the admin sees it."""
        return self.get("/config/export").text

    def ok(self, *args: str, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command that must succeed; show everything it said when it does not."""
        result = self.cli(*args, api_key=api_key)
        assert result.returncode == 0, describe(result)
        return result

    def api_key_for(self, username: str, *, in_process: bool = False) -> str:
        """A new API key for a user, made by the local command as an operator would (run in
        this process with ``in_process``: the same command, without a second of start-up)."""
        args = ("admin", "api-key", "create", "--user", username, "--output", "json")
        result = self.cli_in_process(*args) if in_process else self.cli(*args)
        assert result.returncode == 0, describe(result)
        data = json.loads(result.stdout)
        assert data["user"] == username
        key: str = data["api_key"]
        return key


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"`conveyor {' '.join(result.args[1:])}` exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


# ---------------------------------------------------------------- installations


@dataclass
class Installation:
    """What `conveyor admin init` made, once per test process and kind of database: its answer,
    its data folder (master key, and for SQLite the database) and, for PostgreSQL, the rows of
    every table. A server of a test starts from a copy: a fresh `admin init` would cost an
    interpreter's start-up and all the migrations for every server of the suite."""

    secrets: dict[str, str]
    data_dir: Path
    tables: dict[str, bytes] = field(default_factory=dict)  # COPY ... TO STDOUT of each table
    sequences: dict[str, int] = field(default_factory=dict)


_installations: dict[str, Installation] = {}


@functools.cache
def _install_files() -> Path:
    """Where this test process keeps its installations; removed when it exits."""
    folder = Path(tempfile.mkdtemp(prefix="conveyor-installations-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _psycopg_conninfo(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _installation(database_url: str | None) -> Installation:
    kind = "postgres" if database_url and database_url.startswith("postgresql") else "sqlite"
    if kind in _installations:
        return _installations[kind]
    folder = Path(tempfile.mkdtemp(prefix=kind, dir=_install_files()))
    env = {"CONVEYOR_DATA_DIR": str(folder / "data")}
    original = None
    if kind == "postgres":
        assert database_url
        # Named after the test database it was asked for, which begins with the session's
        # database name: the session's clean-up drops it with the others.
        name = f"{make_url(database_url).database}_installed"
        admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            conn.execute(text(NO_WAITING_FOR_THE_DISK.format(name=name)))
        admin.dispose()
        original = _pg_url(database_url, name)
        env["CONVEYOR_DATABASE_URL"] = original
    init = run_conveyor(("admin", "init", "--output", "json"), env, cwd=folder)
    assert init.returncode == 0, describe(init)
    secrets = json.loads(init.stdout)
    assert set(secrets) == {"username", "password", "api_key"}, secrets
    assert secrets["username"] == "admin"
    installation = Installation(secrets=secrets, data_dir=folder / "data")
    if original:
        with psycopg.connect(_psycopg_conninfo(original)) as conn:
            for (table,) in conn.execute(TABLES).fetchall():
                with conn.cursor().copy(f'COPY "{table}" TO STDOUT') as copy:
                    data = b"".join(bytes(chunk) for chunk in copy)
                if data:
                    installation.tables[table] = data
            installation.sequences = dict(conn.execute(SEQUENCES).fetchall())
    _installations[kind] = installation
    return installation


TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
    "AND tablename <> 'alembic_version'"
)
SEQUENCES = (
    "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
    "WHERE schemaname = current_schema() AND last_value IS NOT NULL"
)


def _pg_url(database_url: str, database: str) -> str:
    return make_url(database_url).set(database=database).render_as_string(hide_password=False)


def install(data_dir: Path, database_url: str | None) -> dict[str, str]:
    """What `conveyor admin init --output json` does on a new installation, from a copy of the
    one installation it was run for: a data folder ``data_dir`` that does not exist yet and an
    empty, migrated database (``database_url``; ``None`` for SQLite in the data folder).
    Returns the administrator's secrets as `admin init` printed them."""
    installation = _installation(database_url)
    shutil.copytree(installation.data_dir, data_dir)  # 0700 folder, 0600 key and database
    if database_url is None:
        return dict(installation.secrets)
    (data_dir / "conveyor.db").unlink(missing_ok=True)  # the database is elsewhere
    if (path := sqlite_file(database_url)) is not None:
        shutil.copy2(installation.data_dir / "conveyor.db", path)
        return dict(installation.secrets)
    with psycopg.connect(_psycopg_conninfo(database_url)) as conn:
        # The rows are copied as they are, so the foreign keys are not checked on the way in.
        conn.execute("SET LOCAL session_replication_role = replica")
        for (table,) in conn.execute(TABLES).fetchall():  # the rows migrations seed, if any
            conn.execute(f'DELETE FROM "{table}"')
        for table, data in installation.tables.items():
            with conn.cursor().copy(f'COPY "{table}" FROM STDIN') as copy:
                copy.write(data)
        for sequence, value in installation.sequences.items():
            conn.execute("SELECT setval(%s, %s)", (sequence, value))
    return dict(installation.secrets)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def e2e_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` for SQLite (the default file in the data folder), or a fresh PostgreSQL URL."""
    if request.param == "sqlite":
        yield None
        return
    if not POSTGRES_URL:
        pytest.skip(SKIP_PG)
    template: str = request.getfixturevalue("pg_database")
    url = _fresh_pg_database(template)
    yield url
    drop_pg_database_soon(url)


@pytest.fixture(scope="module")
def server(e2e_database: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("e2e")
    data_dir = tmp / "data"
    env: dict[str, str] = {"CONVEYOR_DATA_DIR": str(data_dir)}
    if e2e_database:
        env["CONVEYOR_DATABASE_URL"] = e2e_database
    secrets = install(data_dir, e2e_database)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    proc = start_conveyor(["server", "--port", str(port)], env, tmp, log)
    try:
        wait_for_api(url, proc, log, START_TIMEOUT)
        yield Server(
            url=url,
            api_key=secrets["api_key"],
            admin_password=secrets["password"],
            data_dir=data_dir,
            log=log,
            database_url=e2e_database,
            tmp=tmp,
            proc=proc,
        )
    finally:
        stop(proc)
    # A request that crashed the server is a bug even when the CLI reported it politely.
    assert "Traceback" not in read_log(log), read_log(log)
