"""`conveyor apply`, `export`, errors and exit codes, and the local admin commands, end to end."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLE, Server, describe, free_port, run_conveyor

pytestmark = pytest.mark.e2e

EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")


def write(server: Server, name: str, text: str) -> Path:
    path = server.tmp / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def applied(server: Server) -> Server:
    """The example applied (idempotent: a test that applied it already leaves nothing to do)."""
    server.ok("apply", "-f", str(EXAMPLE))
    return server


def test_apply_prints_each_change_then_no_changes(server: Server) -> None:
    first = server.cli("apply", "-f", str(EXAMPLE))
    assert first.returncode == 0, describe(first)
    lines = first.stdout.splitlines()
    # One line (at least) per document the example creates, then the count.
    for name in ("Development", "Components", "Octo Pet Shop", "Deploy All", "dev", "Developer"):
        assert any(name in line for line in lines), (name, first.stdout)
    assert re.search(r"Applied \d+ change", first.stdout), first.stdout
    assert first.stderr == ""

    second = server.cli("apply", "-f", str(EXAMPLE))
    assert second.returncode == 0, describe(second)
    assert second.stdout == "No changes.\n"

    as_json = server.cli("apply", "-f", str(EXAMPLE), "--output", "json")
    assert as_json.returncode == 0, describe(as_json)
    assert json.loads(as_json.stdout) == {"dry_run": False, "changed": False, "changes": []}


def test_dry_run_shows_the_diff_and_changes_nothing(applied: Server) -> None:
    modified = EXAMPLE_TEXT.replace(
        "description: The components of the application.",
        "description: The parts the shop is made of.",
    ).replace('watch_paths: ["src/Web/**"]', 'watch_paths: ["src/Web/**", "shared/**"]')
    assert modified != EXAMPLE_TEXT
    path = write(applied, "modified.yaml", modified)

    dry = applied.cli("apply", "-f", str(path), "--dry-run")
    assert dry.returncode == 0, describe(dry)
    assert "Octo Pet Shop" in dry.stdout and "Website" in dry.stdout, dry.stdout
    assert "The parts the shop is made of." in dry.stdout, dry.stdout
    assert "shared/**" in dry.stdout, dry.stdout
    assert "Dry run" in dry.stdout and "nothing was changed" in dry.stdout, dry.stdout

    # Nothing changed: the same dry run shows the same diff, the original applies as no change,
    # and the export still has the old values.
    exported = applied.export()
    assert "The parts the shop is made of." not in exported
    assert "shared/**" not in exported
    assert "The components of the application." in exported


def test_export_then_apply_is_no_change(applied: Server) -> None:
    out = applied.tmp / "exported.yaml"
    result = applied.ok("export", "-o", str(out))
    assert out.exists() and out.stat().st_size > 0, describe(result)
    text = out.read_text(encoding="utf-8")
    for name in ("Deploy All", "QA approval", "Octo Pet Shop Orchestration", "build"):
        assert name in text
    again = applied.ok("apply", "-f", str(out))
    assert again.stdout == "No changes.\n"
    # Without -o the same YAML goes to standard output.
    assert applied.ok("export").stdout == text


INVALID = """\
environments:
  - name: Sandbox
  - name: Sandbox
projects:
  - name: Gadget
    group: Nowhere
    lifecycle: Missing
    process:
      steps:
        - name: Run it
          type: teleport
