"""No 5xx from input (issue 10, item 6) and the same security headers on every response and
one sentence from every local command that cannot start (item 7), driving a real
`conveyor server` on SQLite and PostgreSQL and the real `conveyor` CLI as subprocesses.

Each request below was a 500 (PostgreSQL; several on SQLite too) or was answered for the
wrong document before the fix: an id past the 64-bit row id overflowed the query, ad-hoc id
parsers took ``Projects-7``, ``ServerTasks--7`` or an Arabic-Indic 7 for task 7, a version
over the column's 100 characters overflowed it, and a NUL reached psycopg, which refuses it.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
from typing import Any

import httpx
import pytest

from conveyor.domain.ids import MAX_ROW_ID, parse_public_id
from conveyor.web.pages import SECURITY_HEADERS
from tests import loopback
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Server, free_port, run_conveyor

pytestmark = pytest.mark.e2e
# The real server (one per module and database) of the end-to-end tests.
server, e2e_database = e2e.server, e2e.e2e_database

HUGE = "9" * 20  # past 2**63 - 1, the largest row id
CONFIG = """
environments:
  - name: Input
lifecycles:
  - name: Input only
    phases:
      - name: Input
        environments: [Input]
project_groups:
  - name: Inputs
projects:
  - name: Plain
    group: Inputs
    lifecycle: Input only
    process:
      steps:
        - name: Approve
          type: manual_intervention
          instructions: Say yes
