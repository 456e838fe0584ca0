"""The one address policy for every outbound URL a request controls (the dataset URLs, the S3
endpoint): no private, link-local or metadata address (the cloud's 169.254.169.254, the
datacenter's private ranges), checked for the URL and every redirect before connecting, and
again for the address the connection really reached (DNS rebinding). Loopback is allowed unless
`allow_loopback` is off (the GPU image turns it off); `allow_hosts` lists private hosts an
operator allows (`DPS_ALLOW_HOSTS`).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from stages.errors import StageFailed


@dataclass(frozen=True)
class AddressPolicy:
    allow_hosts: frozenset[str] = frozenset()  # lower-case host names or addresses
    allow_loopback: bool = True  # local runs and tests serve on 127.0.0.1


def check_host(
    url: str,
    field: str,
    policy: AddressPolicy,
    *,
    error: type[StageFailed] = StageFailed,
    what: str = "URLs",
) -> None:
    """Refuse a URL whose host resolves to a private or reserved address. An unknown host is
    left to the request itself to report."""
    host = (urlsplit(url).hostname or "").lower()
    if not host or host in policy.allow_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return
    for info in infos:
        check_address(str(info[4][0]), host, field, policy, error=error, what=what)


def check_peer(
    response: httpx.Response,
    url: str,
    field: str,
    policy: AddressPolicy,
    *,
    error: type[StageFailed] = StageFailed,
    what: str = "URLs",
) -> None:
    """The address the connection really reached, checked before a byte of the body is read:
    a name that resolved to a public address for `check_host` and to a private one for the
    connect (DNS rebinding) is refused here."""
    host = (urlsplit(url).hostname or "").lower()
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not host or host in policy.allow_hosts or not peer:
        return  # no socket to ask (a proxy or an in-memory transport): check_host stands
    check_address(str(peer[0]), host, field, policy, error=error, what=what)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix


def _embedded_ipv4(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo), if any: Python 3.11
    calls `64:ff9b::a9fe:a9fe` global although a NAT64 gateway sends it to 169.254.169.254."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return ip.teredo[1] if ip.teredo is not None else None


def check_address(
    address: str,
    host: str,
    field: str,
    policy: AddressPolicy,
    *,
    error: type[StageFailed] = StageFailed,
    what: str = "URLs",
) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    inner = _embedded_ipv4(ip)
    if inner is not None and not inner.is_global:
        ip = inner  # a translated or tunnelled IPv4 address reaches that address
    if ip.is_global or (ip.is_loopback and policy.allow_loopback):
        return
    raise error(
        f"{field}: {host} is on a private or reserved network ({ip}); {what} "
        "must be public (an operator can allow a host with DPS_ALLOW_HOSTS)"
    )
