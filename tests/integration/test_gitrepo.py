"""The git reader (services/gitrepo.py) and watch paths on real repositories made by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.domain.changes import changed_projects
from conveyor.domain.errors import ValidationFailed
from conveyor.services.gitrepo import FileChange, Repository
from tests.gitrepos import GitRepo

WATCHES = {
    "Database": ["database/**"],
    "Shopping Cart Service": ["src/ShoppingCartService/**", "src/Shared/**"],
    "Product Service": ["src/ProductService/**", "src/Shared/**"],
    "Website": ["src/Web/**", "!src/Web/docs/**"],
    "Deploy All": [],
}

BASE = {
    "database/migrations/0001.sql": "CREATE TABLE products (id INTEGER);\n",
    "src/ShoppingCartService/service.py": "print('cart')\n",
    "src/ProductService/service.py": "print('products')\n",
    "src/Shared/money.py": "CENTS = 100\n",
    "src/Web/index.html": "<h1>Pets</h1>\n",
    "src/Web/docs/README.md": "How the site is built.\n",
    "README.md": "Octo Pet Shop\n",
}


@pytest.fixture
def git(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


@pytest.fixture
def repo(git: GitRepo) -> Repository:
    return Repository.open(git.root)


def changed(repo: Repository, since: str | None, until: str) -> dict[str, list[str]]:
    paths = [p for c in repo.changed_files(since, until) for p in c.paths]
    return changed_projects(WATCHES, paths)


def test_the_root_commit_compares_with_the_empty_tree(git: GitRepo, repo: Repository) -> None:
    root = git.commit("first", BASE)
    assert repo.first_parent(root) is None
    files = repo.changed_files(None, root)
    assert sorted(f.path for f in files) == sorted(BASE)
    assert {f.status for f in files} == {"A"}
    projects = changed(repo, None, root)
    assert list(projects) == ["Database", "Shopping Cart Service", "Product Service", "Website"]
    assert projects["Website"] == ["src/Web/index.html"]  # docs are excluded
    assert [c.message for c in repo.commits(None, root, 10)] == ["first"]


def test_since_equal_to_until_is_no_change(git: GitRepo, repo: Repository) -> None:
    git.commit("first", BASE)
    head = git.commit("second", {"database/migrations/0002.sql": "SELECT 1;\n"})
    assert repo.changed_files(head, head) == []
    assert changed(repo, head, head) == {}
    assert repo.commits(head, head, 10) == []


def test_a_rename_across_components_counts_both_paths(git: GitRepo, repo: Repository) -> None:
    first = git.commit("first", BASE)
    moved = git.move("src/ProductService/service.py", "src/Web/products.py", "move it")
    files = repo.changed_files(first, moved)
    assert files == [FileChange("R", "src/Web/products.py", "src/ProductService/service.py")]
    assert changed(repo, first, moved) == {
        "Product Service": ["src/ProductService/service.py"],
        "Website": ["src/Web/products.py"],
    }


def test_a_deletion_counts(git: GitRepo, repo: Repository) -> None:
    first = git.commit("first", BASE)
    gone = git.commit("drop the migration", {"database/migrations/0001.sql": None})
    assert repo.changed_files(first, gone) == [FileChange("D", "database/migrations/0001.sql")]
    assert changed(repo, first, gone) == {"Database": ["database/migrations/0001.sql"]}


def test_shared_code_changes_both_services(git: GitRepo, repo: Repository) -> None:
    first = git.commit("first", BASE)
    shared = git.commit("round money", {"src/Shared/money.py": "CENTS = 1000\n"})
    assert changed(repo, first, shared) == {
        "Shopping Cart Service": ["src/Shared/money.py"],
        "Product Service": ["src/Shared/money.py"],
    }


def test_excluded_and_unwatched_paths_change_no_project(git: GitRepo, repo: Repository) -> None:
    first = git.commit("first", BASE)
    docs = git.commit("docs", {"src/Web/docs/README.md": "More.\n", "README.md": "More.\n"})
    assert {f.path for f in repo.changed_files(first, docs)} == {
        "src/Web/docs/README.md",
        "README.md",
    }
    assert changed(repo, first, docs) == {}


def test_paths_with_spaces_and_non_ascii_arrive_as_they_are(git: GitRepo, repo: Repository) -> None:
    first = git.commit("first", BASE)
    odd = {"src/Web/images/chat noir é.svg": "<svg/>\n", 'src/Web/"quoted"\tname.txt': "x\n"}
    head = git.commit("pictures", odd)
    assert sorted(f.path for f in repo.changed_files(first, head)) == sorted(odd)
    assert changed(repo, first, head) == {"Website": sorted(odd)}


def test_merges_first_parent_and_side_branch(git: GitRepo, repo: Repository) -> None:
    """main: base -> db change -> merge; side: base -> product change. ``git diff A B``:
    from the first parent, the merge brings the side branch; from the side branch, main's."""
    base = git.commit("first", BASE)
    git.branch("side")
    side = git.commit("products", {"src/ProductService/service.py": "print('more')\n"})
    git.checkout("main")
    main = git.commit("schema", {"database/migrations/0002.sql": "SELECT 2;\n"})
    merge = git.merge("side", "merge side")
    assert repo.first_parent(merge) == main
    assert list(changed(repo, main, merge)) == ["Product Service"]
    assert list(changed(repo, side, merge)) == ["Database"]
    assert list(changed(repo, base, merge)) == ["Database", "Product Service"]
    # The commits a merge brings include the side branch's.
    assert [c.message for c in repo.commits(main, merge, 10)] == ["merge side", "products"]
    assert {c.sha for c in repo.commits(base, merge, 10)} == {merge, main, side}


