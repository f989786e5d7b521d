"""Rules about targets and workers: what a target document must say for its kind, where
Conveyor keeps its files on a machine, which worker takes a step, and what a health check found.

Pure functions: the runners (`engine/steps/runners.py`, `engine/ssh.py`, `engine/agents.py`)
and the services use them; nothing here touches a machine.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from conveyor.domain.documents import (
    PackageAction,
    ScriptAction,
    Step,
    Target,
    UnhealthyTargets,
    key,
    slugify,
)
from conveyor.domain.errors import Problem
from conveyor.domain.planning import scope_refusal

KINDS = ("local", "ssh", "agent")
# The pool a script step with no target roles runs in when it names none; the server itself is
# its built-in worker unless an administrator empties it (CONVEYOR_BUILTIN_WORKER=false).
DEFAULT_POOL = "default"
BUILTIN_WORKER = "the server"
# A public key as ssh-keyscan and ~/.ssh/known_hosts write it: algorithm, base64, comment.
HOST_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|rsa-sha2-256|rsa-sha2-512|ecdsa-sha2-nistp(256|384|521)"
    r"|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}( .*)?$"
)
PIN_HINT = (
    "pin it: run `ssh-keyscan -p {port} {host}` from a machine you trust (or read "
    "/etc/ssh/ssh_host_ed25519_key.pub on the host), check its fingerprint with the host's "
    "owner, and put that line without the host name in the target's host_key"
)
# On a machine, below the target's folder (ssh: work_dir, default ~/.conveyor; agent: --work-dir).
DEFAULT_SSH_DIR = ".conveyor"


def problems_of(target: Target) -> list[Problem]:
    """What is wrong with one target document on its own (references are checked elsewhere)."""
    path: tuple[str | int, ...] = ("targets", target.name)
    out: list[Problem] = []
    if target.kind not in KINDS:
        out.append(
            Problem(
                (*path, "kind"),
                f'"{target.kind}" is not a target kind (one of: {", ".join(KINDS)})',
            )
        )
        return out
    if target.pool:
        if target.kind == "local":
            out.append(
                Problem(
                    (*path, "pool"),
                    "the server itself is the built-in worker: a worker is an ssh or agent target",
                )
            )
        if target.environments or target.roles:
            out.append(
                Problem(
                    (*path, "pool"),
                    "a worker belongs to a pool, not to environments: remove its environments "
                    "and roles",
                )
            )
    else:
        if not target.environments:
            out.append(Problem((*path, "environments"), "a target needs an environment"))
        if not target.roles:
            out.append(Problem((*path, "roles"), "a target needs at least one role"))
    ssh_fields = ("host", "user", "private_key", "host_key", "work_dir")
    if target.kind != "ssh":
        for name in ssh_fields:
            if getattr(target, name):
                out.append(
                    Problem((*path, name), f"applies to ssh targets only, not {target.kind}")
                )
        if target.trust_first_host_key:
            out.append(Problem((*path, "trust_first_host_key"), "applies to ssh targets only"))
        return out
    if not target.host:
        out.append(Problem((*path, "host"), "an ssh target needs a host (a name or an address)"))
    elif not re.fullmatch(r"[A-Za-z0-9.:_\-\[\]%]{1,253}", target.host):
        out.append(Problem((*path, "host"), "is not a host name or address"))
    if not target.user:
        out.append(Problem((*path, "user"), "an ssh target needs the user to log in as"))
    if not target.private_key:
        out.append(
            Problem(
                (*path, "private_key"),
                "an ssh target needs a private key (OpenSSH format; write it as ${SECRET} "
                "so that it never lies in the file)",
            )
        )
    if not 1 <= target.port <= 65535:
        out.append(Problem((*path, "port"), "must be between 1 and 65535"))
    if target.host_key and not HOST_KEY.match(target.host_key.strip()):
        out.append(
            Problem(
                (*path, "host_key"),
                "is not a public host key: write it as `ssh-keyscan` prints it without the host "
                "name, e.g. `ssh-ed25519 AAAAC3Nza…`",
            )
        )
    if not target.host_key and not target.trust_first_host_key:
        out.append(
            Problem(
                (*path, "host_key"),
                "an ssh target needs its host key pinned: "
                + PIN_HINT.format(port=target.port, host=target.host or "HOST")
                + " (or set trust_first_host_key: true to pin the first key seen)",
            )
        )
    return out


# ---------------------------------------------------------------- the files on a machine


@dataclass(frozen=True)
class Layout:
    """Where Conveyor keeps its files below ``root`` on a remote machine (POSIX paths, as
    text: the domain touches no file system)."""

    root: str

    def _at(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/") or "/", *parts]).replace("//", "/")

    def project(self, environment: str, project: str) -> str:
        """The project's folder in one environment: versions, ``current`` and its scripts' cwd."""
        return self._at("targets", slugify(environment), slugify(project))

    def version(self, environment: str, project: str, version: str) -> str:
        return self._at("targets", slugify(environment), slugify(project), version)

    def package_file(self, package: str, version: str, suffix: str) -> str:
        """The package as sent: kept so that a redeploy of the same file sends nothing."""
        return self._at("packages", f"{slugify(package)}.{version}{suffix}")

    def work(self, task: str, step: int, attempt: int) -> str:
        """A step's private scratch folder, removed when its script ends."""
        return self._at("work", f"{task}-{step}-{attempt}")


