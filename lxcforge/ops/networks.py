"""`lxcforge network`: libvirt networks for containers, beyond the 253 hosts of 'default'."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lxcforge import dhcp, domain, host, names, network
from lxcforge.config import Settings
from lxcforge.errors import AlreadyExists, InUse, LxcforgeError, NotFound
from lxcforge.ops import addresses
from lxcforge.virt import DomainInfo, Virt


@dataclass(frozen=True)
class NetworkSummary:
    name: str
    active: bool
    bridge: str | None
    subnet: str | None
    forward: str | None
    addresses: int
    reserved: int
    free: int
    containers: list[str]
    # Reservations this store made whose container is gone (a killed lxcforge): 'lxcforge gc'.
    orphaned: int = 0


def create(settings: Settings, name: str, subnet: str, *, isolated: bool = False) -> NetworkSummary:
    names.validate_network_name(name)
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise LxcforgeError(f"invalid subnet {subnet!r}: {exc}", hint="e.g. --subnet 10.40.0.0/22") from exc
    if not net.is_private:
        raise LxcforgeError(f"{subnet} is not a private range", hint="use 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16")
    try:
        xml = network.network_xml(name, str(net), isolated=isolated)
    except ValueError as exc:
        raise LxcforgeError(str(exc), hint="use a /29 or larger") from exc
    with Virt(settings.uri) as virt:
        if virt.network(name) is not None:
            raise AlreadyExists(f"network {name} already exists", hint="choose another name")
        for other in virt.networks():
            info = virt.network(other)
            plan = network.parse_network_xml(info.xml) if info else None
            if plan and plan.gateway and plan.gateway.network.overlaps(net):
                raise AlreadyExists(f"{subnet} overlaps network {other} ({plan.gateway.network})",
                                    hint="choose another subnet")
        dhcp.ensure_hostsdir(network.hostsdir_for(name))
        virt.define_network(xml, start=True, autostart=True)
        return _summary(virt, settings, name)


def adopt(settings: Settings, name: str) -> NetworkSummary:
    """Give an existing libvirt network (such as 'default') lxcforge's hosts directory and STP
    off. Restarting a network cuts off whatever is attached to its bridge, so that is
    refused while anything is. Idempotent."""
    with Virt(settings.uri) as virt:
        info = virt.network(name)
        if info is None:
            raise NotFound(f"network {name} does not exist", hint="see 'lxcforge network list'")
        if not network.is_adopted(info.xml):
            adopted = network.adopted_network_xml(info.xml)
            plan = network.parse_network_xml(adopted)
            attached = host.bridge_ports(info.bridge) if info.active else 0
            if attached:
                raise InUse(f"{attached} interface(s) are attached to {info.bridge}: restarting network {name} "
                            "would cut them off", hint="stop those containers and guests first, then run this again")
            assert plan.hostsdir is not None
            dhcp.ensure_hostsdir(plan.hostsdir)
            virt.redefine_network(adopted)
        return _summary(virt, settings, name)


def _containers_on(domains: list[DomainInfo], name: str) -> list[str]:
    users = []
    for dom in domains:
        meta = domain.read_metadata(dom.xml)
        if meta is not None and meta.network == name:
            users.append(dom.name)
    return users


def _summary(virt: Virt, settings: Settings, name: str, domains: list[DomainInfo] | None = None) -> NetworkSummary:
    info = virt.network(name)
    if info is None:
        raise NotFound(f"network {name} does not exist", hint="see 'lxcforge network list'")
    plan = network.parse_network_xml(info.xml)
    leased = addresses.leased_elsewhere(virt, plan) if info.active else []
    domains = domains if domains is not None else virt.domains()
    defined = {d.name for d in domains}
    orphaned = sum(1 for h in plan.hosts
                   if h.name and h.name not in defined and network.owned_by(h.mac, h.name, str(settings.store)))
    return NetworkSummary(
        name=name, active=info.active, bridge=info.bridge,
        subnet=str(plan.gateway.network) if plan.gateway else None, forward=plan.forward or "isolated",
        addresses=plan.range_size(), reserved=len(plan.hosts), free=len(network.free_addresses(plan, leased)),
        containers=sorted(_containers_on(domains, name)), orphaned=orphaned,
    )


def list_networks(settings: Settings) -> list[NetworkSummary]:
    with Virt(settings.uri) as virt:
        domains = virt.domains()
        return [_summary(virt, settings, name, domains) for name in virt.networks()]


def remove(settings: Settings, name: str) -> None:
    with Virt(settings.uri) as virt:
        summary = _summary(virt, settings, name)
        if summary.containers:
            shown = ", ".join(summary.containers[:10]) + (" ..." if len(summary.containers) > 10 else "")
            raise InUse(f"network {name} is used by {len(summary.containers)} container(s): {shown}",
                        hint="destroy them first")
        virt.remove_network(name)
        dhcp.remove_hostsdir(network.hostsdir_for(name))
