"""Clearing stale uploads never fails an upload because another one finished meanwhile."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor.services.packages import STALE_UPLOAD_SECONDS, _prepare_incoming


def test_a_part_that_vanishes_while_stale_uploads_are_cleared_is_passed_over(
    tmp_path: Path,
) -> None:
    incoming = tmp_path / ".incoming"
    incoming.mkdir()
    # Listed, but gone by the time it is looked at (as when a concurrent upload completes):
    # a link to nothing gives the same FileNotFoundError on every run.
    (incoming / "finished-meanwhile.part").symlink_to(tmp_path / "gone")
    stale = incoming / "abandoned.part"
    stale.write_bytes(b"x")
    old = time.time() - STALE_UPLOAD_SECONDS - 60
    os.utime(stale, (old, old))
    fresh = incoming / "in-progress.part"
    fresh.write_bytes(b"y")

    _prepare_incoming(incoming)

    assert not stale.exists()
    assert fresh.exists()
