"""The build step that pyproject.toml cannot say: ship the Octo Pet Shop example in the wheel.

The example lives once, at ``examples/octopetshop`` of the repository (the README, the tests and
``conveyor changes --repo examples/octopetshop`` use it there). Building a wheel copies it into
the package as ``conveyor/examples/octopetshop``, which is where an installed ``conveyor demo``
reads it (``conveyor.cli.demo.example_folder``). An editable install (``make install``) copies
nothing: the demo reads the repository's folder directly. An sdist carries the folder
(MANIFEST.in), so a wheel built from it has the example too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EXAMPLE = Path("examples") / "octopetshop"
PACKAGED = Path("conveyor") / "examples" / "octopetshop"


class BuildPyWithExample(build_py):
    """``build_py``, then the example copied into the built package (caches left out)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not EXAMPLE.is_dir():
            raise SystemExit(f"{EXAMPLE} is missing: the wheel must ship the demo's example")
        target = Path(self.build_lib) / PACKAGED
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(
            EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
        )


setup(cmdclass={"build_py": BuildPyWithExample})
