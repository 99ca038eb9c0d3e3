"""Listening sockets bound the same way for every door: gRPC, REST and metrics.

``host = "[::]"`` (the default) means every address, IPv4 and IPv6 alike, as gRPC binds it: one
dual-stack IPv6 socket with ``IPV6_V6ONLY`` off. asyncio (and so aiohttp) sets ``IPV6_V6ONLY`` on
for "::", so REST on the default host refused every IPv4 client (``curl http://127.0.0.1:8501``, a
Kubernetes Service) while gRPC answered them; metrics bound 0.0.0.0, IPv4 only. Both now take their
socket from here.
"""

from __future__ import annotations

import socket

#: Connections waiting to be accepted (the kernel's queue; SOMAXCONN caps it).
BACKLOG = 1024
WILDCARDS = ("", "::", "0.0.0.0")


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket on ``host`` (``[::]``: dual-stack) and ``port`` (0: a free one)."""
    host = host.strip("[]")
    if host in WILDCARDS and host != "0.0.0.0" and socket.has_dualstack_ipv6():
        return socket.create_server(
            ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=BACKLOG
        )
    if host in WILDCARDS:
        return socket.create_server(("0.0.0.0", port), backlog=BACKLOG)
    family, *_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return socket.create_server((host, port), family=family, backlog=BACKLOG)
