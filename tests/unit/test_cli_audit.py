"""The audit commands' time flags: ages and ISO 8601, sent to the server in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.cli.audit import moment, params
from conveyor.cli.output import Failure


def test_an_age_is_counted_back_from_now() -> None:
    sent = datetime.fromisoformat(moment("30d", "--since"))
    assert abs(sent - (datetime.now(UTC) - timedelta(days=30))) < timedelta(seconds=5)
    assert sent.utcoffset() == timedelta(0)
    hours = datetime.fromisoformat(moment(" 12h ", "--since"))
    assert abs(hours - (datetime.now(UTC) - timedelta(hours=12))) < timedelta(seconds=5)


def test_iso_times_keep_their_offset_and_local_times_are_local() -> None:
    assert moment("2025-05-01T14:00:00+02:00", "--until") == "2025-05-01T12:00:00+00:00"
    local = datetime(2025, 5, 1).astimezone()
    assert datetime.fromisoformat(moment("2025-05-01", "--since")) == local


def test_a_bad_time_names_the_flag() -> None:
    with pytest.raises(Failure, match='--since "yesterday" is not a time'):
        moment("yesterday", "--since")


def test_repeated_flags_become_repeated_parameters() -> None:
    sent = params(None, None, ["dev"], ["ReleaseCreated", "DeploymentQueued"], None, None, None)
    assert sent == {"user": ["dev"], "category": ["ReleaseCreated", "DeploymentQueued"]}
