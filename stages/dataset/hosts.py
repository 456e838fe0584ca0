"""Which hosts a dataset URL may reach: no private, link-local or metadata address (the cloud's
169.254.169.254, the datacenter's private ranges), checked for the URL and every redirect before
connecting, and again for the address the connection really reached (DNS rebinding). Loopback is
allowed unless `allow_loopback` is off (the GPU image turns it off); `allow_hosts` lists private
hosts an operator allows (`DPS_DATASET_ALLOW_HOSTS`)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from stages.dataset.limits import DownloadLimits
from stages.errors import DownloadFailed


def check_host(url: str, field: str, limits: DownloadLimits) -> None:
    """Refuse hosts on private networks: a dataset URL (or a redirect) must not make the worker
    reach the cloud's metadata service (169.254.169.254) or the datacenter's private ranges.
    Loopback is allowed unless `allow_loopback` is off (the GPU image turns it off).
    `DPS_DATASET_ALLOW_HOSTS` lists private hosts to allow."""
    host = (urlsplit(url).hostname or "").lower()
    if not host or host in limits.allow_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return  # the request itself reports the unknown host
    for info in infos:
        check_address(str(info[4][0]), host, field, limits)


def check_peer(response: httpx.Response, url: str, field: str, limits: DownloadLimits) -> None:
    """The address the connection really reached, checked before a byte of the body is read:
    a name that resolved to a public address for _check_host and to a private one for the
    connect (DNS rebinding) is refused here."""
    host = (urlsplit(url).hostname or "").lower()
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not host or host in limits.allow_hosts or not peer:
        return  # no socket to ask (a proxy or an in-memory transport): _check_host stands
    check_address(str(peer[0]), host, field, limits)


def check_address(address: str, host: str, field: str, limits: DownloadLimits) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_global or (ip.is_loopback and limits.allow_loopback):
        return
    raise DownloadFailed(
        f"{field}: {host} is on a private or reserved network ({ip}); dataset URLs "
        "must be public (an operator can allow a host with DPS_DATASET_ALLOW_HOSTS)"
    )
