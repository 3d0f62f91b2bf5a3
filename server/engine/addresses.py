"""Which addresses actions may not reach unless configuration allows them: pure, no resolution.

`server.actions.outbound` applies these to every address a host resolves to before connecting;
workflow validation applies them to URLs whose host is a literal address, so a call that will
certainly be refused is reported when the workflow is published.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS, GCP, Azure, ECS, Alibaba, AWS over IPv6): named in refusals.
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "fd00:ec2::254",
    )
)
NAT64_NETWORK: Final = ipaddress.IPv6Network("64:ff9b::/96")


def refusal_reason(address: IPAddress) -> str | None:
    """Why an address is off limits to actions, or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return refusal_reason(embedded)
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "a non-public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_NETWORK:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_allowed(host: str, address: IPAddress, allowed_hosts: Sequence[str]) -> bool:
    """True when configuration allows this host name, this address, or a network holding it."""
    for entry in allowed_hosts:
        name = entry.strip().lower().rstrip(".")
        if name == host:
            return True
        try:
            network = ipaddress.ip_network(name.strip("[]"), strict=False)
        except ValueError:
            continue
        if address in network:
            return True
    return False
