"""Which webhook URLs the server will call: well-formed http(s) URLs whose host is a public address.

A webhook URL comes from a client, so it must not become a way into the server's own network
(loopback services, cloud metadata at 169.254.169.254, the private LAN). Unless private targets are
explicitly allowed, the host is judged twice: at submit, so the client learns at once, and at every
connection, because what a name resolves to can change in between.

Hosts are read the way the connection will read them. aiohttp takes the host from yarl's parse of
the URL and hands any all-digit-and-dot host straight to the socket, where getaddrinfo/inet_aton
accept `127.1`, `0x7f.1`, `0177.0.0.1` and `2130706433` as 127.0.0.1; the WHATWG URL standard reads
such hosts the same way. IPv6 addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible,
NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo) are judged by the IPv4 address they reach too.

An address is public when it is global unicast and in no block that the IANA special-purpose
registries (RFC 6890 and its updates) mark as not globally reachable. A block is refused whole even
where the registry excepts a few anycast addresses inside it (192.0.0.9, 2001:1::1, ...), which no
webhook receiver uses.
"""

from __future__ import annotations

import asyncio
import re
import socket
import string
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0

Address = IPv4Address | IPv6Address


class WebhookTargetError(ValueError):
    """A webhook URL the server will not call; the message says why."""


_IPV4_NOT_GLOBAL: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(block), name)
    for block, name in (
        ("0.0.0.0/8", '"this network" (RFC 791)'),
        ("10.0.0.0/8", "private-use (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (RFC 6598)"),
        ("127.0.0.0/8", "loopback (RFC 1122)"),
        ("169.254.0.0/16", "link-local (RFC 3927)"),
        ("172.16.0.0/12", "private-use (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
        ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)"),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
        ("192.168.0.0/16", "private-use (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking (RFC 2544)"),
        ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)"),
        ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)"),
        ("224.0.0.0/4", "multicast (RFC 5771)"),
        ("255.255.255.255/32", "limited broadcast (RFC 919)"),
        ("240.0.0.0/4", "reserved (RFC 1112)"),
    )
)

_IPV6_NOT_GLOBAL: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(block), name)
    for block, name in (
        ("::1/128", "loopback (RFC 4291)"),
        ("::/128", "unspecified (RFC 4291)"),
        ("::/96", "IPv4-compatible, deprecated (RFC 4291)"),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215)"),
        ("100::/64", "discard-only (RFC 6666)"),
        ("100:0:0:1::/64", "dummy prefix (RFC 9780)"),
        ("2001::/32", "Teredo (RFC 4380)"),
        ("2001::/23", "IETF protocol assignments (RFC 2928)"),
        ("2001:db8::/32", "documentation (RFC 3849)"),
        ("3fff::/20", "documentation (RFC 9637)"),
        ("5f00::/16", "segment routing SIDs (RFC 9602)"),
        ("fc00::/7", "unique-local (RFC 4193)"),
        ("fe80::/10", "link-local (RFC 4291)"),
        ("fec0::/10", "site-local, deprecated (RFC 3879)"),
        ("ff00::/8", "multicast (RFC 4291)"),
    )
)

