"""Where a webhook may be sent: not to the server's own machine or network (SSRF).

A webhook is an HTTP request the server makes on someone's behalf. Pointed at loopback, a private
network or the cloud metadata service (169.254.169.254), it would let whoever edits a
subscription or a notification step reach what only the server can. Such targets are refused
unless an administrator allows them (``CONVEYOR_ALLOW_PRIVATE_WEBHOOKS``).

Pure: the save-time check looks at the URL as written (an address, or an obviously local name);
the sender checks again every address the name resolves to, and connects to the one it checked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from conveyor.domain.documents import NotificationAction
from conveyor.domain.errors import Problem
from conveyor.domain.model import Model

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_SETTING = "CONVEYOR_ALLOW_PRIVATE_WEBHOOKS=true"
# Names that always mean this machine or an internal network, whatever DNS says.
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, compatible, 6to4, NAT64, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked(ip: Address) -> str | None:
    """Why a webhook may not reach ``ip`` (``"a loopback address"``), or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return blocked(inner)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private network address"
    if not ip.is_global or ip.is_reserved:
        return "not a public internet address"
    return None


def literal_address(host: str) -> Address | None:
    """``host`` as an address if it is one, in any spelling a resolver would accept
    (``127.1``, ``0x7f000001`` and ``2130706433`` are all 127.0.0.1)."""
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return _legacy_ipv4(host)


_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton's forms: one to four parts, each decimal, octal (0...) or hex (0x...), the last
    filling the bytes left (``127.1`` is 127.0.0.1)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    values = [
        int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10)
        for p in parts
    ]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    return ipaddress.IPv4Address(number * 256 ** (4 - len(head)) + last)


def is_local_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name in LOCAL_NAMES or name.endswith(LOCAL_SUFFIXES)


def target_problem(url: str) -> str | None:
    """Why a webhook URL, as written, may not be used; None if nothing shows it yet (its name
    is checked again when resolved, just before sending)."""
    if "#{" in url:
        return None  # substituted at deploy time; checked when sent
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return None  # the URL's form is validation's concern
    if not host:
        return None
    address = literal_address(host)
    if address is not None:
        reason = blocked(address)
    elif is_local_name(host):
        reason = "a name of this machine or an internal network"
    else:
        return None
    if reason is None:
        return None
    return refusal(host, reason)


def refusal(host: str, reason: str) -> str:
    return (
        f"{host} is {reason}: webhooks may not reach the server's own machine or network "
        f"unless an administrator sets {ALLOW_SETTING}"
    )


def _targets(model: Model) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for sub in model.subscriptions:
        if sub.webhook is not None:
            yield ("subscriptions", sub.name, "webhook", "url"), sub.webhook.url
    for project in model.projects:
        for step in project.process.steps:
            if isinstance(step.action, NotificationAction):
                for i, hook in enumerate(step.action.webhooks):
                    path = ("projects", project.name, "process", "steps", step.name)
                    yield (*path, "webhooks", i, "url"), hook.url


def new_target_problems(current: Model, desired: Model) -> list[Problem]:
    """Problems with the webhook URLs a change adds. URLs already saved are left to the sender
    (an administrator may have allowed them once), so that they do not block unrelated edits."""
    saved = {url for _, url in _targets(current)}
    problems: list[Problem] = []
    for path, url in _targets(desired):
        if url in saved:
            continue
        message = target_problem(url)
        if message is not None:
            problems.append(Problem(path, message))
    return problems