# ---------------------------------------------------------------- workers


def pool_members(targets: Sequence[Target], pool: str) -> list[Target]:
    """The enabled workers of ``pool`` (names compare as keys)."""
    wanted = key(pool)
    return [t for t in targets if t.pool and key(t.pool) == wanted and not t.disabled]


def least_loaded(candidates: Sequence[str], load: Mapping[str, int]) -> str:
    """The worker with the fewest steps running now; ties go to the first in file order, so a
    quiet system always uses the same worker (its caches stay warm)."""
    if not candidates:
        raise ValueError("no candidates")
    return min(candidates, key=lambda name: (load.get(name, 0), candidates.index(name)))


# ---------------------------------------------------------------- health


class HealthState(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"  # never checked


@dataclass(frozen=True)
class Health:
    """What one check of a machine found."""

    state: HealthState
    message: str = ""
    os: str = ""
    free_disk_bytes: int | None = None
    agent_version: str = ""

    @property
    def healthy(self) -> bool:
        return self.state is HealthState.HEALTHY

    @classmethod
    def failed(cls, message: str) -> Health:
        return cls(HealthState.UNHEALTHY, message)


# A machine with less free space than this on its Conveyor folder is unhealthy: a package
# extracted there would fail half-way.
MIN_FREE_DISK_BYTES = 100 * 1024 * 1024


def judged(health: Health) -> Health:
    """A reachable machine is still unhealthy when its disk is all but full."""
    free = health.free_disk_bytes
    if health.healthy and free is not None and free < MIN_FREE_DISK_BYTES:
        mib = free // (1024 * 1024)
        return Health(
            HealthState.UNHEALTHY,
            f"only {mib} MiB free where Conveyor keeps its files",
            health.os,
            free,
            health.agent_version,
        )
    return health


def changed(before: HealthState | None, after: HealthState) -> bool:
    """Whether a check is worth an audit event: the state differs from the last one recorded."""
    return before is not after


# ---------------------------------------------------------------- before a deployment starts


def serves(target: Target, environment: str, roles: Collection[str]) -> bool:
    """Whether ``target`` is a deployment target of ``environment`` with one of ``roles``
    (disabled or not: callers decide what a disabled target means to them)."""
    return key(environment) in {key(e) for e in target.environments} and bool(
        {key(r) for r in roles} & {key(r) for r in target.roles}
    )


def runs_on(step: Step, target: Target, environment: str) -> bool:
    """Whether a deployment to ``environment`` runs ``step`` on ``target``: a script or
    package step with target roles, enabled, in scope there, naming one of its roles."""
    action = step.action
    if not isinstance(action, ScriptAction | PackageAction) or not action.target_roles:
        return False
    if step.disabled or scope_refusal(step, environment) is not None:
        return False
    return serves(target, environment, action.target_roles)


def required_healthy(
    steps: Sequence[Step],
    targets: Sequence[Target],
    environment: str,
    skip: Collection[str],
) -> dict[str, list[str]]:
    """The targets a deployment needs healthy before it starts, with the steps that need
    them: the enabled targets of every step that runs on targets in ``environment`` (not
    skipped by the person who deployed) and fails on an unhealthy one (``fail``)."""
    skipped = {key(s) for s in skip}
    needed: dict[str, list[str]] = {}
    for step in steps:
        action = step.action
        if key(step.name) in skipped or not isinstance(action, ScriptAction | PackageAction):
            continue
        if action.unhealthy_targets is not UnhealthyTargets.FAIL:
            continue
        for t in targets:
            if not t.disabled and runs_on(step, t, environment):
                needed.setdefault(t.name, []).append(step.name)
    return needed
