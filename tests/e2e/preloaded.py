"""`conveyor` processes forked from one that already imported Conveyor's modules.

A `conveyor` process spends most of its start-up importing (FastAPI, SQLAlchemy, the web
layer): up to 1.5 s of CPU, paid again by every server start and every CLI command of the
tests. The tests get their processes from a *preloaded* one instead: a helper process that
imported all of that once and forks a child per command. The child runs the very code the
`conveyor` script runs (`conveyor.cli.main:main` with the same arguments, environment, working
folder, stdin, stdout and stderr) as a process of its own, with its own exit status, that
SIGKILL, SIGSTOP and SIGTERM reach like any other.

What it is not: an `exec` of the `conveyor` script. /proc/PID/environ and /proc/PID/cmdline show
the helper's, not the command's, so a test that looks at those (the sandbox's) starts the real
script (``start_conveyor(..., preloaded=False)``); TESTS_EXEC_CONVEYOR=1 makes every test do so.
The helper imports Conveyor when a test session first needs it: code changed during a session
reaches the commands of the next one.

Run as a script, this file is the helper: one JSON request per line on stdin
({"args", "env", "cwd", "log", "stdin", "stderr", "status"}), the child's pid per line on
stdout; when a child ends, its exit status is written to the request's "status" file (as
``Popen.returncode``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

STATUS_WAIT = 10.0
# The environment every child starts from (tests/e2e/conftest.py sets it: clean_env).
base_env: Callable[[], dict[str, str]] = lambda: dict(os.environ)  # noqa: E731


# ---------------------------------------------------------------- the helper (its own process)


def _serve() -> None:
    # Everything `conveyor server` imports before it answers, paid once here.
    import uvicorn  # noqa: F401

    import conveyor.api.app
    import conveyor.cli.main
    import conveyor.cli.startup
    import conveyor.engine.node
    import conveyor.engine.sandbox  # noqa: F401
    import conveyor.store.db as db

    db.head_revision()  # Alembic and the migration scripts

    statuses: dict[int, str] = {}

    def reap(_signum: int, _frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            path = statuses.pop(pid, None)
            if path is not None:
                code = os.waitstatus_to_exitcode(status)
                Path(path + ".tmp").write_text(str(code))
                os.replace(path + ".tmp", path)

    signal.signal(signal.SIGCHLD, reap)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # statuses before reaping
        pid = os.fork()
        if pid == 0:
            _child(request)  # never returns
        statuses[pid] = request["status"]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        print(pid, flush=True)


def _child(request: dict[str, object]) -> None:
    code: object = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        os.chdir(str(request["cwd"]))
        stdin = request.get("stdin") or os.devnull
        stdout = str(request["log"])
        stderr = str(request.get("stderr") or stdout)
        for fd, path, flags in (
            (0, stdin, os.O_RDONLY),
            (1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            if fd == 2 and path == stdout:
                os.dup2(1, 2)  # one file, one offset: as `2>&1`
                continue
            opened = os.open(str(path), flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        # A reader of its own: the helper's may hold read-ahead of the helper's requests.
        sys.stdin = open(0, encoding=sys.stdin.encoding, errors=sys.stdin.errors, closefd=False)  # noqa: SIM115
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update(env)
        args = request["args"]
        assert isinstance(args, list)
        sys.argv = ["conveyor", *args]
        from conveyor.cli.main import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


# ---------------------------------------------------------------- the tests' side


class PreloadedProcess:
    """The part of ``subprocess.Popen`` the tests use, for a child of the helper."""

    def __init__(self, pid: int, status: Path) -> None:
        self.pid = pid
        self.args = ["conveyor", "server"]
        self._status = status
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._status.exists():
            self.returncode = int(self._status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Helper:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.count = 0

    def start(
        self, args: list[str], env: dict[str, str], cwd: Path, log: Path, **more: str
    ) -> PreloadedProcess:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                # Started without any CONVEYOR_* setting (each child sets its own), with the
                # rest of what the children get: what a library reads at import is the same.
                own = {k: v for k, v in base_env().items() if not k.startswith("CONVEYOR_")}
                self.proc = subprocess.Popen(
                    [sys.executable, "-P", __file__],  # -P: not this folder on sys.path
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=own,
                    text=True,
                )
                atexit.register(self.close)
            self.count += 1
            status = log.with_name(f"{log.name}.exit-{os.getpid()}-{self.count}")
            request = {"args": args, "env": env, "cwd": str(cwd), "log": str(log), **more}
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps({**request, "status": str(status)}) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
            assert answer.strip().isdigit(), "the preloaded helper stopped"
            return PreloadedProcess(int(answer), status)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=STATUS_WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_helper = _Helper()


def start_preloaded(
    args: list[str], env: dict[str, str], cwd: Path, log: Path, **streams: str
) -> PreloadedProcess:
    """`conveyor ARGS` with ``env`` in ``cwd``, its output in ``log``, forked from the helper.
    ``stdin`` and ``stderr`` (paths) give it input and keep its errors apart."""
    return _helper.start(args, env, cwd, log, **streams)


def run_preloaded(
    args: tuple[str, ...], env: dict[str, str], cwd: Path, input: str | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """As ``subprocess.run(["conveyor", *args], capture_output=True, text=True)`` would."""
    folder = Path(tempfile.mkdtemp(prefix="conveyor-command-"))
    try:
        streams = {"stderr": str(folder / "stderr")}
        if input is not None:
            (folder / "stdin").write_text(input)
            streams["stdin"] = str(folder / "stdin")
        proc = start_preloaded(list(args), env, cwd, folder / "stdout", **streams)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STATUS_WAIT)
            raise
        out = (folder / "stdout").read_text()
        err = (folder / "stderr").read_text()
        return subprocess.CompletedProcess(["conveyor", *args], code, out, err)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    _serve()
