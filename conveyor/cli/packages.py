"""`conveyor package`: pack a folder (local), push, list and delete (remote).

`conveyor.cli.main` imports this module to register it, so ``run`` is imported from there at
call time, and the option types are declared here, not imported (that would be a cycle).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, BinaryIO, TypeVar, cast
from urllib.parse import quote

import typer
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TransferSpeedColumn,
)

from conveyor.cli.client import Client
from conveyor.cli.output import Failure, Format, emit_json, err, out, say
from conveyor.cli.remote import new_table

T = TypeVar("T")

packages_app = typer.Typer(
    help="The built-in package feed: pack a folder, push, list.", no_args_is_help=True
)

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: $CONVEYOR_SERVER)")
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="API key (default: $CONVEYOR_API_KEY)")
]
OutputOpt = Annotated[Format, typer.Option("--output", help="text or json")]

# Uploads at least this big show a progress bar (on a terminal, in text mode).
PROGRESS_FROM = 4 << 20
# The server hashes and inspects the whole archive before it answers.
PUSH_TIMEOUT = 600.0


# Packages land in a folder of their own, not among the sources (a repository's root).
DEFAULT_OUT = Path("packages")


class PackFormat(StrEnum):
    ZIP = "zip"
    TAR_GZ = "tar.gz"


def _run(fmt: Format, work: Callable[[], T]) -> T:
    from conveyor.cli.main import run

    return run(fmt, work)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@packages_app.command("pack")
def pack(
    folder: Annotated[Path, typer.Argument(help="The folder whose content becomes the package")],
    package_id: Annotated[str, typer.Option("--id", help="Package id, like OctoPetShop.Web")],
    version: Annotated[str, typer.Option("--version", help="Package version, like 1.0.1")],
    out_dir: Annotated[
        Path, typer.Option("-o", "--out", help="Folder to write it to (made if missing)")
    ] = DEFAULT_OUT,
    fmt: Annotated[PackFormat, typer.Option("--format", help="zip or tar.gz")] = PackFormat.ZIP,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Build <id>.<version>.zip from FOLDER into ./packages (or -o DIR): reproducible (same
    content, same sha256); prints its path."""
    from conveyor.domain.packages import package_file_name, validate_package_id
    from conveyor.domain.versions import parse_version
    from conveyor.services.archives import pack as pack_folder

    def work() -> Path:
        name = package_file_name(validate_package_id(package_id), parse_version(version).text, fmt)
        if not folder.is_dir():
            raise Failure("bad_input", f"{folder} is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / name
        pack_folder(folder, target, fmt.value)
        return target

    target = _run(output, work)
    if output == Format.JSON:
        emit_json({"path": str(target), "size": target.stat().st_size, "sha256": _sha256(target)})
    else:
        say(str(target))


class _Tracked:
    """A file whose reads move a progress bar (by position, so a re-sent body does not count
    twice). httpx sizes the upload from ``fileno`` and rewinds it with ``seek``."""

    def __init__(self, fh: BinaryIO, moved: Callable[[int], None]) -> None:
        self._fh = fh
        self._moved = moved

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._moved(self._fh.tell())
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()


@packages_app.command("push")
def push(
    file: Annotated[Path, typer.Argument(help="A zip or tar.gz, named <id>.<version>.zip")],
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite the version if it exists")
    ] = False,
    package_id: Annotated[
        str | None, typer.Option("--id", help="Package id (default: from the file name)")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Version (default: from the file name)")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Push a package to the server's built-in feed."""

    def work() -> Any:
        if not file.is_file():
            raise Failure("bad_input", f"{file} is not a file")
        fields = {"replace": "true" if replace else "false"}
        if package_id:
            fields["package_id"] = package_id
        if version:
            fields["version"] = version
        size = file.stat().st_size
        with Client(server, api_key, timeout=PUSH_TIMEOUT) as client, file.open("rb") as fh:
            if output == Format.JSON or size < PROGRESS_FROM or not err.is_terminal:
                return client.post("/packages", data=fields, files={"file": (file.name, fh)})
            columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, console=err, transient=True) as progress:
                task = progress.add_task(f"Pushing {file.name}", total=size)
                tracked = _Tracked(fh, lambda done: progress.update(task, completed=done))
                upload = cast(IO[bytes], tracked)
                return client.post("/packages", data=fields, files={"file": (file.name, upload)})

    result = _run(output, work)
    if output == Format.JSON:
        emit_json(result)
        return
    say(
        f"Pushed {result['package_id']} {result['version']} ({result['format']}, "
        f"{decimal(result['size'])}, sha256 {result['sha256']})"
    )


@packages_app.command("list")
def list_packages(
    package_id: Annotated[str | None, typer.Option("--id", help="Only this package id")] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Packages in the built-in feed: by id, each id's versions highest first."""

    def work() -> Any:
        params = {"package_id": package_id} if package_id else {}
        with Client(server, api_key) as client:
            return client.get("/packages", params=params)

    result = _run(output, work)
    if output == Format.JSON:
        emit_json(result)
        return
    if not result:
        say("No packages." if not package_id else f"No versions of {package_id}.")
        return
    table = new_table(
        "package", "version", "format", "size", "pushed", "by", "sha256", copied=["package"]
    )
    for item in result:
        table.add_row(
            item["package_id"],
            item["version"],
            item["format"],
            decimal(item["size"]),
            item["created"][:19].replace("T", " "),
            item["pushed_by"],
            item["sha256"][:12],
        )
    out.print(table)


@packages_app.command("delete")
def delete(
    package_id: Annotated[str, typer.Argument(help="Package id")],
    version: Annotated[str, typer.Argument(help="Version")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Delete a version from the feed (needs BuiltInFeedAdminister)."""

    def work() -> None:
        with Client(server, api_key) as client:
            client.delete(f"/packages/{quote(package_id, safe='')}/{quote(version, safe='')}")

    _run(output, work)
    if output == Format.JSON:
        emit_json({"package_id": package_id, "version": version, "deleted": True})
    else:
        say(f"Deleted {package_id} {version}.")
