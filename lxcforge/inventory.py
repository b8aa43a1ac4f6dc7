"""lxcforge's containers as an Ansible inventory: the JSON form of Ansible's YAML inventory
plugin (ansible -i FILE reads it as it is), each container reached through libvirt's LXC
connection (community.libvirt.libvirt_lxc, which enters it the way `virsh lxc-enter-namespace`
does), grouped by base, network and state. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lxcforge.ops.container import Container

CONNECTION = "community.libvirt.libvirt_lxc"


def group_name(kind: str, value: str) -> str:
    """Ansible's group names are identifiers: base_debian_bookworm, network_default."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_]', '_', value)}"


def ansible(containers: Sequence[Container]) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for c in sorted(containers, key=lambda c: c.name):
        # The LXC connection takes ansible_host as the domain's name, not an address.
        hosts[c.name] = {"ansible_host": c.name, "ansible_connection": CONNECTION,
                         "lxcforge_ipv4": c.ipv4, "lxcforge_base": c.base, "lxcforge_network": c.network,
                         "lxcforge_state": c.state}
        for kind, value in (("base", c.base), ("network", c.network), ("state", c.state)):
            if value:
                groups.setdefault(group_name(kind, value), {"hosts": {}})["hosts"][c.name] = {}
    return {"all": {"hosts": hosts, "children": dict(sorted(groups.items()))}}