def test_commits_are_listed_with_author_and_message(git: GitRepo, repo: Repository) -> None:
    first = git.commit("first", BASE)
    db = git.commit("Add reviews\n\nA table for product reviews.", {"database/r.sql": "x\n"})
    web = git.commit("Restyle", {"src/Web/index.html": "<h1>Pets!</h1>\n"})
    listed = repo.commits(first, web, 10)
    assert [c.sha for c in listed] == [web, db]
    assert listed[1].author == "Dana Developer <dev@octopetshop.example>"
    assert listed[1].message == "Add reviews\n\nA table for product reviews."
    assert len(repo.commits(None, web, 2)) == 2
    # Only the commits that touched some paths (a project's watch paths).
    only_db = repo.commits(
        first, web, 10, lambda paths: any(p.startswith("database/") for p in paths)
    )
    assert [c.sha for c in only_db] == [db]


def test_a_subfolder_opens_the_repository_and_paths_stay_from_the_root(
    git: GitRepo,
) -> None:
    first = git.commit("first", BASE)
    head = git.commit("schema", {"database/migrations/0002.sql": "SELECT 2;\n"})
    repo = Repository.open(git.root / "src" / "Web")
    assert [f.path for f in repo.changed_files(first, head)] == ["database/migrations/0002.sql"]


def test_revisions_resolve_and_an_unknown_one_is_named(git: GitRepo, repo: Repository) -> None:
    first = git.commit("first", BASE)
    git.git("tag", "v1")
    assert repo.resolve("v1") == first == repo.resolve(first[:8]) == repo.resolve("HEAD")
    for bad in ("no-such-branch", "0" * 40, "HEAD~5", "--output=x"):
        with pytest.raises(ValidationFailed) as caught:
            repo.resolve(bad)
        assert bad in caught.value.message


def test_a_folder_outside_any_repository_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Git must not find a repository above the test's folder either.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ValidationFailed, match="is not inside a git repository"):
        Repository.open(plain)
    with pytest.raises(ValidationFailed, match="is not a folder"):
        Repository.open(tmp_path / "missing")
