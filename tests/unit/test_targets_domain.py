"""Target rules without a database: what each kind must say, where files go on a machine,
which worker takes a step, and which targets a deployment needs healthy before it starts."""

from __future__ import annotations

from conveyor.domain.documents import PackageAction, ScriptAction, Step, Target, UnhealthyTargets
from conveyor.domain.targets import (
    Health,
    HealthState,
    Layout,
    judged,
    least_loaded,
    pool_members,
    problems_of,
    required_healthy,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhZc0dmY2Z0cV9rZXlfZm9yX3Rlc3RzX29ubHk="


def _said(target: Target) -> dict[str, str]:
    return {str(p.path[-1]): p.message for p in problems_of(target)}


def test_an_ssh_target_needs_where_who_and_a_pinned_host_key() -> None:
    said = _said(Target("db-1", ("Dev",), ("db",), kind="ssh"))
    assert set(said) == {"host", "user", "private_key", "host_key"}
    assert "ssh-keyscan -p 22 HOST" in said["host_key"]
    assert "trust_first_host_key" in said["host_key"]
    ok = Target(
        "db-1",
        ("Dev",),
        ("db",),
        kind="ssh",
        host="10.0.0.5",
        user="deploy",
        private_key="-----BEGIN OPENSSH PRIVATE KEY-----",
        host_key=KEY,
    )
    assert problems_of(ok) == []


def test_a_host_key_must_look_like_one_and_trust_on_first_use_is_explicit() -> None:
    base = Target("db-1", ("Dev",), ("db",), kind="ssh", host="db", user="u", private_key="k")
    assert (
        "is not a public host key"
        in _said(Target(**{**base.__dict__, "host_key": "db1 ssh-ed25519 AAAA"}))["host_key"]
    )
    assert problems_of(Target(**{**base.__dict__, "trust_first_host_key": True})) == []


def test_ssh_fields_on_another_kind_and_workers_in_environments_are_refused() -> None:
    said = _said(Target("w", ("Dev",), ("web",), kind="agent", host="x", pool="builds"))
    assert said["host"] == "applies to ssh targets only, not agent"
    assert "remove its environments" in said["pool"]
    assert "built-in worker" in _said(Target("w", kind="local", pool="p"))["pool"]
    assert problems_of(Target("b1", kind="agent", pool="builds")) == []


def test_the_layout_keeps_each_project_and_version_apart() -> None:
    layout = Layout("/home/deploy/.conveyor/")
    assert (
        layout.project("Production", "Octo Pet Shop")
        == "/home/deploy/.conveyor/targets/production/octo-pet-shop"
    )
    assert layout.version("Dev", "Web", "1.2.0").endswith("/targets/dev/web/1.2.0")
    assert layout.package_file("OctoPetShop.Web", "1.2.0", ".tar.gz").endswith(
        "/packages/octopetshop-web.1.2.0.tar.gz"
    )
    assert Layout(".conveyor").work("ServerTasks-7", 2, 1) == ".conveyor/work/ServerTasks-7-2-1"


def test_the_least_loaded_worker_wins_and_ties_keep_the_first() -> None:
    assert least_loaded(["a", "b", "c"], {"a": 2, "b": 1, "c": 1}) == "b"
    assert least_loaded(["a", "b"], {}) == "a"
    workers = (
        Target("b1", kind="agent", pool="Builds"),
        Target("b2", kind="agent", pool="builds", disabled=True),
    )
    assert [t.name for t in pool_members(workers, "BUILDS")] == ["b1"]


def test_a_nearly_full_disk_makes_a_reachable_machine_unhealthy() -> None:
    found = judged(Health(HealthState.HEALTHY, os="Linux 6.1", free_disk_bytes=5 * 1024 * 1024))
    assert found.state is HealthState.UNHEALTHY
    assert found.message == "only 5 MiB free where Conveyor keeps its files"
    assert judged(Health(HealthState.HEALTHY, free_disk_bytes=10**10)).healthy


def test_targets_needed_healthy_before_a_deployment_starts() -> None:
    targets = (
        Target("web-1", ("Prod",), ("web",)),
        Target("web-2", ("Prod",), ("web",)),
        Target("db-1", ("Prod",), ("db",)),
        Target("web-dev", ("Dev",), ("web",)),
        Target("web-off", ("Prod",), ("web",), disabled=True),
    )
    steps = (
        Step(
            "Db", PackageAction("Db", target_roles=("db",), unhealthy_targets=UnhealthyTargets.SKIP)
        ),
        Step("Web", ScriptAction("echo", target_roles=("web",))),
        Step("Smoke", ScriptAction("echo", target_roles=("web",)), excluded_environments=("Prod",)),
        Step("Report", ScriptAction("echo")),
    )
    needed = required_healthy(steps, targets, "prod", skip=())
    assert needed == {"web-1": ["Web"], "web-2": ["Web"]}
    assert required_healthy(steps, targets, "Prod", skip=("web",)) == {}
