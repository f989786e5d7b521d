"""Where scripts run on the server: under bubblewrap, as an unprivileged user, seeing only the
system (read-only), a private /tmp, and the folders of their own run.

Why bubblewrap and a dedicated user rather than Landlock alone: a mount namespace is a
default-deny view (what is not bound does not exist, so no path trick reaches the data folder),
a pid namespace with a fresh /proc hides the server's process (its environ, its root, its fds),
and the unprivileged uid means that even an escape from the view cannot read the server's 0600
files. Landlock only filters paths of one view and leaves /proc and the uid as they are.

When the server runs as root, bubblewrap runs as root (it can then bind folders inside the 0700
data folder and needs no unprivileged user namespaces) and the script is dropped to
``settings.sandbox_user`` with no capabilities and ``no_new_privs`` before it starts. Otherwise
bubblewrap runs unprivileged, as the server's own user, in a new user namespace.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.settings import Settings

# A read-only view of the system: the tools and libraries scripts use, and their settings.
SYSTEM = ("/usr", "/etc")
# On merged-/usr systems these are links into /usr; elsewhere they are folders.
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETPRIV = "/usr/bin/setpriv"
# The sandbox's own /tmp: a fresh tmpfs per run, not the host's.
PRIVATE_TMP = "/tmp"  # noqa: S108
# Where a run's folders appear inside the sandbox: the data folder's path is never shown.
WORK = Path("/conveyor/work")
TARGET = Path("/conveyor/target")
PROBE_SECONDS = 15.0
ALLOW_HINT = "CONVEYOR_ALLOW_UNSANDBOXED_SCRIPTS=true"
INSTALL_HINT = "install bubblewrap (`apt-get install bubblewrap`)"


@dataclass(frozen=True)
class Owner:
    """The operating-system user scripts run as (only when the server runs as root)."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Status:
    """What the start-up probe found, and so how scripts run on this server."""

    usable: bool
    allowed_unsandboxed: bool
    owner: Owner | None
    reason: str = ""

    @property
    def runs_scripts(self) -> bool:
        return self.usable or self.allowed_unsandboxed

    def describe(self) -> str:
        """The one start-up line saying which mode is in force."""
        if self.usable:
            who = self.owner.name if self.owner else "the server's own user"
            return f"Scripts on the server run in the bubblewrap sandbox as {who}."
        if self.allowed_unsandboxed:
            return (
                f"WARNING: scripts on the server run WITHOUT a sandbox, as the server's user "
                f"({ALLOW_HINT}): {self.reason}."
            )
        return f"Scripts on the server are refused: {self.refusal()}"

    def refusal(self) -> str:
        return (
            f"the script sandbox is not usable on this server ({self.reason}); "
            f"{INSTALL_HINT}, or set {ALLOW_HINT} to run scripts unsandboxed as the "
            "server's user"
        )