"""


def call(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"X-Api-Key": server.api_key, **kw.pop("headers", {})}
    return loopback.request(method, f"{server.url}/api/v1{path}", headers=headers, timeout=60, **kw)


def refused(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """The response is ``status`` as problem+json, its message holding ``words``, no traceback."""
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in response.text
    body: dict[str, Any] = response.json()
    for word in words:
        assert word in body["message"], body
    return body


@pytest.fixture(scope="module")
def waiting(server: Server) -> dict[str, str]:
    """A real task waiting at a real interruption: the ids the attacks are aimed next to."""
    assert call(server, "POST", "/config/apply", json={"text": CONFIG}).status_code == 200
    made = call(server, "POST", "/projects/Plain/releases", json={"version": "1.0.0"})
    assert made.status_code == 201, made.text
    body = {"project": "Plain", "version": "1.0.0", "environment": "Input"}
    queued = call(server, "POST", "/deployments", json=body)
    assert queued.status_code == 201, queued.text
    task = queued.json()["task"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pending = call(server, "GET", f"/interruptions?task={task}&pending=true").json()
        if pending:
            project = call(server, "GET", "/projects/Plain").json()["id"]
            return {"task": task, "interruption": pending[0]["id"], "project": project}
        time.sleep(0.1)
    raise AssertionError(f"{task} never asked for its approval")


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/tasks/ServerTasks-{HUGE}", None),
        ("GET", f"/tasks/ServerTasks-{HUGE}/log", None),
        ("GET", f"/tasks/ServerTasks-{HUGE}/wait?timeout=0", None),
        ("POST", f"/tasks/ServerTasks-{HUGE}/cancel", None),
        ("GET", f"/interruptions/Interruptions-{HUGE}", None),
        ("POST", f"/interruptions/Interruptions-{HUGE}/take", None),
        ("POST", f"/interruptions/Interruptions-{HUGE}/submit", {"result": "proceed"}),
        ("GET", f"/interruptions?task=ServerTasks-{HUGE}", None),
        ("GET", f"/tasks/{HUGE}", None),
    ],
)
def test_an_id_past_the_largest_row_is_not_found(
    server: Server, waiting: dict[str, str], method: str, path: str, body: Any
) -> None:
    # Before: 500 on both databases (Python int too large for the driver / out of BIGINT range).
    refused(call(server, method, path, json=body), 404, "does not exist")


def test_cursors_past_the_largest_row_are_refused_or_clamped(
    server: Server, waiting: dict[str, str]
) -> None:
    task = waiting["task"]
    # Before: 500 (the number reached the query).
    refused(call(server, "GET", f"/deployments?before={HUGE}"), 422, "before")
    refused(call(server, "GET", f"/tasks/{task}/log?after={HUGE}"), 422, "after")
    refused(call(server, "GET", f"/tasks/{task}/log?after=-1"), 422, "after")
    # An events cursor past every event is a position before all of them: the newest page.
    newest = call(server, "GET", f"/events?before=Events-{HUGE}")
    assert newest.status_code == 200, newest.text
    assert newest.json()["events"] == call(server, "GET", "/events").json()["events"]


def _arabic(digits: str) -> str:
    return "".join(chr(0x0660 + int(d)) for d in digits)


def test_only_the_one_spelling_of_an_id_names_a_document(
    server: Server, waiting: dict[str, str]
) -> None:
    """Each of these named the waiting task or interruption before (200 for the wrong ref)."""
    task, interruption = waiting["task"], waiting["interruption"]
    number = task.split("-")[1]
    assert call(server, "GET", f"/tasks/{task}").status_code == 200
    assert call(server, "GET", f"/tasks/{number}").status_code == 200  # the short form pages use
    assert call(server, "GET", f"/tasks/{task.lower()}").status_code == 200
    lookalikes = [
        f"Projects-{number}",  # another kind's id
        f"ServerTasks--{number}",
        f"ServerTasks-0{number}",
        f"ServerTasks-+{number}",
        f"ServerTasks-{_arabic(number)}",
        f"ServerTasks-{number} ",
        f" ServerTasks-{number}",
        f"ServerTasks-{number}.0",
        f"Interruptions-{number}",
    ]
    for ref in lookalikes:
        path = "/tasks/" + urllib.parse.quote(ref, safe="")
        refused(call(server, "GET", path), 404, "is not a task id", "ServerTasks-12")
    inumber = interruption.split("-")[1]
    for ref in (f"ServerTasks-{inumber}", f"Interruptions--{inumber}", f"Interruptions-0{inumber}"):
        path = "/interruptions/" + urllib.parse.quote(ref, safe="")
        refused(call(server, "GET", path), 404, "is not an interruption id")
    # An events cursor is an event id (or its number), not any id with a number at the end.
    for cursor in (waiting["project"], "Events--5", "Events-05", f"Events-{_arabic('5')}"):
        url = "/events?" + urllib.parse.urlencode({"before": cursor})
        refused(call(server, "GET", url), 422, "before", "is not an Events id")


def test_the_domain_parser_refuses_every_other_spelling() -> None:
    assert parse_public_id("ServerTasks", "ServerTasks-12") == 12
    assert parse_public_id("ServerTasks", "servertasks-12") == 12
    assert parse_public_id("ServerTasks", "12", bare=True) == 12
    assert parse_public_id("ServerTasks", f"ServerTasks-{MAX_ROW_ID}") == MAX_ROW_ID
    for ref in (
        "12",
        "Projects-12",
        "ServerTasks--12",
        "ServerTasks-012",
        "ServerTasks-+12",
        "ServerTasks-١٢",
        "ServerTasks-¹²",
        "ServerTasks-12 ",
        "ServerTasks-12\n",
        "ServerTasks-0",
        "ServerTasks-",
        f"ServerTasks-{MAX_ROW_ID + 1}",
        "ServerTasks-1_2",
    ):
        assert parse_public_id("ServerTasks", ref) is None, ref


# ---------------------------------------------------------------- lengths


def test_a_release_version_longer_than_its_column_is_refused(
    server: Server, waiting: dict[str, str]
) -> None:
    # Before: 500 on PostgreSQL (value too long for VARCHAR(100)); stored on SQLite.
    version = "1.0.0-" + "a" * 150
    body = refused(call(server, "POST", "/projects/Plain/releases", json={"version": version}), 422)
    assert body["problems"][0]["path"] == "version"
    assert "at most 100 characters" in body["message"]
    listed = call(server, "GET", "/projects/Plain/releases").json()
    assert all(len(r["version"]) <= 100 for r in listed), listed


def test_a_package_version_of_4000_characters_is_refused(server: Server, tmp_path: Any) -> None:
    # Before: 500 (PostgreSQL: VARCHAR(100); SQLite: the archive's file name is too long).
    version = "1.0.0-" + "b" * 4000
    files = {"file": ("Shop.zip", b"PK\x05\x06" + b"\x00" * 18, "application/zip")}
    response = call(
        server, "POST", "/packages", files=files, data={"package_id": "Shop", "version": version}
    )
    body = refused(response, 422, "at most 100 characters")
    assert body["problems"][0]["path"] == "version"


def test_a_step_name_longer_than_its_column_is_refused(server: Server) -> None:
    # Before: accepted, and every deployment of the project failed with a 500 on PostgreSQL.
    text = CONFIG.replace("name: Approve", "name: " + "A" * 201).replace("Plain", "Long step")
    response = call(server, "POST", "/config/apply", json={"text": text})
    body = refused(response, 422, "at most 200 characters")
    assert any(p["path"].endswith(".name") for p in body["problems"]), body


# ---------------------------------------------------------------- NUL and surrogates


@pytest.mark.parametrize(
    "path",
    [
        "/events?user=ad%00min",
        "/events?document=Deployments-1%00",
        "/events?project=Pl%00ain",
        "/deployments?project=Plain%00",
        "/interruptions?task=ServerTasks-1%00",
        "/projects/Pl%00ain",
        "/projects/Plain/releases/1.0.0%00",
    ],
)
def test_a_nul_in_the_address_is_refused(
    server: Server, waiting: dict[str, str], path: str
) -> None:
    # Before: 500 on PostgreSQL where the text reached a query; on SQLite the NUL went through.
    refused(call(server, "GET", path), 400, "contains a NUL character")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"version": "2.0.0", "notes": "a\\u0000b"}',
        b'{"version": "2.0.0\\u0000"}',
        b'{"version": "2.0.0", "notes": "lone \\ud800 high"}',
        b'{"version": "2.0.0", "notes": "lone \\udc00 low"}',
        b'{"version": "2.0.0", "notes": "\\\\\\u0000"}',  # an escaped backslash, then \u0000
    ],
)
def test_a_nul_or_lone_surrogate_in_a_json_string_is_refused(
    server: Server, waiting: dict[str, str], raw: bytes
) -> None:
    headers = {"content-type": "application/json"}
    response = call(server, "POST", "/projects/Plain/releases", content=raw, headers=headers)
    refused(response, 400, "JSON body", "NUL character")


def test_text_that_only_looks_like_a_nul_is_accepted(
    server: Server, waiting: dict[str, str]
) -> None:
    """No false alarm: the six characters \\u0000 (escaped backslash) and a surrogate pair."""
    raw = b'{"version": "3.0.0", "notes": "\\\\u0000 and \\ud83d\\ude00"}'
    headers = {"content-type": "application/json"}
    response = call(server, "POST", "/projects/Plain/releases", content=raw, headers=headers)
    assert response.status_code == 201, response.text
    shown = call(server, "GET", "/projects/Plain/releases/3.0.0").json()
    assert shown["notes"] == "\\u0000 and \U0001f600"


def test_a_nul_in_a_form_is_refused(server: Server) -> None:
    # Before: the sign-in's failure counter stored "user:ad\0min": 500 on PostgreSQL.
    with loopback.client(base_url=server.url, timeout=60) as browser:
        page = browser.get("/sign-in")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text
        form = {"username": "ad\x00min", "password": "wrong-password", "csrf": found[1]}
        response = browser.post("/sign-in", data=form)
    refused(response, 400, "the form", "NUL character")


# ---------------------------------------------------------------- security headers


def test_every_api_and_error_response_carries_the_security_headers(
    server: Server, waiting: dict[str, str]
) -> None:
    responses = {
        "api root": loopback.get(f"{server.url}/api/v1/", timeout=30),
        "json": call(server, "GET", "/dashboard"),
        "problem 404": call(server, "GET", "/tasks/ServerTasks-0"),
        "unknown route 404": call(server, "GET", "/no/such/route"),
        "405": call(server, "DELETE", "/dashboard"),
        "401": loopback.get(f"{server.url}/api/v1/dashboard", timeout=30),
        "422": call(server, "POST", "/deployments", json={}),
        "400": call(server, "GET", "/events?user=%00"),
        "413": call(
            server,
            "POST",
            "/config/apply",
            content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
            headers={"content-type": "application/json"},
        ),
        "page": loopback.get(f"{server.url}/sign-in", timeout=30),
    }
    assert responses["413"].status_code in (413, 422), responses["413"].text
    for what, response in responses.items():
        assert response.status_code < 500, (what, response.text)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (what, name, dict(response.headers))


# ---------------------------------------------------------------- local commands


def _one_sentence(result: Any, code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]


def test_server_and_demo_refuse_a_port_out_of_range(tmp_path: Any) -> None:
    # Before: `demo --port 99999` ended in OverflowError's traceback, exit 1.
    env = {"CONVEYOR_DATA_DIR": str(tmp_path / "data")}
    for args in (
        ("server", "--port", "99999"),
        ("server", "--port", "0"),
        ("demo", "--port", "99999"),
    ):
        _one_sentence(run_conveyor(args, env, cwd=tmp_path), 2, "--port", "65535")


def test_server_refuses_a_port_in_use(tmp_path: Any) -> None:
    env = {"CONVEYOR_DATA_DIR": str(tmp_path / "data")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args in (("server", "--port", port), ("demo", "--port", port)):
            _one_sentence(run_conveyor(args, env, cwd=tmp_path), 2, port, "--port")


def test_admin_init_refuses_a_data_folder_it_cannot_write(tmp_path: Any) -> None:
    # Before: NotADirectoryError / FileExistsError tracebacks, exit 1.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for folder in (blocker, blocker / "data"):
        result = run_conveyor(("admin", "init"), {"CONVEYOR_DATA_DIR": str(folder)}, cwd=tmp_path)
        _one_sentence(result, 2, str(folder), "CONVEYOR_DATA_DIR")
    demo = run_conveyor(
        ("demo", "--port", str(free_port()), "--data-dir", str(blocker / "demo")), {}, cwd=tmp_path
    )
    _one_sentence(demo, 2, "--data-dir")


def test_local_commands_say_when_the_database_is_unreachable(tmp_path: Any) -> None:
    # Before: `admin init` printed psycopg's OperationalError traceback, exit 1; `server` printed
    # the exception over three lines.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        url = f"postgresql+psycopg://conveyor:s3cret-pw@127.0.0.1:{port}/conveyor"
        env = {"CONVEYOR_DATA_DIR": str(tmp_path / "data"), "CONVEYOR_DATABASE_URL": url}
        for args in (("admin", "init"), ("server", "--port", str(free_port()))):
            result = run_conveyor(args, env, cwd=tmp_path)
            _one_sentence(result, 6, "cannot reach the database", f"127.0.0.1:{port}")
            assert "s3cret-pw" not in result.stderr


def test_local_commands_refuse_a_database_url_they_cannot_use(tmp_path: Any) -> None:
    for url in ("nonsense", "mysql://user@host/db"):
        env = {"CONVEYOR_DATA_DIR": str(tmp_path / "data"), "CONVEYOR_DATABASE_URL": url}
        result = run_conveyor(("admin", "init", "--output", "json"), env, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert '"code": "bad_input"' in result.stderr
        assert "CONVEYOR_DATABASE_URL" in result.stderr
        assert "Traceback" not in result.stderr
