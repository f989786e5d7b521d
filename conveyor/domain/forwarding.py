"""Who is on the other end of a request: the peer, or what trusted proxies say it is.

``X-Forwarded-For`` is a list anyone can start; each proxy appends the address it received the
request from. Only entries appended by proxies we trust are believed: walking from the right
(the peer, then each hop before it), the first address that is not a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The ``trusted_proxies`` setting (addresses or CIDR ranges) as networks; ``ValueError``
    names an entry that is neither."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(
                f"trusted_proxies: {entry!r} is not an address or a CIDR range (10.0.0.0/8)"
            ) from exc
    return tuple(networks)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], networks: Sequence[Network]
) -> str | None:
    """The client of a request from ``peer`` carrying these ``X-Forwarded-For`` headers."""
    if peer is None or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    hops = [hop for hop in hops if hop]
    client = peer
    for hop in reversed(hops):
        if not _is_address(hop):
            # Not written by a proxy (they write addresses): the hop to its right is the client.
            break
        client = hop
        if not _trusted(hop, networks):
            break
    # Every hop a trusted proxy: the left-most is as far as the chain can be believed.
    return client


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
