"""Which versions of a package a target keeps after a deployment (pure rule)."""

from __future__ import annotations

from conveyor.domain.packages import kept_versions


def test_the_newest_versions_are_kept_and_a_redeployed_one_counts_as_newest() -> None:
    assert kept_versions([], "1.0.0", 3) == (["1.0.0"], [])
    assert kept_versions(["1", "2", "3"], "4", 3) == (["2", "3", "4"], ["1"])
    assert kept_versions(["2", "3", "4"], "2", 3) == (["3", "4", "2"], [])
    assert kept_versions(["2", "3", "4"], "5", 1) == (["5"], ["2", "3", "4"])
