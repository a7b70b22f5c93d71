"""Free TCP ports, for a Ray cluster's components, a Serve proxy or a NCCL rendezvous."""

from __future__ import annotations

import socket
from contextlib import ExitStack


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` now ("": every interface). Every socket stays bound until
    all are picked: picked one at a time, the kernel can hand out the same port twice, and Ray refuses to
    start when two of its components get one port (seen in CI: client server and dashboard both on 37157)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


def socket_for(host: str) -> socket.socket:
    """A TCP socket of ``host``'s address family (an IPv6 literal has colons)."""
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` now, by a socket that shares it with nobody."""
    with socket_for(host) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def port_is_listened_on(host: str, port: int) -> bool:
    """Whether a socket listens on ``port`` of ``host``: a server's bind (SO_REUSEADDR, as uvicorn's and
    start_direct_http's) fails only then. A closed server's connections waiting out TIME_WAIT on the port
    fail port_is_free's bind for up to a minute, but block no new server (a demo re-run once took them for
    another program on its retriever's port)."""
    with socket_for(host) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return False
        except OSError:
            return True
