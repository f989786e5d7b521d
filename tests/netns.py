"""Hosts of their own on this machine: a network namespace per host, joined to the tests' side by
a veth pair, so that traffic to it really crosses a network link that a test can cut.

`Host.cut()` takes the host's end of the link down from inside its namespace: the tests' side
keeps its route, so packets are sent and lost (as when a cable is pulled or a firewall drops
them), nothing answers and no reset comes back. `Host.mend()` brings the link back. Everything
is removed at the end (`made_hosts`), also when a test failed. Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

_COUNTER = itertools.count()


@dataclass
class Host:
    """One namespace: ``address`` is the host's side of the link, reached from the tests."""

    namespace: str
    outside: str  # the tests' end of the veth pair
    inside: str  # the host's end, inside the namespace
    address: str
    gateway: str

    @property
    def prefix(self) -> tuple[str, ...]:
        """Runs a command on this host: ``[*host.prefix, "sshd", ...]``."""
        return ("ip", "netns", "exec", self.namespace)

    def cut(self) -> None:
        _ip("netns", "exec", self.namespace, "ip", "link", "set", self.inside, "down")

    def mend(self) -> None:
        _ip("netns", "exec", self.namespace, "ip", "link", "set", self.inside, "up")

    def remove(self) -> None:
        # Whatever still runs in the host (sshd's sessions, whose peer is gone) ends with it.
        found = subprocess.run(
            ["ip", "netns", "pids", self.namespace], capture_output=True, text=True, timeout=10
        )
        for pid in found.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.namespace)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.outside)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def skip_unless_possible() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        reason = "network namespace tests need root and iproute2 (ip netns)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def make_host() -> Host:
    """A new namespace on its own /30: 10.(200 + n/64).(n%64 * 4) with n unique to this run."""
    skip_unless_possible()
    n = (os.getpid() % 1000) * 16 + next(_COUNTER) % 16
    net_a, net_b = 200 + (n // 64) % 50, (n % 64) * 4
    gateway, address = f"10.{net_a}.{net_b}.1", f"10.{net_a}.{net_b}.2"
    tag = f"{os.getpid() % 100000}x{n % 1000}"
    host = Host(f"cvns{tag}", f"cvo{tag}", f"cvi{tag}", address, gateway)
    try:
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.outside, "type", "veth", "peer", "name", host.inside)
        _ip("link", "set", host.inside, "netns", host.namespace)
        _ip("addr", "add", f"{gateway}/30", "dev", host.outside)
        _ip("link", "set", host.outside, "up")
        inside = ("netns", "exec", host.namespace, "ip")
        _ip(*inside, "addr", "add", f"{address}/30", "dev", host.inside)
        _ip(*inside, "link", "set", host.inside, "up")
        _ip(*inside, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        host.remove()
        raise RuntimeError(f"could not make a network namespace: {exc.stderr!r}") from exc
    return host


@contextlib.contextmanager
def made_hosts() -> Iterator[list[Host]]:
    """A list to put the hosts a test makes in: every one is removed at the end."""
    made: list[Host] = []
    try:
        yield made
    finally:
        for host in made:
            host.remove()
