from pathlib import Path

import pytest

from lxcforge import domain
from tests.golden import assert_golden

SPEC = domain.ContainerSpec(
    name="web1",
    uuid="8b1d3c36-4a6e-4d2b-9a53-2f3d2c7f0c11",
    rootfs=Path("/var/lib/lxcforge/containers/web1"),
    network="default",
    mac="02:4c:46:aa:bb:cc",
    memory_bytes=512 * 1024**2,
    cpus=1.5,
    base="fedora-39",
    created="2026-11-22T10:00:00Z",
    store="/var/lib/lxcforge",
    ip="192.168.122.10",
)


def test_domain_xml_golden() -> None:
    assert_golden("domain-web1.xml", domain.domain_xml(SPEC))


def test_metadata_round_trip() -> None:
    meta = domain.read_metadata(domain.domain_xml(SPEC))
    assert meta == domain.Metadata(base="fedora-39", created="2026-11-22T10:00:00Z",
                                   store="/var/lib/lxcforge", network="default",
                                   ip="192.168.122.10", mac="02:4c:46:aa:bb:cc")


def test_foreign_domain_has_no_metadata() -> None:
    assert domain.read_metadata("<domain type='lxc'><name>x</name></domain>") is None


def test_memory_limit_read_back() -> None:
    assert domain.memory_limit_bytes(domain.domain_xml(SPEC)) == 512 * 1024**2


@pytest.mark.parametrize("text,expected", [("512M", 512 * 1024**2), ("2G", 2 * 1024**3),
                                           ("1.5GiB", int(1.5 * 1024**3)), ("4096", 4096)])
def test_parse_size(text: str, expected: int) -> None:
    assert domain.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        domain.parse_size(text)
