"""Containers' MACs on systemd hosts.

systemd-udevd gives every new network device the MAC its .link files ask for; the default
(99-default.link, MACAddressPolicy=persistent) replaces the one libvirt set on a container's
veth when udev's "add" event is handled after libvirt set it. The container then asks DHCP
from a MAC nobody reserved, takes a random address, and `new` waits for a lease that never
comes: seen on Debian 12 (systemd 252) for 3 of 20 containers started together. A .link
file of lxcforge's, read before the default, keeps veth MACs as they are created."""

from __future__ import annotations

from pathlib import Path

from lxcforge.run import run

LINK = Path("/etc/systemd/network/10-lxcforge-veth.link")
LINK_TEXT = """\
# lxcforge: keep the MAC libvirt gives a container's veth (udev's default, persistent, would
# replace it, and the container's DHCP reservation would miss). See lxcforge/vethmac.py.
[Match]
Driver=veth

[Link]
MACAddressPolicy=none
"""
SYSTEMD_RUNNING = Path("/run/systemd/system")
UDEV_CONTROL = Path("/run/udev/control")


def applies(systemd: Path = SYSTEMD_RUNNING, udev: Path = UDEV_CONTROL) -> bool:
    """Whether udev runs here (a systemd host) and so may rewrite veth MACs."""
    return systemd.is_dir() and udev.exists()


def missing(link: Path = LINK) -> bool:
    try:
        return link.read_text() != LINK_TEXT
    except OSError:
        return True


def install(link: Path = LINK) -> bool:
    """Write the .link file and have udev read it; False when it was there already."""
    if not missing(link):
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(LINK_TEXT)
    run(["udevadm", "control", "--reload"], check=False)
    return True
