"""What an agent does with a job: run a script, or install a package, below its work folder.

The folder follows `conveyor.domain.targets.Layout`: ``targets/ENV/PROJECT`` (a project's
versions, its ``current`` link, its scripts' working folder), ``packages/`` (the files as
downloaded, so that a redeploy of the same file downloads nothing) and ``work/`` (a job's
scratch folder, removed when it ends). Scripts run in their own process group (the server's
`conveyor.engine.runner`), so cancel and timeout stop everything they started. Output goes back
in batches, each batch also asking the server whether the job is to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from conveyor.agent.client import AgentClient, Refused, Unreachable
from conveyor.domain.documents import ScriptSyntax, slugify
from conveyor.domain.packages import kept_versions
from conveyor.engine.runner import Isolation, run_script
from conveyor.services.archives import ArchiveLimits, extract
from conveyor.settings import Settings

# Output goes back at least this often (it is also how a running job learns of a cancel).
FLUSH_SECONDS = 0.3
BATCH_LINES = 500
# A batch stays well under the server's request limit (CONVEYOR_MAX_REQUEST_BYTES, 4 MiB).
BATCH_BYTES = 1 << 20
# Lines kept while the server is unreachable; beyond, the oldest are dropped (and said so).
MAX_PENDING_LINES = 20_000


def inside(root: Path, relative: str) -> Path:
    """``relative`` (as the server sends it) below ``root``; never outside it."""
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("..", "/") or p.startswith("/") for p in parts):
        raise ValueError(f"the server sent a path outside the work folder: {relative!r}")
    return root.joinpath(*parts)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Output:
    """A job's output on its way to the server: batched, and the server's cancel seen."""

    def __init__(self, client: AgentClient, job_id: int) -> None:
        self.client = client
        self.job_id = job_id
        self.pending: list[tuple[str, str]] = []
        self.cancel = asyncio.Event()
        self.dropped = 0
        self.refused = False

    def line(self, level: str, text: str) -> None:
        self.pending.append((level, text))
        if len(self.pending) > MAX_PENDING_LINES:
            over = len(self.pending) - MAX_PENDING_LINES
            del self.pending[:over]
            self.dropped += over

    def _batch(self) -> list[tuple[str, str]]:
        size, count = 0, 0
        for _, text in self.pending[:BATCH_LINES]:
            size += len(text.encode()) + 32
            if count and size > BATCH_BYTES:
                break
            count += 1
        return self.pending[:count]

    async def flush(self) -> None:
        """Send what is pending (a heartbeat when nothing is); kept for later when unreachable."""
        while True:
            batch = self._batch()
            try:
                stop = await self.client.lines(self.job_id, batch)
            except Unreachable:
                return
            except (Refused, LookupError):  # revoked, or the job is gone: stop it
                self.refused = True
                self.cancel.set()
                return
            del self.pending[: len(batch)]
            if stop:
                self.cancel.set()
            if not self.pending:
                return

    async def pump(self, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), FLUSH_SECONDS)
            await self.flush()


class Worker:
    """Carries out jobs below ``root``."""

    def __init__(self, root: Path, client: AgentClient, settings: Settings) -> None:
        self.root = root
        self.client = client
        self.settings = settings

    async def run(self, job: dict[str, Any], stopping: asyncio.Event) -> dict[str, Any]:
        """Carry out one job; its result for the server."""
        job_id = int(job["id"])
        output = Output(self.client, job_id)
        done = asyncio.Event()
        pump = asyncio.ensure_future(output.pump(done))
        # The agent stopping (SIGTERM) stops its jobs like a cancel.
        stop_watch = asyncio.ensure_future(_forward(stopping, output.cancel))
        try:
            if job.get("kind") == "package":
                result = await self._install(job, output)
            else:
                result = await self._script(job, output)
        except Exception as exc:  # a job fails with a reason, the agent lives on
            output.line("error", f"The agent could not do this: {exc}")
            result = {"error": f"the agent could not do this: {exc}"}
        finally:
            stop_watch.cancel()
            done.set()
            await pump
            await output.flush()
        if stopping.is_set() and result.get("canceled") and not output.refused:
            # Not a cancel anybody asked for: the step fails and says why.
            result = {**result, "error": "the agent was stopped while running this"}
        if output.dropped:
            result["dropped_lines"] = output.dropped
        return result

    # ------------------------------------------------------------ scripts

    async def _script(self, job: dict[str, Any], output: Output) -> dict[str, Any]:
        scratch = self.root / "work" / f"job-{int(job['id'])}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True, mode=0o700)
        if job.get("installed"):
            cwd = Path(str(job["installed"]))
            if self.root.resolve() not in cwd.resolve().parents:
                raise ValueError(f"{cwd} is not below this agent's work folder")
        elif job.get("dir"):
            cwd = inside(self.root, str(job["dir"]))
        else:
            cwd = scratch / "cwd"
        cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
        timeout = job.get("timeout")
        try:
            result = await run_script(
                str(job["script"]),
                ScriptSyntax(str(job.get("syntax") or "bash")),
                cwd=cwd,
                variables={str(k): str(v) for k, v in (job.get("env") or {}).items()},
                on_line=lambda level, text: output.line(level, text),
                timeout_seconds=float(timeout) if timeout else None,
                cancel=output.cancel,
                script_dir=scratch,
                isolation=Isolation(self.settings, sandboxed=False, owner=None),
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "canceled": result.canceled,
            "outputs": result.outputs,
        }

    # ------------------------------------------------------------ packages

    async def _install(self, job: dict[str, Any], output: Output) -> dict[str, Any]:
        package, version = str(job["package"]), str(job["version"])
        if "/" in version or version in ("", ".", ".."):
            raise ValueError(f"{version!r} cannot be a folder name")
        wanted = str(job["sha256"])
        file = inside(self.root, str(job["file"]))
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        held = file.is_file() and await asyncio.to_thread(known_sha256, file) == wanted
        if held:
            output.line("info", f"{file.name} is here already (same sha256): nothing to download")
        else:
            got = await self._download(int(job["id"]), file)
            if got != wanted:
                file.unlink(missing_ok=True)
                raise ValueError(
                    f"the download of {package} {version} does not match its sha256 "
                    f"(got {got[:12]}…, expected {wanted[:12]}…)"
                )
            await asyncio.to_thread(remember_sha256, file, got)
            output.line(
                "info", f"Downloaded {file.name} ({file.stat().st_size} bytes), sha256 verified"
            )
        base = inside(self.root, str(job["dir"]))
        keep = int(job.get("keep") or self.settings.keep_package_versions)
        folder, extracted = await asyncio.to_thread(
            self._extract, file, wanted, base, version, int(job["id"]), keep
        )
        if not extracted:
            output.line("info", f"{package} {version} is extracted here already: switched to it")
        await asyncio.to_thread(_keep_files, file, package, keep)
        return {"folder": str(folder)}

    async def _download(self, job_id: int, file: Path) -> str:
        attempts = 0
        while True:
            try:
                return await self.client.download(job_id, file)
            except Unreachable:
                attempts += 1
                if attempts >= 5:
                    raise
                await asyncio.sleep(min(2**attempts, 10))

    def _extract(
        self, file: Path, sha256: str, base: Path, version: str, job_id: int, keep: int
    ) -> tuple[Path, bool]:
        """Into ``base/version``, then ``current`` switched to it at once; old versions go. A
        kept version extracted from this very file (same sha256) is used as it is: a redeploy
        or a rollback is a link switch. Whether it extracted."""
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = base / version
        record = base.parent / f".{base.name}.versions.json"
        history, digests = _read_record(record)
        extract_it = not (
            folder.is_dir() and not folder.is_symlink() and digests.get(version) == sha256
        )
        if extract_it:
            staging = base.parent / f".{base.name}.{version}.incoming-{job_id}"
            shutil.rmtree(staging, ignore_errors=True)
            extract(file, staging, ArchiveLimits.of(self.settings))
            if folder.is_symlink() or folder.is_file():
                folder.unlink()
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        link = base / ".current.incoming"
        link.unlink(missing_ok=True)
        link.symlink_to(folder.name)
        os.replace(link, base / "current")  # atomic switch of what is live
        self._keep_versions(base, record, history, digests | {version: sha256}, version, keep)
        return folder, extract_it

    def _keep_versions(
        self,
        base: Path,
        record: Path,
        history: list[str],
        digests: dict[str, str],
        deployed: str,
        keep: int,
    ) -> None:
        """The versions beyond the newest ``keep`` go; which ones the agent extracted (and from
        which file) is recorded beside ``base``, so a folder a script made there is never taken
        for one."""
        kept, stale = kept_versions(history, deployed, keep)
        for version in stale:
            old = base / version
            if old.is_symlink() or old.is_file():
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)
        partial = record.with_suffix(".incoming")
        sha = {v: d for v, d in digests.items() if v in kept}
        partial.write_text(json.dumps({"kept": kept, "sha256": sha}))
        os.replace(partial, record)


def _read_record(record: Path) -> tuple[list[str], dict[str, str]]:
    """The versions kept, oldest first, and the sha256 of the file each came from; anything
    unreadable counts as none (then every version is extracted again)."""
    try:
        found = json.loads(record.read_text())
    except (OSError, ValueError):
        return [], {}
    if isinstance(found, list):  # written before the record held digests
        return [str(v) for v in found], {}
    if not isinstance(found, dict):
        return [], {}
    kept = [str(v) for v in found.get("kept") or []]
    digests = found.get("sha256") or {}
    return kept, {str(k): str(v) for k, v in digests.items()} if isinstance(digests, dict) else {}


def _keep_files(file: Path, package: str, keep: int) -> None:
    """A package's files beyond the newest ``keep`` go (the one just used counts as newest),
    as its versions do; which files the agent fetched is recorded beside them."""
    record = file.parent / f".{slugify(package)}.files.json"
    try:
        history = [str(name) for name in json.loads(record.read_text())]
    except (OSError, ValueError, TypeError):
        history = []
    kept, stale = kept_versions(history, file.name, keep)
    for name in stale:
        if "/" not in name and name not in (".", ".."):
            (file.parent / name).unlink(missing_ok=True)
            (file.parent / f"{name}.sha256").unlink(missing_ok=True)
    partial = record.with_suffix(".incoming")
    partial.write_text(json.dumps(kept))
    os.replace(partial, record)


def remember_sha256(file: Path, sha256: str) -> None:
    """The verified sha256 of a package file, with its size and time, beside it (0600)."""
    info = file.stat()
    note = file.with_name(file.name + ".sha256")
    fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{sha256} {info.st_size} {info.st_mtime_ns}\n")


def known_sha256(file: Path) -> str:
    """A package file's sha256: the one remembered when it was verified, while its size and
    time are unchanged (a redeploy hashes nothing), else computed."""
    try:
        sha, size, mtime = file.with_name(file.name + ".sha256").read_text().split()
        info = file.stat()
        if int(size) == info.st_size and int(mtime) == info.st_mtime_ns:
            return sha
    except (OSError, ValueError):
        pass
    return sha256_of(file)


async def _forward(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