"""


def test_invalid_file_lists_every_problem_with_its_line_and_changes_nothing(
    applied: Server,
) -> None:
    path = write(applied, "invalid.yaml", INVALID)
    result = applied.cli("apply", "-f", str(path))
    assert result.returncode == 2, describe(result)
    assert result.stdout == ""
    err = result.stderr
    # Every problem, each on its own line with its line number.
    for word, line in (("Sandbox", 3), ("Nowhere", 6), ("Missing", 7), ("teleport", 11)):
        hits = [ln for ln in err.splitlines() if word in ln]
        assert hits, (word, err)
        assert any(f"line {line}" in ln for ln in hits), (word, line, err)
    # Nothing was written, not even the valid parts.
    assert "Sandbox" not in applied.export()


def test_json_errors_go_to_stderr_in_one_shape(applied: Server) -> None:
    path = write(applied, "invalid-json.yaml", INVALID)
    result = applied.cli("apply", "-f", str(path), "--output", "json")
    assert result.returncode == 2, describe(result)
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "validation_failed"
    assert isinstance(error["message"], str) and error["message"]
    problems = error["problems"]
    assert len(problems) >= 4, problems
    assert all({"path", "message", "line"} <= set(p) for p in problems), problems

    denied = applied.cli("apply", "-f", str(EXAMPLE), "--output", "json", api_key="API-NOPE")
    assert denied.returncode == 3, describe(denied)
    error = json.loads(denied.stderr)["error"]
    assert error["code"] == "unauthenticated" and error["message"]


def test_missing_env_reference_exits_2_naming_it(applied: Server) -> None:
    text = EXAMPLE_TEXT.replace(
        '    watch_paths: ["database/**"]\n',
        '    watch_paths: ["database/**"]\n'
        "    variables:\n"
        "      - name: ConnectionString\n"
        "        value: ${env:OCTOPETSHOP_E2E_DB_PASSWORD}\n"
        "        sensitive: true\n",
    )
    path = write(applied, "secret.yaml", text)
    result = applied.cli("apply", "-f", str(path))
    assert result.returncode == 2, describe(result)
    assert "OCTOPETSHOP_E2E_DB_PASSWORD" in result.stderr

    # Set, it applies; the value is never printed nor exported.
    secret = "s3cr3t-value-e2e"
    env = {"OCTOPETSHOP_E2E_DB_PASSWORD": secret}
    dry = applied.cli("apply", "-f", str(path), "--dry-run", env=env)
    assert dry.returncode == 0, describe(dry)
    assert "ConnectionString" in dry.stdout and secret not in dry.stdout + dry.stderr
    done = applied.cli("apply", "-f", str(path), env=env)
    assert done.returncode == 0, describe(done)
    assert secret not in done.stdout + done.stderr
    assert secret not in applied.export()
    assert applied.cli("apply", "-f", str(path), env=env).stdout == "No changes.\n"


def test_wrong_or_missing_api_key_exits_3(applied: Server) -> None:
    wrong = applied.cli("apply", "-f", str(EXAMPLE), api_key="API-0000000000000000000000000000")
    assert wrong.returncode == 3, describe(wrong)
    assert "API key" in wrong.stderr
    assert applied.cli("export", api_key="API-WRONG").returncode == 3

    missing = run_conveyor(("export",), {"CONVEYOR_SERVER": applied.url})
    assert missing.returncode == 3, describe(missing)
    assert "CONVEYOR_API_KEY" in missing.stderr


def test_unreachable_server_exits_6(applied: Server) -> None:
    for args in (
        ("apply", "-f", str(EXAMPLE)),
        ("permissions", "explain", "--user", "dev", "--permission", "ProcessEdit"),
    ):
        result = applied.cli(*args, "--server", "http://127.0.0.1:1")
        assert result.returncode == 6, describe(result)
        assert "http://127.0.0.1:1" in result.stderr


def test_unreadable_file_exits_2(applied: Server) -> None:
    result = applied.cli("apply", "-f", str(applied.tmp / "no-such-file.yaml"))
    assert result.returncode == 2, describe(result)
    assert "no-such-file.yaml" in result.stderr


def test_user_add_and_api_key_create_give_a_working_key(applied: Server) -> None:
    added = applied.cli(
        "admin", "user", "add", "carol", "--email", "carol@example.com", "--display-name", "Carol"
    )
    assert added.returncode == 0, describe(added)
    # (The same local commands run in this process where only the exit code is at stake.)
    again = applied.cli_in_process("admin", "user", "add", "carol")
    assert again.returncode == 5, describe(again)

    created = applied.ok("admin", "api-key", "create", "--user", "carol", "--output", "json")
    data = json.loads(created.stdout)
    assert set(data) == {"user", "api_key"}
    assert data["user"] == "carol" and data["api_key"]

    # The key works: carol may ask about herself, and is refused (3) what she may not do.
    mine = applied.cli(
        "permissions", "explain", "--user", "carol", "--permission", "ProjectView",
        "--output", "json", api_key=data["api_key"],
    )  # fmt: skip
    assert mine.returncode == 0, describe(mine)
    assert json.loads(mine.stdout)["allowed"] is False
    others = applied.cli(
        "permissions", "explain", "--user", "dev", "--permission", "ProjectView",
        api_key=data["api_key"],
    )  # fmt: skip
    assert others.returncode == 3, describe(others)
    assert "UserView" in others.stderr

    unknown = applied.cli_in_process("admin", "api-key", "create", "--user", "nobody")
    assert unknown.returncode == 4, describe(unknown)


def test_service_account_with_password_is_bad_input(applied: Server) -> None:
    result = applied.cli(
        "admin",
        "user",
        "add",
        "robot",
        "--service-account",
        "--password-stdin",
        input="secret1234\n",
    )
    assert result.returncode == 2, describe(result)
    ok = applied.cli("admin", "user", "add", "erin", "--password-stdin", input="a-long-password\n")
    assert ok.returncode == 0, describe(ok)


def test_help_is_clean() -> None:
    result = run_conveyor(("--help",), {})
    assert result.returncode == 0, describe(result)
    assert result.stderr == ""
    for command in ("apply", "export", "permissions", "admin", "server", "demo"):
        assert command in result.stdout


def test_server_refuses_a_missing_database_and_a_busy_port(tmp_path: Path) -> None:
    env = {"CONVEYOR_DATA_DIR": str(tmp_path / "data")}
    missing = run_conveyor(("server", "--port", str(free_port())), env)
    assert missing.returncode == 2, describe(missing)
    assert "conveyor admin init" in missing.stderr
    assert not (tmp_path / "data" / "conveyor.db").exists()

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_conveyor(("server", "--port", str(port)), env, timeout=30)
    assert result.returncode == 2, describe(result)
    assert f"port {port}" in result.stderr and "--port" in result.stderr
