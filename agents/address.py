"""The address an agent advertises when ``firsthop-agent run`` is given no ``--address``: what
ranks on other hosts use as ``MASTER_ADDR`` to reach the ranks of this one.

Rule: the host name when it resolves; otherwise the local address this host uses to reach the
scheduler (the source address of a route to it: other hosts that reach the scheduler can
reach that address too); otherwise the host name, with a warning, since a job whose rank 0
runs here would wait in rendezvous for an address that does not exist. Name resolution and
the route lookup are injected so tests can play any network.

Must not import ``scheduler`` (agents never do) or the generated protos.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

Resolve = Callable[[str], bool]
"""Whether a host name resolves to an address."""
Route = Callable[[str, int], str | None]
"""The local source address used to reach ``(host, port)``, or ``None`` when none is known."""


@dataclass(frozen=True, slots=True)
class Advertised:
    """The chosen address, how it was chosen, and a warning when it may not work."""

    address: str
    source: str
    """``given``, ``host name``, ``route to the scheduler`` or ``unresolved host name``."""
    warning: str = ""


def resolves(name: str) -> bool:
    """Whether ``name`` resolves (any address family)."""
    try:
        return bool(socket.getaddrinfo(name, None))
    except (OSError, UnicodeError):
        return False


def route_source(host: str, port: int) -> str | None:
    """The local address of a route to ``host:port`` (a UDP ``connect`` sends no packet)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, kind, proto, _, target in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.connect(target)
                local = sock.getsockname()[0]
        except OSError:
            continue
        if isinstance(local, str) and local not in {"0.0.0.0", "::"}:
            return local
    return None


def split_server(server: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` (or ``[V6]:PORT``) scheduler address."""
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


def advertised_address(
    host: str,
    server: str,
    given: str = "",
    *,
    resolve: Resolve = resolves,
    route: Route = route_source,
) -> Advertised:
    """The address to advertise (see the module docstring)."""
    if given:
        return Advertised(given, "given")
    if resolve(host):
        return Advertised(host, "host name")
    target = split_server(server)
    local = route(*target) if target is not None else None
    if local:
        return Advertised(local, "route to the scheduler")
    return Advertised(
        host,
        "unresolved host name",
        warning=(
            f"the host name {host!r} does not resolve and no route to the scheduler at "
            f"{server} gives a local address: jobs whose rank 0 runs here cannot rendezvous; "
            "pass --address"
        ),
    )
