"""Webhook hosts are read as a resolver reads them and refused unless globally reachable.

Expected addresses come from the standards, not from the code: glibc's inet_aton (which getaddrinfo,
and so every connection, uses for numeric hosts) and the WHATWG URL standard's IPv4 parser for the
IPv4 forms; RFC 4291 / 6052 / 3056 / 4380 for the IPv6 forms that carry an IPv4 address. Verdicts come
from the IANA special-purpose address registries (RFC 6890 and updates), column "Globally Reachable".
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address
from pathlib import Path

import pytest
from yarl import URL

from engine.jobs.sqlite_async import AsyncSqliteStore
from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.webhook_targets import (
    WebhookTargetError,
    check_target,
    host_address,
    refusal,
    refuse_private_address,
)
from engine.jobs.webhooks import WebhookSender, new_secret
from tests.jobs.test_webhooks import Receiver, deliver_outbox, finished_job, serve

# (host as written in the URL, the address it stands for, globally reachable?, registry entry)
HOSTS = [
    ("127.0.0.1", "127.0.0.1", False, "127.0.0.0/8 loopback"),
    ("127.1", "127.0.0.1", False, "two-part form: last part fills three bytes"),
    ("0x7f.1", "127.0.0.1", False, "hex part"),
    ("0X7F.0.0.1", "127.0.0.1", False, "hex part, upper case"),
    ("0177.0.0.1", "127.0.0.1", False, "octal part"),
    ("2130706433", "127.0.0.1", False, "one 32-bit decimal number"),
    ("0x7f000001", "127.0.0.1", False, "one 32-bit hex number"),
    ("017700000001", "127.0.0.1", False, "one 32-bit octal number"),
    ("127.000.000.001", "127.0.0.1", False, "zero-padded (octal zero)"),
    ("127.0.0.1.", "127.0.0.1", False, "trailing dot (WHATWG drops it)"),
    ("0", "0.0.0.0", False, "0.0.0.0/8 this network"),
    ("0.0.0.0", "0.0.0.0", False, "0.0.0.0/8 this network"),
    ("10.1.2.3", "10.1.2.3", False, "10.0.0.0/8 private-use"),
    ("100.64.0.1", "100.64.0.1", False, "100.64.0.0/10 shared address space"),
    ("100.128.0.1", "100.128.0.1", True, "just above 100.64.0.0/10"),
    ("169.254.169.254", "169.254.169.254", False, "169.254.0.0/16 link-local (cloud metadata)"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254", False, "link-local, in hex"),
    ("172.16.0.1", "172.16.0.1", False, "172.16.0.0/12 private-use"),
    ("172.32.0.1", "172.32.0.1", True, "just above 172.16.0.0/12"),
    ("192.0.0.8", "192.0.0.8", False, "192.0.0.0/24 IETF protocol assignments"),
    ("192.0.2.1", "192.0.2.1", False, "192.0.2.0/24 TEST-NET-1"),
    ("192.88.99.1", "192.88.99.1", False, "192.88.99.0/24 deprecated 6to4 relay"),
    ("192.168.0.1", "192.168.0.1", False, "192.168.0.0/16 private-use"),
    ("198.18.0.1", "198.18.0.1", False, "198.18.0.0/15 benchmarking"),
    ("198.51.100.1", "198.51.100.1", False, "198.51.100.0/24 TEST-NET-2"),
    ("203.0.113.1", "203.0.113.1", False, "203.0.113.0/24 TEST-NET-3"),
    ("224.0.0.1", "224.0.0.1", False, "224.0.0.0/4 multicast, not unicast"),
    ("240.0.0.1", "240.0.0.1", False, "240.0.0.0/4 reserved"),
    ("255.255.255.255", "255.255.255.255", False, "limited broadcast"),
    ("8.8.8.8", "8.8.8.8", True, "ordinary unicast"),
    ("134744072", "8.8.8.8", True, "ordinary unicast as one number"),
    ("[::1]", "::1", False, "::1/128 loopback"),
    ("[::]", "::", False, "::/128 unspecified"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1", False, "IPv4-mapped loopback"),
    ("[0:0:0:0:0:ffff:7f00:1]", "::ffff:7f00:1", False, "IPv4-mapped loopback, long form"),
    ("[::ffff:169.254.169.254]", "::ffff:a9fe:a9fe", False, "IPv4-mapped link-local"),
    ("[::ffff:8.8.8.8]", "::ffff:808:808", True, "IPv4-mapped public"),
    ("[::127.0.0.1]", "::7f00:1", False, "IPv4-compatible (deprecated ::/96), loopback"),
    ("[::8.8.8.8]", "::808:808", False, "IPv4-compatible: ::/96 is not routable at all"),
    ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1", False, "NAT64 well-known prefix to loopback"),
    ("[64:ff9b::10.0.0.1]", "64:ff9b::a00:1", False, "NAT64 to private-use"),
    ("[64:ff9b::808:808]", "64:ff9b::808:808", True, "NAT64 to a public address"),
    ("[64:ff9b:1::808:808]", "64:ff9b:1::808:808", False, "64:ff9b:1::/48 local-use translation"),
    ("[2002:7f00:1::]", "2002:7f00:1::", False, "6to4 of 127.0.0.1"),
    ("[2002:a9fe:a9fe::1]", "2002:a9fe:a9fe::1", False, "6to4 of 169.254.169.254"),
    ("[2002:808:808::1]", "2002:808:808::1", True, "6to4 of a public address"),
    ("[2001:0:4136:e378:8000:63bf:80ff:fffe]", "2001:0:4136:e378:8000:63bf:80ff:fffe", False, "Teredo"),
    ("[2001:db8::1]", "2001:db8::1", False, "2001:db8::/32 documentation"),
    ("[3fff::1]", "3fff::1", False, "3fff::/20 documentation"),
    ("[100::1]", "100::1", False, "100::/64 discard-only"),
    ("[fc00::1]", "fc00::1", False, "fc00::/7 unique-local"),
    ("[fd12:3456::1]", "fd12:3456::1", False, "fc00::/7 unique-local"),
    ("[fe80::1]", "fe80::1", False, "fe80::/10 link-local"),
    ("[fe80::1%25eth0]", "fe80::1%25eth0", False, "link-local with a zone (still escaped in raw_host)"),
    ("[fec0::1]", "fec0::1", False, "fec0::/10 deprecated site-local"),
    ("[ff02::1]", "ff02::1", False, "ff00::/8 multicast"),
    ("[2001:4860:4860::8888]", "2001:4860:4860::8888", True, "global unicast"),
    ("[2606:4700:4700::1111]", "2606:4700:4700::1111", True, "global unicast"),
]


@pytest.mark.parametrize(("written", "address", "reachable", "entry"), HOSTS)
def test_each_host_form_is_read_and_judged_as_the_standards_say(
    written: str, address: str, reachable: bool, entry: str
) -> None:
    host = URL(f"http://{written}:9/hook").raw_host  # the parser aiohttp connects with
    assert host is not None
    assert host_address(host) == ip_address(address), entry
    assert (refusal(ip_address(address)) is None) is reachable, entry


@pytest.mark.parametrize(
    "written",
    [written for written, *_ in HOSTS if "." in written and ":" not in written and written[-1] != "."],
)
def test_ipv4_forms_agree_with_inet_aton(written: str) -> None:
    host = URL(f"http://{written}/").raw_host
    assert host is not None
    assert host_address(host) == ip_address(socket.inet_aton(host))


@pytest.mark.parametrize("written", [w for w, _, reachable, _ in HOSTS if not reachable])
def test_non_public_hosts_are_refused_with_the_reason(written: str) -> None:
    with pytest.raises(WebhookTargetError, match=r"is not a public address: .* (is|leads to) "):
        refuse_private_address(f"http://{written}:9/hook")


@pytest.mark.parametrize(
    "written", ["example.com", "hooks.example.com.", "my_host.internal", "xn--bcher-kva.de"]
)
def test_names_are_left_to_the_resolver(written: str) -> None:
    assert host_address(written) is None
    refuse_private_address(f"https://{written}/hook")


@pytest.mark.parametrize(
    "url",
    [
        "http://08.0.0.1/",  # 8 is no octal digit
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://1.2.3.256/",
        "http://4294967296/",
        "http://0x7g.1/",
        "http://%31%32%37.0.0.1/",  # getaddrinfo would not read this; neither do we
        "http://127.0.0.1 x/",
        "http://[::g]/",
    ],
)
def test_malformed_hosts_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetError, match="not a valid"):
        check_target_now(url, allow_private=True)


def check_target_now(url: str, *, allow_private: bool) -> None:
    asyncio.run(check_target(url, allow_private=allow_private))


def test_names_are_resolved_at_submit() -> None:
    refused = r"localhost is not a public address: 127\.0\.0\.1 is loopback"
    with pytest.raises(WebhookTargetError, match=refused):
        check_target_now("http://localhost:9/hook", allow_private=False)
    check_target_now("http://localhost:9/hook", allow_private=True)
    check_target_now("http://hooks.invalid/x", allow_private=False)  # RFC 6761: never resolves; judged later


@pytest.mark.parametrize(
    "written", ["127.1", "2130706433", "0177.0.0.1", "0x7f.1", "[::127.0.0.1]", "[64:ff9b::7f00:1]"]
)
def test_delivery_to_any_loopback_form_is_refused_once(tmp_path: Path, written: str) -> None:
    """A job stored with such a URL (before this check existed) is refused at delivery, not retried."""

    async def scenario() -> None:
        receiver = Receiver(failures=0)
        runner, url = await serve(receiver)
        store = SqliteStore(tmp_path / "s.sqlite3")
        sender = WebhookSender(AsyncSqliteStore(store), lambda job: {}, new_secret(), delays=(0, 0, 0))
        job = finished_job(store, url.replace("127.0.0.1", written))
        await deliver_outbox(sender)
        await runner.cleanup()
        log = store.deliveries(job.id)
        assert len(log) == 1 and log[0].error is not None and log[0].error.startswith("refused:"), log
        assert receiver.calls == []

    asyncio.run(scenario())
