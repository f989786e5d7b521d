"""SSH connections to targets: one per target on this node, reused by every step that runs
there, closed after ``ssh_idle_seconds`` without use; at most ``max_sessions`` commands on it
at once. The host key is held to what the target pins (or, with ``trust_first_host_key``, to
the first key seen, recorded by `conveyor.services.host_keys`); anything else is refused with
the key seen and how to pin it.

The private key is decrypted only here, when connecting, and never leaves this module: no
message built here holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncssh

from conveyor.domain.documents import Target, slugify
from conveyor.domain.errors import ConveyorError
from conveyor.domain.targets import DEFAULT_SSH_DIR, PIN_HINT
from conveyor.services import host_keys
from conveyor.services.core import Services
from conveyor.store.documents import reveal

# A machine that stops answering (cut off, powered down) is given up on after about
# settings.ssh_keepalive_seconds * KEEPALIVE_MISSES: the step fails instead of hanging.
KEEPALIVE_MISSES = 2


def where(target: Target) -> str:
    """``web-1 (10.0.0.5:22)``: how messages name a target's machine."""
    return f"{target.name} ({target.host}:{target.port})"


class _Client(asyncssh.SSHClient):
    """Remembers the host key a server showed when it was not the pinned one, and why the
    connection ended."""

    def __init__(self, trust_unknown: bool) -> None:
        self.trust_unknown = trust_unknown
        self.seen: asyncssh.SSHKey | None = None
        self.lost: str | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # Called only for a key that is not the pinned one.
        self.seen = key
        return self.trust_unknown

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = _reason(exc) if exc is not None else "the connection was closed"


@dataclass
class Link:
    """One open connection to a target, and what runs on it."""

    target: Target
    conn: asyncssh.SSHClientConnection
    client: _Client
    root: str  # Conveyor's folder on the machine, absolute
    sessions: asyncio.Semaphore
    users: int = 0
    idle: asyncio.TimerHandle | None = None
    _sftp: asyncssh.SFTPClient | None = None
    _sftp_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def alive(self) -> bool:
        return self.client.lost is None and not self.conn.is_closed()

    def lost(self, exc: BaseException | None = None) -> ConveyorError:
        """The error a step fails with when this connection broke under it (or, still up,
        refused what was asked of it: a session more than the machine allows)."""
        if self.alive and exc is not None:
            return ConveyorError(f"{where(self.target)}: {_reason(exc)}")
        reason = self.client.lost or (_reason(exc) if exc is not None else "it closed")
        return ConveyorError(f"lost the connection to {where(self.target)}: {reason}")

    async def run(
        self, command: str, *, stdin: str | None = None, check: str = ""
    ) -> asyncssh.SSHCompletedProcess:
        """Run ``command`` (one of this target's sessions); with ``check``, a non-zero exit
        fails with ``check`` and what the command wrote on stderr."""
        async with self.sessions:
            try:
                done = await self.conn.run(command, input=stdin, check=False)
            except (asyncssh.Error, OSError) as exc:
                raise self.lost(exc) from None
        if done.exit_status is None and not self.alive:
            raise self.lost()
        if check and done.exit_status != 0:
            said = str(done.stderr or "").strip().splitlines()[-5:]
            detail = ": " + " / ".join(said) if said else f" (exit code {done.exit_status})"
            raise ConveyorError(f"{check} on {self.target.name}{detail}")
        return done

    async def sftp(self) -> asyncssh.SFTPClient:
        """The connection's one SFTP session, shared by its steps."""
        async with self._sftp_lock:
            if self._sftp is None:
                try:
                    self._sftp = await self.conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    raise self.lost(exc) from None
            return self._sftp

    def close(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.conn.close()


class Connections:
    """This node's connections to its ssh targets."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._links: dict[str, Link] = {}
        self._connecting: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def use(self, target: Target) -> AsyncIterator[Link]:
        """The connection to ``target`` for as long as the caller needs it."""
        identity = _identity(target)
        lock = self._connecting.setdefault(identity, asyncio.Lock())
        async with lock:
            link = self._links.get(identity)
            if link is None or not link.alive:
                if link is not None:
                    link.close()
                link = await connect(self.services, target)
                self._links[identity] = link
            link.users += 1
            if link.idle is not None:
                link.idle.cancel()
                link.idle = None
        try:
            yield link
        finally:
            link.users -= 1
            if link.users == 0:
                self._idle(identity, link)

    def _idle(self, identity: str, link: Link) -> None:
        def close() -> None:
            if link.users == 0:
                link.close()
                if self._links.get(identity) is link:
                    del self._links[identity]

        seconds = self.services.settings.ssh_idle_seconds
        if seconds <= 0 or not link.alive:
            close()
            return
        link.idle = asyncio.get_running_loop().call_later(seconds, close)

    def close(self) -> None:
        """Close every connection (the node stops)."""
        for link in self._links.values():
            link.close()
        self._links.clear()


def _identity(target: Target) -> str:
    """A connection serves one target as configured: a changed host, user, key or pin (the
    private key compares as stored, sealed or not) makes a new one."""
    parts = (
        slugify(target.name),
        target.host,
        str(target.port),
        target.user,
        str(target.private_key),
        target.host_key,
        str(target.trust_first_host_key),
        target.work_dir,
        str(target.max_sessions),
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def remote_root(target: Target) -> str:
    """Conveyor's folder on the machine as given (relative paths are from the user's home)."""
    root = (target.work_dir or DEFAULT_SSH_DIR).strip()
    if root == "~":
        return "."
    return root[2:] if root.startswith("~/") else root


async def connect(services: Services, target: Target) -> Link:
    """A new connection to ``target``, its host key checked, Conveyor's folder made."""
    settings = services.settings
    pinned = await _pinned(services, target)
    client = _Client(trust_unknown=pinned is None and target.trust_first_host_key)
    trusted = [pinned] if pinned is not None else []
    try:
        user_key = asyncssh.import_private_key(reveal(services.box, target.private_key))
    except (asyncssh.KeyImportError, ValueError) as exc:
        # The library's reason says what kind of problem it is, never the key itself.
        raise ConveyorError(
            f"the private key of target {target.name} cannot be used ({exc}): give an "
            "unencrypted OpenSSH or PEM private key"
        ) from None
    try:
        conn, _ = await asyncio.wait_for(
            asyncssh.create_connection(
                lambda: client,
                target.host,
                target.port,
                username=target.user,
                client_keys=[user_key],
                known_hosts=(trusted, [], []),
                # Nothing of this server's own SSH set-up (its keys, agent, config) is used.
                agent_path=None,
                config=[],
                connect_timeout=settings.ssh_connect_seconds,
                login_timeout=settings.ssh_connect_seconds,
                keepalive_interval=settings.ssh_keepalive_seconds,
                keepalive_count_max=KEEPALIVE_MISSES,
            ),
            settings.ssh_connect_seconds + 1,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise _refused_key(target, client.seen, pinned is not None) from None
    except asyncssh.PermissionDenied:
        raise ConveyorError(
            f"{where(target)} refused the key of user {target.user}: put the target's public "
            f"key in ~{target.user}/.ssh/authorized_keys there"
        ) from None
    except TimeoutError:
        raise ConveyorError(
            f"no answer from {where(target)} within {settings.ssh_connect_seconds:g} s"
        ) from None
    except (asyncssh.Error, OSError) as exc:
        raise ConveyorError(f"cannot connect to {where(target)}: {_reason(exc)}") from None
    if pinned is None:
        await _pin_first(services, target, conn)
    link = Link(target, conn, client, "", asyncio.Semaphore(max(target.max_sessions, 1)))
    root = remote_root(target)
    try:
        sftp = await link.sftp()
        await sftp.makedirs(root, exist_ok=True)
        link.root = str(await sftp.realpath(root))
    except (asyncssh.Error, OSError) as exc:
        conn.close()
        raise ConveyorError(
            f"cannot make Conveyor's folder {root} on {where(target)}: {_reason(exc)}"
        ) from None
    except BaseException:
        conn.close()
        raise
    return link


async def _pinned(services: Services, target: Target) -> asyncssh.SSHKey | None:
    """The key the target holds to: its own ``host_key``, or the one pinned on first use."""
    text = target.host_key.strip()
    if not text and target.trust_first_host_key:
        text = (await host_keys.pinned_host_key(services, target.name) or "").strip()
    if not text:
        if not target.trust_first_host_key:
            raise ConveyorError(
                f"target {target.name} has no host key pinned: "
                + PIN_HINT.format(port=target.port, host=target.host)
            )
        return None
    try:
        return asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError):
        raise ConveyorError(
            f"the host_key of target {target.name} is not a public key: "
            + PIN_HINT.format(port=target.port, host=target.host)
        ) from None


