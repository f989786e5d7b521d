"""While an attack runs against a real server, a second client keeps asking `GET /api/v1/`:
the server is still answering everyone else when every one of those answers comes quickly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

# p95 of the probe's answers, and the slowest one, while the attack runs.
P95_LIMIT = 1.0
MAX_LIMIT = 3.0


@dataclass
class Probe:
    samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[int(0.95 * (len(ordered) - 1))]

    def assert_responsive(self) -> None:
        assert not self.errors, self.errors
        assert self.samples, "no answer at all while the attack ran"
        worst = max(self.samples)
        assert self.p95 < P95_LIMIT and worst < MAX_LIMIT, (
            f"GET /api/v1/ while the attack ran: p95 {self.p95:.3f} s, slowest {worst:.3f} s "
            f"over {len(self.samples)} requests"
        )
        # Asked every 50 ms for at least a second: few answers means requests were stuck.
        assert len(self.samples) >= 5, f"only {len(self.samples)} answers while the attack ran"


@contextmanager
def probing(url: str) -> Iterator[Probe]:
    """Ask ``url``/api/v1/ every 50 ms from another thread until the block ends."""
    probe = Probe()
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=60, follow_redirects=True) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    client.get(f"{url}/api/v1/").raise_for_status()
                except httpx.HTTPError as exc:
                    probe.errors.append(repr(exc))
                    return
                probe.samples.append(time.perf_counter() - started)
                stop.wait(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        time.sleep(0.1)
        yield probe
    finally:
        stop.set()
        thread.join(90)


def attack_for(seconds: float, attack: Callable[[], None]) -> int:
    """Repeat ``attack`` (at least once) until ``seconds`` have passed; how many times it ran."""
    deadline = time.monotonic() + seconds
    count = 0
    while count == 0 or time.monotonic() < deadline:
        attack()
        count += 1
    return count
