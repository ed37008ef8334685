"""Where the server listens, and so the base of the absolute URLs it hands out.

Those URLs (status_url, response_url, image URLs, OpenAPI's servers) use the operator's
`--public-url`, or else the address the server is bound to; never the client's Host header, which
anyone can set to point other readers of a job, or of the API description, at a host of their
choosing. The socket is bound before the application is built, so the application knows its own
address even when the system picks the port (port 0).
"""

from __future__ import annotations

import ipaddress
import socket


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (a name is resolved; port 0 lets the system choose)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address, family=family)


def socket_url(sock: socket.socket) -> str:
    """`http://host:port` of a listening socket, with IPv6 hosts in brackets."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_wildcard(sock: socket.socket) -> bool:
    """Bound to every interface (0.0.0.0 or ::): its own address is no URL a remote client can use."""
    return ipaddress.ip_address(sock.getsockname()[0]).is_unspecified