async def _pin_first(
    services: Services, target: Target, conn: asyncssh.SSHClientConnection
) -> None:
    """The first connection of a ``trust_first_host_key`` target: its key is recorded; when
    another node recorded a different one meanwhile, that one stands and this is refused."""
    shown = conn.get_server_host_key()
    if shown is None:  # pragma: no cover - a host key is always exchanged
        conn.close()
        raise ConveyorError(f"{where(target)} showed no host key")
    line = _public_line(shown)
    kept = await host_keys.pin_first_host_key(
        services, target.name, line, fingerprint(shown), f"{target.host}:{target.port}"
    )
    if kept.split()[:2] != line.split()[:2]:
        conn.close()
        raise _refused_key(target, shown, True)


def _refused_key(target: Target, seen: asyncssh.SSHKey | None, pinned: bool) -> ConveyorError:
    shown = f"its host key is {fingerprint(seen)} ({_public_line(seen)})" if seen else ""
    hint = PIN_HINT.format(port=target.port, host=target.host)
    if pinned:
        return ConveyorError(
            f"the host key of {where(target)} is not the one pinned"
            + (f": {shown}" if shown else "")
            + ". The machine changed its key, or this is another machine: if you expect the "
            f"change, {hint}"
        )
    return ConveyorError(
        f"the host key of {where(target)} is not trusted"
        + (f": {shown}" if shown else "")
        + f". To trust it, {hint}"
    )


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


def _public_line(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA…`` (no comment), as a target's host_key is written."""
    exported = key.export_public_key("openssh").decode("ascii")
    return " ".join(exported.split()[:2])


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "the connection was closed"
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
