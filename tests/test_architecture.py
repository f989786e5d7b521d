"""The import layers of DESIGN.md, enforced by the import-linter contracts in pyproject.toml.

The real tree must keep every contract, and each kind of violation that an AST walk over
absolute imports used to miss must break one: checked on a temporary copy of the package, so
the real tree is never edited.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# Each violation: (file to add, its text, the contract it must break).
VIOLATIONS: dict[str, tuple[str, str, str]] = {
    "absolute import of the store from the domain": (
        "domain/_probe.py",
        "from conveyor import store\n",
        "Layers:",
    ),
    "relative import of the store from the domain": (
        "domain/_probe.py",
        "from ..store import tables\n",
        "Layers:",
    ),
    "dynamic import through importlib in the domain": (
        "domain/_probe.py",
        'import importlib\n\nstore = importlib.import_module("conveyor.store")\n',
        "The domain is pure",
    ),
    "a new package importing everything": (
        "everything/__init__.py",
        "from conveyor import api, cli, domain, engine, services, settings, store, web\n",
        "Layers:",
    ),
}


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, ahead of the editable install of the real tree.
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "300"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "conveyor",
        tmp_path / "conveyor",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_real_tree_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_copy_is_what_gets_checked(tree_copy: Path) -> None:
    # Guards the test itself: a clean copy passes, and the graph is built from the copy.
    result = _lint(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    probe = tree_copy / "conveyor" / "domain" / "_probe.py"
    probe.write_text("from conveyor.store import tables\n", encoding="utf-8")
    assert _lint(tree_copy).returncode != 0


@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_each_violation_breaks_a_contract(tree_copy: Path, violation: str) -> None:
    relative, text, contract = VIOLATIONS[violation]
    target = tree_copy / "conveyor" / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")

    result = _lint(tree_copy)

    assert result.returncode != 0, f"{violation} was not caught:\n{result.stdout}"
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
