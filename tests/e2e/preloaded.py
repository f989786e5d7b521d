"""`conveyor server` processes forked from one that already imported the server's modules.

A server process spends most of its start-up importing (FastAPI, SQLAlchemy, the web layer):
about 1.5 s of CPU, paid again at every restart. A test that kills and restarts a server many
times gets its processes from a *preloaded* one instead: a helper process that imported all of
that once and forks a child per start. The child runs the very command `conveyor server` runs
(`conveyor.cli.main:main` with the same arguments, environment, folder and log), as a process of
its own that SIGKILL kills like any other.

What it is not: an `exec` of the `conveyor` script. /proc/PID/environ and /proc/PID/cmdline show
the helper's, not the server's, so a test that looks at those (the sandbox's) starts the real
script. Use it where a test restarts a server many times and only the server's behaviour is at
stake.

Run as a script, this file is the helper: one JSON request per line on stdin
({"args", "env", "cwd", "log", "status"}), the child's pid per line on stdout; when a child
ends, its exit status is written to the request's "status" file (as ``Popen.returncode``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

STATUS_WAIT = 10.0


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
        log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
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

    def start(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> PreloadedProcess:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                # Started without any CONVEYOR_* setting: each child gets its own environment.
                own = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
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
            request = {"args": args, "env": env, "cwd": str(cwd), "log": str(log)}
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


def start_preloaded(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> PreloadedProcess:
    """`conveyor ARGS` with ``env`` in ``cwd``, its output in ``log``, forked from the helper."""
    return _helper.start(args, env, cwd, log)


if __name__ == "__main__":
    _serve()
