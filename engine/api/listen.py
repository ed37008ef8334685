"""Where the server listens, and so the base of the absolute URLs it hands out.

Those URLs (status_url, response_url, image URLs, OpenAPI's servers) use the operator's
`--public-url`, or else the address the server is bound to; never the client's Host header, which
anyone can set to point other readers of a job, or of the API description, at a host of their
choosing. The socket is bound before the application is built, so the application knows its own
address even when the system picks the port (port 0).

With a certificate and key (`--tls-cert`, `--tls-key`) the socket serves HTTPS: fal's Python client
only speaks https, whatever host it is pointed at.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path

PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
PEM_PRIVATE_KEY = "PRIVATE KEY-----"


class TlsError(ValueError):
    """A certificate or key the server cannot serve TLS with; the message names the file and the fix."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (a name is resolved; port 0 lets the system choose)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address, family=family)


def socket_url(sock: socket.socket, *, tls: bool = False) -> str:
    """`http(s)://host:port` of a listening socket, with IPv6 hosts in brackets."""
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def is_wildcard(sock: socket.socket) -> bool:
    """Bound to every interface (0.0.0.0 or ::): its own address is no URL a remote client can use."""
    return ipaddress.ip_address(sock.getsockname()[0]).is_unspecified


def _pem_text(path: Path, option: str, marker: str, what: str) -> None:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise TlsError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    if marker not in text:
        raise TlsError(f"{option} {path}: not a PEM {what} (no '{marker}' line)")


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    """Called by OpenSSL for an encrypted key, instead of prompting on the terminal."""
    raise _EncryptedKey


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context from a PEM certificate (chain) and its unencrypted PEM key; None for
    plain HTTP. Checked when the server starts, so a bad file stops it with a reason instead of
    failing every handshake later."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise TlsError(f"{given} needs {missing} too: give both to serve HTTPS, or neither for HTTP")
    _pem_text(cert, "--tls-cert", PEM_CERTIFICATE, "certificate")
    _pem_text(key, "--tls-key", PEM_PRIVATE_KEY, "private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKey:
        raise TlsError(
            f"--tls-key {key}: the key is encrypted and the server cannot ask for its passphrase; "
            f"write an unencrypted copy (openssl pkey -in {key} -out KEY.pem) readable only by the server"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"--tls-key {key} is not the key of --tls-cert {cert}") from None
        raise TlsError(f"cannot serve TLS with --tls-cert {cert} and --tls-key {key}: {exc}") from None
    return context
