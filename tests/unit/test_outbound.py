"""The address guard's judgement of addresses, and Retry-After parsing, on plain values."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest

from server.actions.guarded_http import retry_after_seconds
from server.actions.outbound import check_host
from server.engine.addresses import is_allowed, refusal_reason
from server.queue.jobs import PermanentError


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("fc00::5", "a private address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("100.64.0.1", "a non-public address"),
        ("0.0.0.0", "an unspecified address"),  # noqa: S104 - an address judged, not bound
        ("::", "an unspecified address"),
        ("224.0.1.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("2002:7f00:1::", "a loopback address"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),  # NAT64 around 169.254.169.254
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_addresses_are_judged_by_what_they_reach(address: str, reason: str | None) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("host", "address", "allowed", "expected"),
    [
        ("api.internal", "10.0.0.5", ["API.internal."], True),
        ("api.internal", "10.0.0.5", ["10.0.0.0/24"], True),
        ("api.internal", "10.0.1.5", ["10.0.0.0/24"], False),
        ("::1", "::1", ["[::1]"], True),
        ("other", "10.0.0.5", ["api.internal"], False),
    ],
)
def test_allowed_hosts_match_names_addresses_and_networks(
    host: str, address: str, allowed: list[str], expected: bool
) -> None:
    assert is_allowed(host, ipaddress.ip_address(address), allowed) is expected


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Tue, 01 Jan 2030 12:01:30 GMT", now) == 90.0
    assert retry_after_seconds("Tue, 01 Jan 2030 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("10.0.0.1", "a private address"),
        ("192.168.1.10", "a private address"),
        ("[fd00::1]", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("100.64.0.1", "a non-public address"),
        ("LOCALHOST.", "a loopback address"),
    ],
)
async def test_a_host_of_any_protocol_is_checked_before_anything_connects(
    host: str, reason: str
) -> None:
    """`check_host` (what SMTP uses; URLs go through it too) only resolves and judges."""
    with pytest.raises(PermanentError, match=f"it is {reason}; .* to HTTP_ALLOWED_HOSTS"):
        await check_host(host, 25, allowed_hosts=())
    allowed = await check_host(host, 25, allowed_hosts=("0.0.0.0/0", "::/0"))
    assert allowed.port == 25
    assert allowed.addresses