def sandbox_owner(settings: Settings) -> Owner | None:
    """``None`` unless the server is root: then the user scripts are dropped to."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(settings.sandbox_user)
    if entry.pw_uid == 0:
        raise ValueError(f"sandbox_user {settings.sandbox_user!r} is root")
    return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid)


_probed: dict[tuple[object, ...], Status] = {}


def status(settings: Settings) -> Status:
    """Probe once per process and configuration: run a tiny script through the sandbox."""
    key = (
        settings.sandbox_bwrap,
        settings.sandbox_user,
        settings.sandbox_network,
        settings.allow_unsandboxed_scripts,
        str(Path(settings.data_dir).resolve()),
        os.geteuid(),
    )
    if key not in _probed:
        _probed[key] = _probe(settings)
    return _probed[key]


def _probe(settings: Settings) -> Status:
    allowed = settings.allow_unsandboxed_scripts
    try:
        owner = sandbox_owner(settings)
    except (KeyError, ValueError) as exc:
        reason = f"sandbox_user {settings.sandbox_user!r} is not a usable user: {exc}"
        return Status(False, allowed, None, reason)
    if not Path(settings.sandbox_bwrap).is_file():
        return Status(False, allowed, owner, f"{settings.sandbox_bwrap} does not exist")
    data = Path(settings.data_dir).resolve()
    if any(data.is_relative_to(s) for s in SYSTEM):
        reason = f"the data folder {data} is inside /usr or /etc, which scripts see: move it"
        return Status(False, allowed, owner, reason)
    with tempfile.TemporaryDirectory(prefix="conveyor-probe-") as tmp:
        folder = Path(tmp) / "run"
        private_folder(folder, owner)
        # It can write its folder, cannot see the data folder, and runs as the user it should.
        check = 'echo ok > probe && cat probe && test ! -e "$1" && test "$(id -u)" = "$2"'
        uid = str(owner.uid if owner else os.geteuid())
        argv = wrap(
            settings,
            owner,
            ["/bin/sh", "-c", check, "sh", str(data), uid],
            cwd=str(WORK),
            mounts={folder: WORK},
            env={},
        )
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=PROBE_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Status(False, allowed, owner, f"bubblewrap could not run: {exc}")
    if done.returncode != 0 or done.stdout.strip() != "ok":
        said = (done.stderr or done.stdout).strip().splitlines()
        reason = f"bubblewrap failed: {said[-1] if said else f'exit code {done.returncode}'}"
        return Status(False, allowed, owner, reason)
    return Status(True, allowed, owner)


def wrap(
    settings: Settings,
    owner: Owner | None,
    argv: list[str],
    *,
    cwd: str,
    mounts: Mapping[Path, Path],
    env: Mapping[str, str],
) -> list[str]:
    """The bubblewrap command that runs ``argv`` in ``cwd`` (a path inside), seeing of the
    server's folders only ``mounts`` (host folder -> where it appears inside), writable."""
    args = [settings.sandbox_bwrap]
    if owner is None:
        args.append("--unshare-user-try")  # unprivileged bubblewrap needs a user namespace
    args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not settings.sandbox_network:
        args.append("--unshare-net")
    args += ["--die-with-parent", "--new-session", "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    for system in SYSTEM:
        args += ["--ro-bind", system, system]
    for link in SYSTEM_LINKS:
        path = Path(link)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), link]
        elif path.is_dir():
            args += ["--ro-bind", link, link]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", PRIVATE_TMP]
    made: set[Path] = {Path("/"), Path(PRIVATE_TMP)}
    # Read-only extras outside /usr and /etc: the interpreter for Python scripts, and where
    # /etc/resolv.conf points on systemd-resolved hosts (so that names still resolve).
    resolver = Path("/etc/resolv.conf").resolve()
    for extra in (Path(sys.base_prefix).resolve(), resolver):
        if extra.exists() and not any(extra.is_relative_to(s) for s in SYSTEM):
            args += _parents(extra, made)
            args += ["--ro-bind", str(extra), str(extra)]
    for host, inside in mounts.items():
        args += _parents(inside, made)
        args += ["--bind", str(host.resolve()), str(inside)]
    args += ["--chdir", cwd, "--"]
    if owner is not None:
        args += [
            SETPRIV,
            f"--reuid={owner.uid}",
            f"--regid={owner.gid}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
    return args + argv


def _parents(folder: Path, made: set[Path]) -> list[str]:
    """Empty, world-traversable folders on the way to a bind (nothing else of the host)."""
    args: list[str] = []
    for parent in reversed(folder.parents):
        if parent not in made and not any(parent.is_relative_to(s) for s in SYSTEM):
            args += ["--perms", "0755", "--dir", str(parent)]
            made.add(parent)
    made.add(folder)
    return args


def inside(path: Path, mounts: Mapping[Path, Path]) -> str:
    """Where a host path under one of ``mounts`` appears inside the sandbox."""
    for host, view in mounts.items():
        if path.is_relative_to(host):
            return str(view / path.relative_to(host))
    raise ValueError(f"{path} is not visible in the sandbox")


def environment(values: Mapping[str, str], home: Path, *, sandboxed: bool) -> dict[str, str]:
    """Exactly what a script gets: a plain PATH and locale, its home, and the step's variables.
    Never the server's environment (CONVEYOR_* settings, database URL, root's HOME)."""
    env = {
        "PATH": PATH if sandboxed else os.environ.get("PATH", PATH),
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }
    if sandboxed:
        env["TMPDIR"] = PRIVATE_TMP
    env.update(values)
    return env


def private_folder(folder: Path, owner: Owner | None) -> None:
    """A folder only its run can enter: 0700, owned by the sandbox user when there is one."""
    for parent in reversed(folder.parents):  # the folders on the way: the server's, 0700
        if not parent.exists():
            parent.mkdir(mode=0o700, exist_ok=True)
    folder.mkdir(mode=0o700, exist_ok=True)
    # Through a descriptor opened without following links: a script may have put a link where
    # a folder of its own was, and root must never chmod or chown what that link points to.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o700)
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
    finally:
        os.close(fd)


def give_tree(folder: Path, owner: Owner | None) -> None:
    """Hand a tree to the sandbox user, never following a link out of it (``os.fwalk`` holds
    each folder open, so swapping one for a link while we walk changes nothing)."""
    if owner is None:
        return
    for _, dirs, files, fd in os.fwalk(folder, follow_symlinks=False):
        os.fchown(fd, owner.uid, owner.gid)
        for name in dirs + files:  # a link is chowned itself, never what it points to
            os.chown(name, owner.uid, owner.gid, dir_fd=fd, follow_symlinks=False)


def adopt(folder: Path, owner: Owner | None) -> None:
    """A target folder from before the sandbox (owned by root): hand it over once."""
    if owner is None or folder.is_symlink() or not folder.is_dir():
        return
    if folder.stat().st_uid != owner.uid:
        give_tree(folder, owner)


def private_data_folder(settings: Settings) -> None:
    """The data folder 0700 and the master key 0600, whatever an older version left."""
    data = Path(settings.data_dir)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    data.chmod(0o700)
    key = data / "master.key"
    if key.exists():
        key.chmod(0o600)
