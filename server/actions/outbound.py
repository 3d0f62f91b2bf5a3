"""The outbound address guard: which hosts an action may connect to, decided before connecting.

Actions that connect to hosts taken from workflow configuration or credentials (`http_request`,
`sms`, an OAuth2 token endpoint, `email`'s SMTP server) must not become a way into the private network: loopback, private (RFC 1918 and
unique-local), link-local, shared (CGNAT), multicast, reserved and unspecified addresses, and the
cloud metadata endpoints among them, are refused unless `settings.http_allowed_hosts` lists the
host name, the address or a network containing it (`10.0.0.0/8`). A host name is resolved once;
every address it resolves to must pass (one private answer refuses the host, so a rebinding DNS
server cannot mix them), and the connection is then made to a checked address, never to a
second resolution. IPv4 addresses embedded in IPv6 ones (mapped, 6to4, NAT64) are judged as the
IPv4 address they carry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Final

import httpx
import msgspec

from server.engine.addresses import IPAddress, is_allowed, refusal_reason
from server.queue.jobs import PermanentError, RetryableError

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class HostNotFoundError(PermanentError):
    """DNS has no address for the host."""


class ResolutionFailedError(RetryableError):
    """Name resolution failed for a reason that may pass (no answer, a server failure)."""


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """A URL's host, checked: the addresses it may be reached at, in resolver order."""

    host: str
    port: int
    addresses: tuple[str, ...]


async def check_url(url: httpx.URL, allowed_hosts: Sequence[str]) -> Target:
    """Resolve `url`'s host once and check every address; the addresses to connect to.

    The caller bounds the time it may take (`asyncio.timeout`), DNS included.

    Raises:
        PermanentError: the scheme is not http(s), the host does not exist, or an address is
            refused (the message names the host, the address and the setting to change).
        RetryableError: name resolution failed for a reason that may pass.
    """
    if url.scheme not in DEFAULT_PORTS:
        raise PermanentError(f"only http and https URLs can be called, not {url.scheme!r}")
    host = url.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise PermanentError(f"URL {url} has no host")
    return await check_host(host, url.port or DEFAULT_PORTS[url.scheme], allowed_hosts)


async def check_host(host: str, port: int, allowed_hosts: Sequence[str]) -> Target:
    """Resolve `host` once and check every address, for any protocol (SMTP too).

    `host` may be in any case, with a trailing dot, and an IPv6 literal in brackets.

    Raises:
        PermanentError: an address is refused (the message names the setting to change).
        HostNotFoundError: DNS has no address for the host.
        ResolutionFailedError: name resolution failed for a reason that may pass.
    """
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise PermanentError("no host to connect to")
    literal = _ip_literal(host)
    addresses = [literal] if literal is not None else await _resolve(host, port)
    for address in addresses:
        reason = refusal_reason(address)
        if reason is not None and not is_allowed(host, address, allowed_hosts):
            shown = host if literal is not None else f"{host} ({address})"
            raise PermanentError(
                f"refused to connect to {shown}: it is {reason}; if this call is intended, add "
                f"{host} to HTTP_ALLOWED_HOSTS"
            )
    return Target(host=host, port=port, addresses=tuple(str(a) for a in addresses))


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        if error.errno == socket.EAI_NONAME:
            raise HostNotFoundError(
                f"host {host} does not exist (DNS has no address for it)"
            ) from None
        raise ResolutionFailedError(f"could not resolve {host}: {error.strerror}") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ResolutionFailedError(f"resolving {host} gave no address")
    return addresses


def pinned_url(url: httpx.URL, address: str) -> httpx.URL:
    """`url` aimed at a checked address; the Host header and TLS name stay the URL's host."""
    return url.copy_with(host=address)
