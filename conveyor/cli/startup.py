"""What goes wrong before a local command can start, said in one sentence with CLI.md's code.

Local commands (``admin``, ``server``, ``demo``) open the data folder and the database
themselves. A folder they cannot write, a database URL they cannot use and a database they
cannot reach are the operator's to fix, so they become a ``Failure`` (exit 2 for bad input,
6 for an unreachable database) instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conveyor.cli.output import Failure

MIN_PORT, MAX_PORT = 1, 65535
# How long a stopping server waits for open requests (agents' long polls) before ending them.
GRACEFUL_SHUTDOWN_SECONDS = 5


def check_port(port: int) -> None:
    if not MIN_PORT <= port <= MAX_PORT:
        raise Failure(
            "bad_input", f"--port must be a number from {MIN_PORT} to {MAX_PORT}, not {port}"
        )


def load_settings() -> Any:
    """``Settings()`` from the environment, or a ``Failure`` naming the variable that is wrong."""
    from pydantic import ValidationError

    from conveyor.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "CONVEYOR_" + "_".join(str(p) for p in first.get("loc", ())).upper()
        message = f"{name} is not valid: {first.get('msg', 'wrong value')}"
        raise Failure("bad_input", message) from exc


@contextmanager
def opening_storage(
    data_dir: Path, database_url: str | None, folder_option: str = "CONVEYOR_DATA_DIR"
) -> Iterator[None]:
    """Turn the errors of opening the data folder or the database into one sentence;
    ``folder_option`` is what the person sets to choose another folder."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

    try:
        yield
    except OperationalError as exc:
        raise _database_failure(exc, data_dir, database_url, folder_option) from exc
    except (ArgumentError, NoSuchModuleError, ModuleNotFoundError) as exc:
        raise Failure(
            "bad_input",
            "CONVEYOR_DATABASE_URL is not a database Conveyor can use: give "
            "postgresql+psycopg://USER:PASSWORD@HOST:5432/NAME, or leave it unset for SQLite "
            "in the data folder",
        ) from exc
    except SQLAlchemyError as exc:  # any other refusal to connect or to migrate
        raise _database_failure(exc, data_dir, database_url, folder_option) from exc
    except OSError as exc:
        raise Failure(
            "bad_input",
            f"cannot use the data folder {data_dir} ({_reason(exc)}): set {folder_option} to "
            "a folder this user may create and write",
        ) from exc


def _database_failure(
    exc: Exception, data_dir: Path, database_url: str | None, folder_option: str
) -> Failure:
    reason = _first_line(getattr(exc, "orig", None) or exc)
    if not database_url:  # SQLite: the file, so the folder, is the problem
        return Failure(
            "bad_input",
            f"cannot open the database in the data folder {data_dir} ({reason}): set "
            f"{folder_option} to a folder this user may create and write",
        )
    return Failure(
        "unreachable",
        f"cannot reach the database of CONVEYOR_DATABASE_URL at {_where(database_url)} "
        f"({reason}): check that the database server runs and the URL is right",
    )


def _where(url: str) -> str:
    """The URL without its password, for a message."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we can find: say nothing of it
        return "the configured address"


def _reason(exc: OSError) -> str:
    return exc.strerror or _first_line(exc)


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].removeprefix("connection failed: ").strip() if lines else type(exc).__name__