_IPV6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_NAT64 = IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): reachable globally, and the translator connects onwards to
the IPv4 address in its last 32 bits."""
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for or tunnels to, if it has one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _block(address: Address) -> str | None:
    """The name of the not-globally-reachable block holding the address, if any."""
    blocks = _IPV4_NOT_GLOBAL if isinstance(address, IPv4Address) else _IPV6_NOT_GLOBAL
    return next((name for block, name in blocks if address in block), None)


def refusal(address: Address) -> str | None:
    """Why the server will not connect to this address, or None when it is public."""
    inner = embedded_ipv4(address) if isinstance(address, IPv6Address) else None
    if inner is not None and (name := _block(inner)) is not None:
        return f"{address} leads to {inner}, which is {name}"
    if (name := _block(address)) is not None:
        return f"{address} is {name}"
    if isinstance(address, IPv4Address) or address.ipv4_mapped is not None or address in _NAT64:
        return None
    if address not in _IPV6_GLOBAL_UNICAST:
        return f"{address} is outside global unicast 2000::/3 (RFC 4291)"
    return None


def _ipv4_number(part: str) -> int:
    """One part of an IPv4 host as inet_aton and the WHATWG URL parser read it: 0x hex, 0 octal, decimal."""
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        if not all(c in string.hexdigits for c in digits):
            raise ValueError(part)
        return int(digits, 16) if digits else 0
    if not (part.isascii() and part.isdigit()):
        raise ValueError(part)
    return int(part, 8) if len(part) > 1 and part.startswith("0") else int(part)


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    return (last.isascii() and last.isdigit()) or (
        last[:2] in ("0x", "0X") and all(c in string.hexdigits for c in last[2:])
    )


def host_address(host: str) -> Address | None:
    """The address a URL's host stands for (in any of the forms a resolver accepts), or None for a name.

    Raises WebhookTargetError for a host that is neither a valid address nor a valid name.
    """
    if ":" in host:
        try:
            return IPv6Address(host)
        except ValueError:
            raise WebhookTargetError(f"webhook URL host [{host}] is not a valid IPv6 address") from None
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # "127.0.0.1." is still an IPv4 address to the URL standard
    if not _ends_in_number(labels):
        if not _NAME.fullmatch(host.lower()):
            raise WebhookTargetError(f"webhook URL host {host!r} is not a valid host name")
        return None
    try:
        numbers = [_ipv4_number(part) for part in labels]
        if len(numbers) > 4 or any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
            raise ValueError(host)
    except ValueError:
        raise WebhookTargetError(f"webhook URL host {host!r} is not a valid IPv4 address") from None
    value = 0
    for number in numbers[:-1]:
        value = value * 256 + number
    return IPv4Address(value * 256 ** (5 - len(numbers)) + numbers[-1])


def check_url(url: str) -> URL:
    """Shape checks: an absolute http(s) URL of bounded length whose host is a valid name or address."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookTargetError(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = URL(url)  # the parser aiohttp will connect with
    except ValueError as exc:
        raise WebhookTargetError(f"webhook URL is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise WebhookTargetError("webhook URL must be an absolute http:// or https:// URL")
    host_address(parsed.raw_host)
    return parsed


def _refuse(host: str, address: Address) -> None:
    if (reason := refusal(address)) is not None:
        raise WebhookTargetError(f"webhook URL host {host} is not a public address: {reason}")


def refuse_private_address(url: str) -> None:
    """Raise if the URL's host is written as an address that is not public; names are left to DNS."""
    host = check_url(url).raw_host
    assert host is not None
    if (address := host_address(host)) is not None:
        _refuse(host, address)


async def check_target(url: str, *, allow_private: bool) -> None:
    """Everything that can be known at submit: the URL's shape and, unless private targets are allowed,
    every address its host is or resolves to now. A name that does not resolve (yet) is let through:
    it cannot be judged, cannot be reached either, and is judged again at each delivery attempt."""
    parsed = check_url(url)
    host = parsed.raw_host
    assert host is not None
    if allow_private:
        return
    if (address := host_address(host)) is not None:
        _refuse(host, address)
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM),  # in a worker thread
            RESOLVE_TIMEOUT_SECONDS,
        )
    except (OSError, TimeoutError):
        return
    for *_, sockaddr in infos:
        _refuse(host, ip_address(sockaddr[0]))


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses the connection if any address is not public.

    aiohttp connects to the addresses returned here, so what is checked is what is connected to.
    Hosts aiohttp takes for address literals skip the resolver: `refuse_private_address` covers those.
    """

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = await self._inner.resolve(host, port, family)
        for result in results:
            _refuse(host, ip_address(result["host"]))
        return results

    async def close(self) -> None:
        await self._inner.close()
