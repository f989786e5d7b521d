"""A real OpenSSH server for tests: `start_sshd(folder)` runs `/usr/sbin/sshd -D -e` with its own
configuration, an ed25519 host key and a user key generated in ``folder``, on a free loopback
port (or on a given address, e.g. inside an `ip netns`), and waits until it accepts
connections. The login user is the one running the tests (root in CI). `Sshd.stop()` ends it;
the ``sshd`` fixture does so at the end of the test.

Its log (``LogLevel VERBOSE``) is kept in ``folder/sshd.log``: `Sshd.connections()` counts the
connections it accepted, which is how a test proves that a connection was reused.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    """One running sshd and what a target needs to reach it."""

    host: str
    port: int
    host_key: str  # the public host key as ssh-keyscan prints it, without the host
    private_key: str  # the user's private key (OpenSSH format)
    user: str
    folder: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    prefix: Sequence[str] = ()  # e.g. ("ip", "netns", "exec", "ns1") to run it in a namespace

    @property
    def log(self) -> Path:
        return self.folder / "sshd.log"

    def connections(self) -> int:
        """How many connections this sshd accepted so far."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("Connection from ")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the listener and every connection it serves (each is a child process)."""
        if self.process is None:
            return
        children = _children(self.process.pid)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        """Start it again with the same keys and port (after ``stop``)."""
        self.process = _launch(self.folder, self.prefix)
        _wait_listening(self, self.prefix)


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (sshd forks one per connection), recursively."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        path = Path(f"/proc/{parent}/task/{parent}/children")
        try:
            kids = [int(p) for p in path.read_text().split()]
        except OSError:
            continue
        found.extend(kids)
        pending.extend(kids)
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def keypair(path: Path, comment: str) -> tuple[str, str]:
    """A fresh ed25519 key pair at ``path``: (private key text, public key line)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


def without_comment(public: str) -> str:
    """``ssh-ed25519 AAAA… comment`` -> ``ssh-ed25519 AAAA…`` (as ssh-keyscan prints it)."""
    return " ".join(public.split()[:2])


def skip_unless_possible() -> None:
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        reason = "these tests need OpenSSH's sshd and ssh-keygen (apt-get install openssh-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    if os.geteuid() != 0:
        reason = "these tests start sshd, which needs root"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def start_sshd(
    folder: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    prefix: Sequence[str] = (),
    host_key_file: Path | None = None,
) -> Sshd:
    """Start sshd on ``host`` (a free port unless given); ``prefix`` runs it through another
    command (``ip netns exec NAME``). ``host_key_file`` reuses a host key (a restarted host)."""
    skip_unless_possible()
    folder.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    if host_key_file is None:
        host_key_file = folder / "host_ed25519"
        _, host_public = keypair(host_key_file, "host")
    else:
        host_public = host_key_file.with_suffix(".pub").read_text().strip()
    user_private, user_public = keypair(folder / "user_ed25519", "conveyor-test")
    (folder / "authorized_keys").write_text(user_public + "\n")
    port = port or free_port(host)
    (folder / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {host}",
                f"HostKey {host_key_file}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                f"PidFile {folder / 'sshd.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "LogLevel VERBOSE",
                "MaxStartups 100",
                "MaxSessions 20",
                # A session whose client vanished (a cut link) ends instead of lingering.
                "ClientAliveInterval 10",
                "ClientAliveCountMax 3",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    server = Sshd(
        host=host,
        port=port,
        host_key=without_comment(host_public),
        private_key=user_private,
        user=getpass.getuser(),
        folder=folder,
        prefix=tuple(prefix),
    )
    server.process = _launch(folder, prefix)
    _wait_listening(server, prefix)
    return server


def _launch(folder: Path, prefix: Sequence[str]) -> subprocess.Popen[bytes]:
    log = open(folder / "sshd.log", "ab")  # noqa: SIM115 - sshd holds it until it ends
    try:
        return subprocess.Popen(
            [*prefix, str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


def _wait_listening(server: Sshd, prefix: Sequence[str]) -> None:
    """Until sshd says it listens (its log), or fail with what it said."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = server.log.read_text(errors="replace") if server.log.exists() else ""
        if f"listening on {server.host} port {server.port}" in text.lower():
            return
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"sshd did not start: {text[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen within 10 s: {server.log.read_text()[-2000:]}")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd on a free loopback port, stopped at the end of the test."""
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()
