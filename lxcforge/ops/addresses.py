"""Addresses for containers: reservations on a network, made for a batch in one short
critical section and dropped together with their leases."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import replace

from lxcforge import dhcp, faults, network
from lxcforge.errors import AlreadyExists, CapacityError, HostNotReady, LxcforgeError, NotFound
from lxcforge.store import Store
from lxcforge.virt import NetworkInfo, Virt

log = logging.getLogger(__name__)

ADDRESS_LOCK = "addresses"


def active_network(virt: Virt, name: str) -> NetworkInfo:
    info = virt.network(name)
    if info is None:
        raise NotFound(f"network {name} does not exist",
                       hint="pick one with --network (see 'virsh -c lxc:/// net-list --all')")
    if not info.active:
        raise HostNotReady(f"network {name} is not active",
                           hint=f"virsh -c lxc:/// net-start {name}")
    return info


def network_plan(virt: Virt, name: str) -> network.NetworkPlan:
    return network.parse_network_xml(active_network(virt, name).xml)


def leased_elsewhere(virt: Virt, plan: network.NetworkPlan) -> list[str]:
    """Addresses dnsmasq still leases to MACs without a reservation: dnsmasq will not hand
    those out again until the lease expires, so a new reservation must avoid them."""
    reserved = {h.mac for h in plan.hosts}
    return [lease.ip for lease in virt.leases(plan.name) if lease.mac not in reserved]


class AddressHeld(CapacityError):
    """Only addresses dnsmasq still holds for withdrawn reservations would do (dhcp.held)."""


def choose_address(plan: network.NetworkPlan, name: str, requested_ip: str | None,
                   leased: list[str], owner: str, held: Sequence[network.DhcpHost] = ()) -> network.DhcpHost:
    """A MAC and an address for name on plan's network. leased: addresses dnsmasq still
    leases to MACs without a reservation (see leased_elsewhere). owner: the store's path, in
    the MAC (see network.mac_for). held: entries dnsmasq still holds for withdrawn
    reservations (dhcp.held): their addresses and MACs are left alone, except that a
    container of the same name and store takes its own back, the very entry dnsmasq holds."""
    live_macs = {h.mac for h in plan.hosts}
    taken = {h.ip for h in plan.hosts} | set(leased)
    own = next((h for h in held if h.name == name and network.owned_by(h.mac, name, owner)
                and h.mac not in live_macs and h.ip not in taken and requested_ip in (None, h.ip)), None)
    if own is not None:
        return network.DhcpHost(own.mac, own.ip, name)
    # Unique among the network's reservations: every lxcforge container on it has one, and a
    # MAC only has to be unique on its own bridge.
    mac = network.unique_mac(name, [*live_macs, *(h.mac for h in held)], owner)
    held_ips = [h.ip for h in held]
    if requested_ip:
        if not plan.in_range(requested_ip):
            ranges = ", ".join(f"{a}-{b}" for a, b in plan.ranges)
            raise LxcforgeError(f"address {requested_ip} is outside network {plan.name}'s DHCP range ({ranges})",
                                hint="pick an address in the range, or leave out --ip")
        holder = next((h.name or h.mac for h in plan.hosts if h.ip == requested_ip), None)
        if holder or requested_ip in leased:
            raise AlreadyExists(f"address {requested_ip} is already taken on {plan.name}"
                                + (f" (by {holder})" if holder else " (leased)"),
                                hint="pick another address, or leave out --ip")
        if requested_ip in held_ips:
            raise AddressHeld(f"address {requested_ip} is still held by dnsmasq on {plan.name}",
                              hint="it is freed when dnsmasq reloads")
        return network.DhcpHost(mac, requested_ip, name)
    ip = network.pick_address(plan, [*leased, *held_ips])
    if ip is None:
        if held:
            raise AddressHeld(f"network {plan.name} has free addresses only among those dnsmasq still holds",
                              hint="they are freed when dnsmasq reloads")
        raise CapacityError(f"network {plan.name} has no free address ({plan.range_size()} in its range)",
                            hint="destroy unused containers or use a larger network (--network)")
    return network.DhcpHost(mac, ip, name)


Reservation = tuple[network.DhcpHost, ipaddress.IPv4Interface | None]


def reserve_addresses(virt: Virt, pool: Store, wanted: Sequence[tuple[str, str]],
                      requested_ip: str | None = None) -> dict[str, Reservation]:
    """Reserve an address for each (name, network) under the one address lock and each
    network's lock (dhcp.network_lock, taken in order), reading each network once and
    writing each network's definition once: allocation is the serial part of making
    containers, so it is one short critical section for a whole batch rather than one per
    container. The caller holds the names' locks and has reclaimed their orphans
    (reclaim_orphans)."""
    reserved: dict[str, Reservation] = {}
    owner = str(pool.root)
    nets = sorted({net for _name, net in wanted})
    with pool.lock(ADDRESS_LOCK), contextlib.ExitStack() as locks:
        for net in nets:
            locks.enter_context(dhcp.network_lock(net))
        try:
            for net in nets:
                names = [name for name, wanted_net in wanted if wanted_net == net]
                info = active_network(virt, net)
                plan = network.parse_network_xml(info.xml)
                leased = leased_elsewhere(virt, plan)
                held = dhcp.held(plan.hostsdir, net)
                entries = []
                for name in names:
                    try:
                        entry = choose_address(plan, name, requested_ip, leased, owner, held)
                    except AddressHeld:
                        # Only what dnsmasq holds for destroyed containers would do: one reload frees it all.
                        dhcp.forget(net, str(plan.hostsdir))
                        held = []
                        entry = choose_address(plan, name, requested_ip, leased, owner)
                    plan = replace(plan, hosts=(*plan.hosts, entry))
                    entries.append(entry)
                    reserved[name] = (entry, plan.gateway)  # from here on, a failure drops it
                _reserve(virt, info, plan, entries)
        except BaseException:
            network_of = dict(wanted)
            drop_reservations(virt, [(network_of[name], entry) for name, (entry, _gw) in reserved.items()],
                              locked=True)
            raise
    return {name: reserved[name] for name, _net in wanted}


def _reserve(virt: Virt, info: NetworkInfo, plan: network.NetworkPlan, entries: Sequence[network.DhcpHost]) -> None:
    """Static DHCP reservations: always in the network's persistent definition (the truth
    `virsh net-dumpxml --inactive` shows; one definition for the batch); made live through
    dnsmasq's watched hosts directory on lxcforge's networks, or through libvirt's live
    update, one at a time, elsewhere."""
    if not plan.hostsdir or not info.persistent:
        for entry in entries:
            virt.add_dhcp_host(plan.name, network.dhcp_host_xml(entry))
            faults.point("new.reserved")
        return
    # Written over the copy read moments ago under the network's lock, which every lxcforge
    # writer takes (another tool's update in between would be undone: libvirt offers no
    # compare-and-swap, and a second read narrowed that window only by a few ms at the cost
    # of a read of a thousand-host definition on every container's path).
    virt.define_network_config(network.xml_with_hosts(info.xml, entries))
    faults.point("new.hostsfile")  # once per network and batch
    for entry in entries:
        dhcp.publish(plan.hostsdir, entry)
        faults.point("new.reserved")


def by_network(pairs: Sequence[tuple[str, network.DhcpHost]]) -> dict[str, list[network.DhcpHost]]:
    """(network, reservation) pairs grouped by network: each network is read once for all
    of its reservations (drop_addresses)."""
    grouped: dict[str, list[network.DhcpHost]] = {}
    for net, entry in pairs:
        grouped.setdefault(net, []).append(entry)
    return grouped


def drop_reservations(virt: Virt, reservations: Sequence[tuple[str, network.DhcpHost]], *,
                      locked: bool = False) -> None:
    """Drop (network, reservation) pairs, one batch per network, warning instead of raising:
    for cleaning up after something else already failed. locked: the caller holds the
    networks' locks (reserve_addresses)."""
    for net, entries in by_network(reservations).items():
        try:
            drop_addresses(virt, net, entries, locked=locked)
        except LxcforgeError as exc:
            log.warning("could not drop the reservations of %s: %s",
                        ", ".join(e.name or e.ip for e in entries), exc)


