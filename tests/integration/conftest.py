"""Fixtures that make real things (loop pools, networks, domains) and always remove them."""

from __future__ import annotations

import ipaddress
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxcforge import network
from lxcforge.errors import LxcforgeError
from lxcforge.store import Store, create_subvolume
from lxcforge.virt import Virt

BUSYBOX = Path("/bin/busybox")


@pytest.fixture
def virt() -> Iterator[Virt]:
    with Virt("lxc:///") as connection:
        yield connection


@pytest.fixture
def loop_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh loop-file btrfs pool in a temporary place; unmounted and deleted afterwards."""
    pool = Store(tmp_path / "store", tmp_path / "store.img", "2G")
    try:
        yield pool.ensure()
    finally:
        subprocess.run(["umount", "-l", str(pool.root)], capture_output=True)
        pool.pool_image.unlink(missing_ok=True)


def _routed_subnets() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    nets = []
    for line in out.splitlines():
        first = line.split()[0]
        if first != "default":
            nets.append(ipaddress.IPv4Network(first, strict=False))
    return nets


@pytest.fixture
def test_network(virt: Virt, unique: str) -> Iterator[str]:
    """An isolated network (no forwarding: nothing leaves this host) on an unused subnet."""
    name = f"lxft-{unique}"
    used = _routed_subnets()
    for _ in range(20):
        subnet = ipaddress.IPv4Network(f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24")
        if not any(subnet.overlaps(u) for u in used):
            break
    virt.define_network(network.network_xml(name, str(subnet), isolated=True))
    try:
        yield name
    finally:
        try:
            virt.remove_network(name)
        except LxcforgeError:
            pass


@pytest.fixture
def busybox_base(loop_store: Store, unique: str) -> Path:
    """A minimal rootfs: a static busybox and the directories libvirt mounts over."""
    base = loop_store.base_path(f"busybox-{unique}")
    create_subvolume(base)
    for sub in ("bin", "dev", "proc", "sys", "etc", "tmp"):
        (base / sub).mkdir()
    shutil.copy2(BUSYBOX, base / "bin" / "busybox")
    (base / "bin" / "sh").symlink_to("busybox")
    return base


@pytest.fixture
def domains(virt: Virt) -> Iterator[list[str]]:
    """Names appended here are destroyed and undefined at teardown, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            virt.destroy(name)
        except LxcforgeError:
            pass
        try:
            virt.undefine(name)
        except LxcforgeError:
            pass
