"""``Model.get`` answers from an index by name key, not a scan that slugifies every document.

At 3,000 dashboard cells the scan was 91% of the dashboard's time (issue 11).
"""

from __future__ import annotations

import time
from dataclasses import replace

from conveyor.domain.documents import Environment, Project
from conveyor.domain.model import Model


def _model(count: int) -> Model:
    projects = tuple(Project(f"Service {i}", "Components", "Default") for i in range(count))
    return Model(environments=(Environment("Production"),), projects=projects)


def test_get_matches_names_by_key_case_and_slug() -> None:
    model = _model(3)
    project = model.get("projects", "Service 1")
    assert project is not None and project.name == "Service 1"
    assert model.get("projects", "service-1") is project
    assert model.get("projects", "SERVICE 1") is project
    assert model.get("projects", "Service 9") is None
    assert model.get("environments", "production").name == "Production"


def test_a_changed_model_answers_from_its_own_index() -> None:
    model = _model(3)
    assert model.get("projects", "Service 1") is not None  # builds the index of the first model
    renamed = model.with_doc(
        "projects",
        replace(model.get("projects", "Service 1"), name="Billing"),
        previous_name="Service 1",
    )
    assert renamed.get("projects", "Service 1") is None
    assert renamed.get("projects", "billing").name == "Billing"
    assert model.get("projects", "Service 1") is not None  # the old value is unchanged
    assert renamed.without("projects", "Billing").get("projects", "Billing") is None
    assert renamed == model.with_doc(
        "projects",
        replace(model.get("projects", "Service 1"), name="Billing"),
        previous_name="Service 1",
    )


def test_get_does_not_scan() -> None:
    # 3,000 lookups among 3,000 projects: a scan slugifies ~4.5 million names (seconds); an
    # index slugifies each name once and each lookup once (milliseconds).
    model = _model(3000)
    names = [f"Service {i}" for i in range(3000)]
    started = time.perf_counter()
    for name in names:
        assert model.get("projects", name) is not None
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"3,000 lookups took {elapsed:.2f} s: Model.get is scanning"
