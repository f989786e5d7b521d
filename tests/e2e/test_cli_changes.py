"""`conveyor changes` and `release create --commit|--changed-since` against a real server, on
real git repositories made by the tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, describe
from tests.gitrepos import GIT_ENV, GitRepo

pytestmark = pytest.mark.e2e

CONFIG = """
environments:
  - name: Development
  - name: Test
lifecycles:
  - name: Main
    phases:
      - {name: Development, environments: [Development]}
      - {name: Test, environments: [Test]}
project_groups:
  - name: Shop
projects:
  - name: Database
    group: Shop
    lifecycle: Main
    watch_paths: ["database/**"]
    process: {steps: [{name: Migrate, type: script, script: "echo migrated"}]}
  - name: Cart
    group: Shop
    lifecycle: Main
    watch_paths: ["src/Cart/**", "src/Shared/**"]
  - name: Products
    group: Shop
    lifecycle: Main
    watch_paths: ["src/Products/**", "src/Shared/**"]
  - name: Website
    group: Shop
    lifecycle: Main
    watch_paths: ["src/Web/**", "!src/Web/docs/**"]
  - name: Tools
    group: Shop
    lifecycle: Main
"""
WATCHED = ["Database", "Cart", "Products", "Website"]
BASE = {
    "database/0001.sql": "CREATE TABLE products (id INTEGER);\n",
    "src/Cart/cart.py": "print('cart')\n",
    "src/Products/service.py": "print('products')\n",
    "src/Shared/money.py": "CENTS = 100\n",
    "src/Web/index.html": "<h1>Pets</h1>\n",
    "src/Web/docs/README.md": "How it is built.\n",
}


@pytest.fixture(scope="module")
def shop(server: Server) -> Server:
    config = server.tmp / "shop.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    server.ok("apply", "-f", str(config))
    return server


def as_json(server: Server, *args: str) -> Any:
    """A command's JSON, run by the CLI's code in this process (no interpreter start-up); every
    command that reads a repository is given ``--repo``."""
    result = server.cli_in_process(*args, "--output", "json")
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def changes(server: Server, repo: GitRepo, *args: str) -> Any:
    return as_json(server, "changes", "--repo", str(repo.root), *args)


def bad_input(server: Server, *args: str, env: dict[str, str] | None = None) -> str:
    result = server.cli(*args, env=env)
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr and result.stderr.strip(), describe(result)
    return result.stderr


def commit_at(git: GitRepo, when: str, message: str, files: dict[str, str]) -> str:
    """A commit made at ``when`` (ISO 8601 with an offset other than UTC, say)."""
    git.write(files)
    git.git("add", "-A")
    dates = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    done = subprocess.run(
        ["git", "-C", str(git.root), "commit", "-q", "-m", message],
        env={**os.environ, **GIT_ENV, **dates},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return git.git("rev-parse", "HEAD")


# A commit time as the server keeps it: UTC, to the second.
UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_changes_between_two_revisions(shop: Server, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "repo")
    base = git.commit("first", BASE)
    moved = git.move("src/Products/service.py", "src/Web/products.py", "move across components")
    gone = git.commit("drop it", {"database/0001.sql": None})
    assert changes(shop, git, "--since", base, "--until", gone) == {
        "since": base,
        "until": gone,
        "projects": ["Database", "Products", "Website"],
        "files": {
            "Database": ["database/0001.sql"],
            "Products": ["src/Products/service.py"],
            "Website": ["src/Web/products.py"],
        },
    }
    text = shop.ok("changes", "--repo", str(git.root), "--since", base, "--until", moved).stdout
    assert f"From {base[:10]} to {moved[:10]}" in text, text
    assert "Products: 1 file" in text and "src/Web/products.py" in text, text
    assert "Unchanged: Database, Cart" in text, text
    assert "Without watch paths (never changed by commits): Tools" in text, text
    # Equal revisions: nothing changed.
    same = changes(shop, git, "--since", gone, "--until", "HEAD")
    assert same == {"since": gone, "until": gone, "projects": [], "files": {}}
    said = shop.ok("changes", "--repo", str(git.root), "--since", "HEAD").stdout
    assert "No project changed." in said, said


def test_shared_code_and_exclusions(shop: Server, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "repo")
    base = git.commit("first", BASE)
    shared = git.commit("money", {"src/Shared/money.py": "CENTS = 1000\n"})
    found = changes(shop, git, "--since", base, "--until", shared)
    assert found["projects"] == ["Cart", "Products"], found
    assert found["files"]["Cart"] == found["files"]["Products"] == ["src/Shared/money.py"]
    docs = git.commit("docs", {"src/Web/docs/README.md": "More.\n", "NOTES.md": "x\n"})
    assert changes(shop, git, "--since", shared, "--until", docs)["projects"] == []


def test_one_commit_a_merge_and_the_root(shop: Server, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "repo")
    root = git.commit("first", BASE)
    git.branch("side")
    git.commit("products", {"src/Products/service.py": "print('more')\n"})
    git.checkout("main")
    main = git.commit("schema", {"database/0002.sql": "SELECT 2;\n"})
    merge = git.merge("side", "merge side")
    # Without --since, the commit alone: a merge against its first parent (what it brought).
    found = changes(shop, git, "--until", merge)
    assert (found["since"], found["projects"]) == (main, ["Products"]), found
    assert changes(shop, git, "--until", main)["projects"] == ["Database"]
    first = changes(shop, git, "--until", root)
    assert first["since"] is None and first["projects"] == WATCHED, first
    assert first["files"]["Website"] == ["src/Web/index.html"]  # docs are excluded


def test_bad_revisions_and_folders_exit_2(shop: Server, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "repo")
    git.commit("first", BASE)
    said = bad_input(shop, "changes", "--repo", str(git.root), "--since", "release-41")
    assert 'unknown revision "release-41"' in said, said
    said = bad_input(
        shop, "changes", "--repo", str(git.root), "--until", "nope", "--output", "json"
    )
    error = json.loads(said)["error"]
    assert error["code"] == "validation_failed" and "nope" in error["message"], error
    plain = tmp_path / "plain"
    plain.mkdir()
    ceiling = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    said = bad_input(shop, "changes", "--repo", str(plain), "--since", "HEAD", env=ceiling)
    assert f"{plain} is not inside a git repository" in said, said
    said = bad_input(shop, "changes", "--repo", str(git.root), "--since", "last-deployed:")
    assert "environment" in said, said


def release_json(server: Server, project: str, version: str) -> dict[str, Any]:
    data: dict[str, Any] = server.get(f"/projects/{project}/releases/{version}").json()
    return data


def test_last_release_still_reports_a_change_whose_release_failed(
    shop: Server, tmp_path: Path
) -> None:
    git = GitRepo(tmp_path / "repo")
    repo = ("--repo", str(git.root))
    base = git.commit("first", BASE)
    # The first run: no project has a release, so each one's files all count.
    first = shop.cli("changes", *repo, "--since", "last-release")
    assert "Database: no release yet" in first.stderr, describe(first)
    made = as_json(
        shop, "release", "create", *repo, "--changed-since", "last-release", "--version", "1.0.0"
    )
    assert [r["project"] for r in made] == WATCHED
    assert set(made[0]) == {"id", "project", "version", "packages", "children"}
    assert release_json(shop, "Cart", "1.0.0")["build"]["commit"] == base
    assert changes(shop, git, "--since", "last-release")["projects"] == []

    schema = git.commit("Add reviews", {"database/0002.sql": "CREATE TABLE reviews (id INT);\n"})
    # The build of that commit fails at release creation: nothing is created ...
    bad_input(
        shop, "release", "create", *repo, "--changed-since", "last-release", "--version", "1.0.01"
    )
    assert [r["version"] for r in as_json(shop, "release", "list", "--project", "Database")] == [
        "1.0.0"
    ]
    site = git.commit("Restyle", {"src/Web/index.html": "<h1>Pets!</h1>\n"})
    # ... and per-commit detection would now lose it, but last-release does not.
    assert changes(shop, git, "--since", schema, "--until", site)["projects"] == ["Website"]
    assert changes(shop, git, "--since", "last-release") == {
        "since": "last-release",
        "until": site,
        "projects": ["Database", "Website"],
        "files": {"Database": ["database/0002.sql"], "Website": ["src/Web/index.html"]},
    }
    made = as_json(
        shop,
        "release",
        "create",
        *repo,
        "--changed-since",
        "last-release",
        "--version",
        "1.0.1",
        "--branch",
        "main",
        "--build-url",
        "https://ci.example/runs/3",
    )
    assert [(r["project"], r["version"]) for r in made] == [
        ("Database", "1.0.1"),
        ("Website", "1.0.1"),
    ]
    database = release_json(shop, "Database", "1.0.1")["build"]
    assert (database["commit"], database["branch"]) == (site, "main")
    assert database["build_url"] == "https://ci.example/runs/3"
    # Each release lists the commits since its previous one that touched its watch paths.
    assert [c["sha"] for c in database["commits"]] == [schema]
    assert database["commits"][0]["message"] == "Add reviews"
    assert database["commits"][0]["author"] == "Dana Developer <dev@octopetshop.example>"
    # With its commit time (the committer date, in UTC): lead time for changes starts there.
    assert UTC_TIME.fullmatch(database["commits"][0]["timestamp"]), database
    assert [c["sha"] for c in release_json(shop, "Website", "1.0.1")["build"]["commits"]] == [site]
    shown = shop.ok("release", "show", "--project", "Database", "--version", "1.0.1").stdout
    assert f"built from {site} on main" in shown and "Add reviews" in shown, shown

    # Nothing left: both commands say so and succeed.
    assert changes(shop, git, "--since", "last-release")["projects"] == []
    args = ("release", "create", *repo, "--changed-since", "last-release", "--version", "1.0.2")
    assert as_json(shop, *args) == []
    assert "no release created" in shop.ok(*args).stdout

    # The plan says what deploying brings, against what is current in the environment.
    plan_args = ("release", "plan", "--project", "Database", "--version", "1.0.1")
    plan = as_json(shop, *plan_args, "--to", "Development")
    assert set(plan) == {"environment", "steps", "changes"}, plan
    (entry,) = plan["changes"]
    assert (entry["project"], entry["release"], entry["current"]) == ("Database", "1.0.1", None)
    assert [c["message"] for c in entry["commits"]] == ["Add reviews", "first"]
    assert [c["release"] for c in entry["commits"]] == ["1.0.1", "1.0.0"]
    deploy = ("release", "deploy", "--project", "Database", "--version", "1.0.0")
    shop.ok(*deploy, "--to", "Development", "--wait")
    # Releases made by the CLI from the repository carry commit times: the deployment has a
    # lead time in insights.
    insights = shop.get("/insights?project=Database").json()["overall"]
    assert insights["lead_time_count"] == 1 and insights["lead_time_seconds"] > 0, insights
    (entry,) = as_json(shop, *plan_args, "--to", "Development")["changes"]
    assert entry["current"] == "1.0.0"
    assert [c["message"] for c in entry["commits"]] == ["Add reviews"]
    text = shop.ok(*plan_args, "--to", "Development").stdout
    assert "What this deployment brings (against what is current in Development):" in text, text
    assert "Database 1.0.0 -> 1.0.1: 1 commit" in text and "Add reviews" in text, text

    # Against what Development has: Database since 1.0.0's commit, the others from scratch.
    result = shop.cli("changes", *repo, "--since", "last-deployed:Development", "--output", "json")
    assert result.returncode == 0, describe(result)
    assert json.loads(result.stdout)["files"]["Database"] == ["database/0002.sql"]
    assert json.loads(result.stdout)["projects"] == WATCHED
    assert "Website: it has no successful deployment in Development" in result.stderr


def test_release_create_records_build_information(shop: Server, tmp_path: Path) -> None:
    git = GitRepo(tmp_path / "repo")
    repo = ("--repo", str(git.root))
    base = git.commit("first", BASE)
    one = git.commit("one", {"tools/a.sh": "echo a\n"})
    two = commit_at(git, "2024-05-01T14:30:00+02:00", "two", {"tools/b.sh": "echo b\n"})
    create = ("release", "create", "--project", "Tools")
    made = as_json(
        shop, *create, "--version", "2.0.0", "--commit", "HEAD", "--commits-from", base, *repo
    )
    assert made["version"] == "2.0.0"
    build = release_json(shop, "Tools", "2.0.0")["build"]
    # Tools has no watch paths: every commit in the range is its.
    assert build["commit"] == two and [c["sha"] for c in build["commits"]] == [two, one]
    # Each with its committer date, sent with its offset and kept in UTC.
    assert build["commits"][0]["timestamp"] == "2024-05-01T12:30:00Z"
    assert UTC_TIME.fullmatch(build["commits"][1]["timestamp"]), build
    said = bad_input(shop, *create, "--version", "2.0.1", "--commit", "no-such", *repo)
    assert '"no-such"' in said, said
    said = bad_input(shop, *create, "--version", "2.0.1", "--commit", two, "--build-url", "ftp://x")
    assert "build.build_url" in said, said
    said = bad_input(shop, *create, "--changed-since", "last-release", "--version", "2.0.1")
    assert "leave out --project" in said, said
