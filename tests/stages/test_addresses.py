"""The one address policy: every spelling of a private or metadata address is refused, however
it is wrapped (IPv4-mapped, NAT64, 6to4, Teredo), and public ones pass."""

from __future__ import annotations

import pytest

from stages.addresses import AddressPolicy, check_address, check_host
from stages.errors import StageFailed

OPEN = AddressPolicy(allow_loopback=True)
STRICT = AddressPolicy(allow_loopback=False)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # the cloud's metadata service
        "10.0.0.1",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "fd00::1",
        "fe80::1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254: Python 3.11 calls it global
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:56fe:5601",  # Teredo, whatever it carries
    ],
)
def test_private_and_metadata_addresses_are_refused_in_every_wrapping(address: str) -> None:
    with pytest.raises(StageFailed, match=r"output\.s3\.endpoint_url: .* private or reserved"):
        check_address(address, "h.example", "output.s3.endpoint_url", OPEN)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_pass_however_they_are_spelt(address: str) -> None:
    check_address(address, "h.example", "dataset.images_url", STRICT)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"])
def test_loopback_follows_the_operators_switch_in_every_wrapping(address: str) -> None:
    check_address(address, "h", "dataset.images_url", OPEN)
    with pytest.raises(StageFailed, match="private or reserved"):
        check_address(address, "h", "dataset.images_url", STRICT)


def test_an_allowed_host_is_not_resolved_or_refused() -> None:
    policy = AddressPolicy(allow_hosts=frozenset({"10.0.0.7"}), allow_loopback=False)
    check_host("http://10.0.0.7/d.zip", "dataset.images_url", policy)
    with pytest.raises(StageFailed, match=r"10\.0\.0\.8"):
        check_host("http://10.0.0.8/d.zip", "dataset.images_url", policy)