def drop_address(virt: Virt, net: str, entry: network.DhcpHost) -> None:
    drop_addresses(virt, net, [entry])


def drop_addresses(virt: Virt, net: str, entries: Sequence[network.DhcpHost], *, locked: bool = False) -> None:
    """End the leases (with the client id each client used, or dnsmasq ignores the
    release), then remove the reservations, under the network's lock (unless locked: the
    caller holds it); one read of the network and its leases however many, and no dnsmasq
    reload (see dhcp.withdraw)."""
    with contextlib.nullcontext() if locked else dhcp.network_lock(net):
        _drop_addresses(virt, net, entries)


def _drop_addresses(virt: Virt, net: str, entries: Sequence[network.DhcpHost]) -> None:
    info = virt.network(net)
    if info is None or not entries:
        return
    plan = network.parse_network_xml(info.xml)
    macs = {e.mac for e in entries}
    if info.active and info.bridge and plan.gateway is not None:
        listed = {lease.mac: lease for lease in virt.leases(net, macs=macs)}
        releases = [(network.DhcpHost(lease.mac, lease.ip), lease.client_id) for lease in listed.values()]
        # A lease dnsmasq granted just before the container was killed may not be in the
        # status file yet (its helper writes it after): released by MAC alone, which
        # dnsmasq matches without a client id (and ignores where it holds no such lease).
        releases += [(network.DhcpHost(e.mac, e.ip), None) for e in entries if e.mac not in listed]
        # dnsmasq ends them at once; libvirt's lease table (the status file its helper
        # rewrites, one lease event at a time) follows within moments. Not waited for: ~20 ms
        # per lease, sequential, would double a batch destroy.
        dhcp.release_leases(info.bridge, str(plan.gateway.ip), releases)
    # Noted as held before the definition says the address is free.
    if plan.hostsdir:
        for mac in macs:
            dhcp.withdraw(plan.hostsdir, mac)
    # With a hosts directory reservations are config-only, except those the running network
    # was started with (a restart since, or an adopted network): libvirt's own hosts file
    # holds those, so they go through the live update too, or dnsmasq would keep them.
    started_with: set[str] = set()
    if plan.hostsdir and info.active:
        started_with = {h.mac for h in network.parse_network_xml(virt.live_network_xml(net)).hosts}
    config_only = []
    updated = False
    for existing in plan.hosts:
        if existing.mac not in macs:
            continue
        if plan.hostsdir and info.persistent and existing.mac not in started_with:
            config_only.append(existing.mac)
        else:
            virt.remove_dhcp_host(net, network.dhcp_host_xml(existing), live=not plan.hostsdir or
                                  existing.mac in started_with)
            updated = True
    if config_only:
        # One definition for the batch; read again only where the live updates above changed
        # it (with a thousand reservations, each read is a large definition through libvirtd).
        current = virt.network(net) if updated else info
        if current is not None:
            virt.define_network_config(network.xml_with_hosts(current.xml, remove_macs=config_only))


def orphaned_reservations(virt: Virt, owner: str, domains: set[str],
                          nets: Sequence[str] | None = None) -> dict[str, list[tuple[str, network.DhcpHost]]]:
    """Reservations this store made (its MACs, see network.owned_by) for names that have no
    domain, by name: left by a killed `new` or `destroy`. Other stores' and other tools'
    entries are never among them. One read per network."""
    found: dict[str, list[tuple[str, network.DhcpHost]]] = {}
    for net in nets if nets is not None else virt.networks():
        info = virt.network(net)
        if info is None:
            continue
        for entry in network.parse_network_xml(info.xml).hosts:
            if entry.name and entry.name not in domains and network.owned_by(entry.mac, entry.name, owner):
                found.setdefault(entry.name, []).append((net, entry))
    return found


def reservation_holder(plan: network.NetworkPlan, name: str) -> network.DhcpHost | None:
    """A reservation on plan's network already named name (libvirt refuses a second)."""
    return next((h for h in plan.hosts if h.name == name), None)
