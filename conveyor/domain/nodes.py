"""Server nodes as an administrator sees them: which are alive, how busy each is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# A node renews its heartbeat every few seconds; one silent for a whole lease is gone, and its
# tasks are taken over by the others (the same span as a task's lease).
HEARTBEAT_LAPSE = timedelta(seconds=30)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    slots: int
    started: datetime
    heartbeat: datetime
    running: tuple[int, ...]  # the tasks it is executing now

    def alive(self, now: datetime) -> bool:
        return now - self.heartbeat <= HEARTBEAT_LAPSE
