"""How many database connections several nodes may open, against PostgreSQL's limit."""

from __future__ import annotations

from conveyor.domain.nodes import connection_shortfall


def test_nodes_that_fit_under_max_connections_get_no_warning() -> None:
    assert connection_shortfall(100, 2, 40) is None  # 82 of 90


def test_too_many_connections_says_what_to_set() -> None:
    said = connection_shortfall(100, 3, 40)  # 123 wanted, 90 to use
    assert said is not None
    assert "123 database connections" in said
    assert "CONVEYOR_DATABASE_CONNECTIONS=29" in said
    assert connection_shortfall(100, 3, 29) is None
