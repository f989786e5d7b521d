"""Server nodes as an administrator sees them: which are alive, how busy each is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# A node renews its heartbeat every few seconds; one silent for a whole lease is gone, and its
# tasks are taken over by the others (the same span as a task's lease, CONVEYOR_LEASE_SECONDS).
HEARTBEAT_LAPSE = timedelta(seconds=20)
# Connections PostgreSQL keeps for superusers and that tools (psql, backups) need.
SPARE_CONNECTIONS = 10


@dataclass(frozen=True)
class NodeStatus:
    name: str
    slots: int
    started: datetime
    heartbeat: datetime
    running: tuple[int, ...]  # the tasks it is executing now

    def alive(self, now: datetime, lapse: timedelta = HEARTBEAT_LAPSE) -> bool:
        return now - self.heartbeat <= lapse


def connection_shortfall(max_connections: int, nodes: int, per_node: int) -> str | None:
    """Why ``nodes`` nodes with ``per_node`` connections each (and one listener each) may run
    out of PostgreSQL connections under load; None when they fit."""
    wanted = nodes * (per_node + 1)
    room = max_connections - SPARE_CONNECTIONS
    if wanted <= room:
        return None
    fits = max(2, room // nodes - 1)
    return (
        f"{nodes} node(s) may open {wanted} database connections, but PostgreSQL allows "
        f"{max_connections} (less {SPARE_CONNECTIONS} to spare): set "
        f"CONVEYOR_DATABASE_CONNECTIONS={fits} on each node, or raise max_connections"
    )
