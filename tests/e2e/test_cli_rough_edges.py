"""The command-line defects a newcomer hit (issue 14, item 6), each against a real server:
watch paths relative to --repo, ids never cut in tables, server addresses as people write
them, malformed ids as bad input, a repeated `admin init`, a quiet `audit export -o`, the
task table's columns, `--skip` of a step that would not run, and users made by `apply`
signing in once an administrator set their password."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, describe
from tests.gitrepos import GitRepo
from tests.security.test_sign_in import signed_in_client

pytestmark = pytest.mark.e2e

CONFIG = """
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Anywhere
    phases:
      - {name: All, environments: [Dev, Prod]}
project_groups:
  - name: Edges
users:
  - username: ann
  - username: ben
teams:
  - name: Approvers
    members: [ann]
    roles:
      - role: Approver
projects:
  - name: Inventory Reconciliation Service
    group: Edges
    lifecycle: Anywhere
    watch_paths: ["database/**"]
    process:
      steps:
        - name: Approve
          type: manual_intervention
          instructions: Look first.
          responsible_teams: [Approvers]
          environments: [Prod]
        - name: Say
          type: script
          script: echo said
  - name: Storefront
    group: Edges
    lifecycle: Anywhere
    watch_paths: ["src/Web/**"]
"""
PROJECT = "Inventory Reconciliation Service"


@pytest.fixture(scope="module")
def edges(server: Server) -> Server:
    config = server.tmp / "edges.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    server.ok("apply", "-f", str(config))
    return server


def narrow(server: Server, *args: str) -> str:
    """What a command prints to a pipe 60 columns wide."""
    result = server.cli(*args, env={"COLUMNS": "60"})
    assert result.returncode == 0, describe(result)
    return result.stdout


def test_to_a_pipe_without_a_width_each_row_is_one_line(edges: Server) -> None:
    """`conveyor audit list | grep …` finds whole rows: with no terminal and no COLUMNS, a
    table is as wide as its rows (Rich's 80 columns wrapped each message over several lines)."""
    result = edges.cli("audit", "list", "--project", "Storefront", env={"COLUMNS": ""})
    assert result.returncode == 0, describe(result)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["id", "occurred", "category"], result.stdout
    assert all(line.startswith("Events-") for line in lines[1:]), result.stdout
    events = edges.get("/events?project=Storefront").json()["events"]
    assert len(lines) == 1 + len(events)
    for line, event in zip(lines[1:], events, strict=True):
        assert line.startswith(event["id"]) and event["message"] in line, line
    # A width given is still a width: the 60 columns of the test above wrap again.
    assert len(narrow(edges, "audit", "list", "--project", "Storefront").splitlines()) > len(lines)


def test_watch_paths_are_relative_to_the_repo_folder_and_the_notes_agree(
    edges: Server, tmp_path: Path
) -> None:
    git = GitRepo(tmp_path / "repo")
    first = git.commit("first", {"README.md": "top\n", "app/database/0001.sql": "CREATE T;\n"})
    second = git.commit("more", {"app/database/0002.sql": "ALTER T;\n", "README.md": "top!\n"})
    # At the top of the repository the paths are app/database/…: nothing matches database/**.
    top = edges.cli("changes", "--repo", str(git.root), "--since", "last-release")
    assert top.returncode == 0, describe(top)
    assert "No project changed." in top.stdout, describe(top)
    # The note no longer says everything counts as changed while nothing did: it says why.
    assert "counts as changed" not in top.stderr, describe(top)
    assert "no file in" in top.stderr and "matches its watch paths (database/**)" in top.stderr
    assert "relative to the folder --repo names" in top.stderr
    # From the application's folder, the projects are named, with paths relative to it.
    app = str(git.root / "app")
    found = json.loads(
        edges.ok("changes", "--repo", app, "--since", "last-release", "--output", "json").stdout
    )
    assert found["projects"] == [PROJECT]
    assert found["files"] == {PROJECT: ["database/0001.sql", "database/0002.sql"]}
    between = edges.ok("changes", "--repo", app, "--since", first, "--until", second).stdout
    assert f"{PROJECT}: 1 file" in between and "database/0002.sql" in between, between
    assert "README.md" not in between


def test_tables_printed_to_a_pipe_never_cut_ids_or_names(edges: Server) -> None:
    edges.ok("release", "create", "--project", PROJECT, "--version", "1.0.0")
    edges.ok("release", "deploy", "--project", PROJECT, "--version", "1.0.0", "--to", "Dev")
    listed = narrow(edges, "deployment", "list", "--project", PROJECT)
    assert "…" not in listed, listed
    assert re.search(r"\bDeployments-\d+\b", listed) and re.search(r"ServerTasks-\d+\b", listed)
    assert PROJECT in listed, listed
    events = narrow(edges, "audit", "list", "--project", PROJECT)
    assert "…" not in events and "DeploymentQueued" in events, events


def test_server_addresses_as_people_write_them(edges: Server) -> None:
    bare = edges.url.removeprefix("http://")
    for written in (bare, f"{edges.url}/api/v1", f"{edges.url}/api/v1/", f"{bare}/"):
        result = edges.cli("release", "list", "--project", PROJECT, "--server", written)
        assert result.returncode == 0, describe(result)
        assert "1.0.0" in result.stdout
    wrong = edges.cli("dashboard", "--server", "ftp://example.com")
    assert wrong.returncode == 2, describe(wrong)
    assert "http://127.0.0.1:8080" in wrong.stderr and "Traceback" not in wrong.stderr
    from_env = edges.cli("dashboard", env={"CONVEYOR_SERVER": f"{bare}/api/v1"})
    assert from_env.returncode == 0, describe(from_env)


def test_a_malformed_id_is_bad_input_and_an_unknown_one_not_found(edges: Server) -> None:
    for args in (
        ("task", "log", "nonsense"),
        ("task", "show", "Deployments-1"),
        ("interruption", "take", "nonsense"),
    ):
        result = edges.cli(*args)
        assert result.returncode == 2, describe(result)
        assert "is not a" in result.stderr and "-12" in result.stderr, describe(result)
    unknown = edges.cli("task", "log", "ServerTasks-99999")
    assert unknown.returncode == 4, describe(unknown)


def test_a_repeated_admin_init_says_up_to_date_in_text_and_json(edges: Server) -> None:
    text = edges.cli("admin", "init")
    assert text.returncode == 0 and "up to date" in text.stdout, describe(text)
    again = edges.cli("admin", "init", "--output", "json")
    assert again.returncode == 0, describe(again)
    assert json.loads(again.stdout) == {
        "username": None,
        "password": None,
        "api_key": None,
        "upgraded": False,
    }


def test_audit_export_to_a_file_says_one_line_and_nothing_on_stderr(
    edges: Server, tmp_path: Path
) -> None:
    target = tmp_path / "events.jsonl"
    done = edges.cli("audit", "export", "-o", str(target))
    assert done.returncode == 0, describe(done)
    assert done.stderr == "", repr(done.stderr)
    assert done.stdout.startswith("Exported ") and target.stat().st_size > 0


def test_skip_task_columns_and_the_plan_wording(edges: Server) -> None:
    # The approval runs only in Prod: naming it in Dev skips nothing, so it is not refused.
    dev = edges.cli(
        "release", "deploy", "--project", PROJECT, "--version", "1.0.0", "--to", "Dev",
        "--skip", "Approve", "--wait",
    )  # fmt: skip
    assert dev.returncode == 0, describe(dev)
    prod = edges.cli(
        "release", "deploy", "--project", PROJECT, "--version", "1.0.0", "--to", "Prod",
        "--skip", "Approve",
    )  # fmt: skip
    assert prod.returncode == 2 and "is required" in prod.stderr, describe(prod)
    # A plan is a preview: it does not speak of a deployment created already.
    plan = edges.ok(
        "release", "plan", "--project", PROJECT, "--version", "1.0.0", "--to", "Dev",
        "--skip", "Say",
    ).stdout  # fmt: skip
    assert "skipped as the deployer asked" in plan and "was created" not in plan, plan
    # Waiting at the approval: its id is in the interruption column, not "child task".
    queued = edges.ok(
        "release", "deploy", "--project", PROJECT, "--version", "1.0.0", "--to", "Prod",
        "--output", "json",
    )  # fmt: skip
    task = json.loads(queued.stdout)["task"]
    edges.cli("task", "wait", task, "--timeout", "0")
    for _ in range(100):
        shown = json.loads(edges.ok("task", "show", task, "--output", "json").stdout)
        if shown["steps"][0]["interruption"]:
            break
    interruption = shown["steps"][0]["interruption"]
    assert interruption, shown
    lines = edges.ok("task", "show", task).stdout.splitlines()
    header = next(line for line in lines if line.startswith("#"))
    assert header.split()[-2:] == ["task", "interruption"], header
    row = next(line for line in lines if "Approve" in line)
    assert row.rstrip().endswith(interruption), row
    edges.ok("task", "cancel", task)


def test_users_made_by_apply_sign_in_once_their_password_is_set(edges: Server) -> None:
    # ann and ben came from the file, without passwords: an operator (local command) and an
    # administrator (API) set them, and each then signs in to the web UI.
    local = edges.cli(
        "admin", "user", "set-password", "ann", "--password-stdin", input="ann's first one\n"
    )
    assert local.returncode == 0, describe(local)
    signed_in_client(edges, "ann", "ann's first one")
    put = httpx.put(
        f"{edges.url}/api/v1/users/ben/password",
        json={"password": "ben's first one"},
        headers={"X-Api-Key": edges.api_key},
        timeout=30,
    )
    assert put.status_code == 204, put.text
    signed_in_client(edges, "ben", "ben's first one")
    events = edges.get("/events?category=PasswordChanged").json()["events"]
    assert {(e["actor"], e["message"].split('"')[1]) for e in events} >= {
        ("system", "ann"),
        ("admin", "ben"),
    }
