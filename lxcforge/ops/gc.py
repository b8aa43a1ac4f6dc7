"""`lxcforge gc`: the reconciler. Finds what interrupted commands left behind and removes it.

A container's state lives in several places; each piece can be traced to its container and
to this store, so gc tells "mine and orphaned" from "someone else's":
  - the domain: lxcforge's metadata names the store;
  - the subvolume: under this store's containers/;
  - the DHCP reservation, the file in dnsmasq's hosts directory and the lease: their MAC is
    derived from this store's path and the container's name (network.owned_by);
  - lock files and build leftovers: under this store's locks/ and tmp/;
  - libvirt's NAME.* files in /run/libvirt/lxc: only for names no domain has.
A name some lxcforge is working on holds its lock: gc leaves it alone."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from lxcforge import cgroups, dhcp, domain, host, network, store
from lxcforge.config import Settings
from lxcforge.errors import HostNotReady, InUse, LxcforgeError
from lxcforge.ops import addresses, repair
from lxcforge.ops import container as container_ops
from lxcforge.run import run
from lxcforge.store import Store, StoreState
from lxcforge.virt import DomainInfo, Virt

log = logging.getLogger(__name__)

RUN_SUFFIXES = (".dev", ".devpts", ".fuse", ".sock", ".pid", ".xml", ".xml.new")
LIBVIRT_OWN = {"driver"}  # /run/libvirt/lxc/driver.pid is the LXC driver's own


@dataclass(frozen=True)
class Item:
    # unfinished | domain | subvolume | reservation | hostsfile | dnsmasq note | lease | lock | tmp | rundir
    # | veth | cgroup | unmanaged
    kind: str
    what: str
    detail: str = ""


@dataclass
class Report:
    dry_run: bool
    items: list[Item] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.kind] = counts.get(item.kind, 0) + 1
        return counts


class _Sweep:
    def __init__(self, settings: Settings, pool: Store, virt: Virt, dry_run: bool) -> None:
        self.settings, self.pool, self.virt = settings, pool, virt
        self.owner = str(settings.store)
        self.report = Report(dry_run=dry_run)
        self.gone: set[str] = set()  # names with no domain that left something behind

    def found(self, item: Item, fix: Callable[[], object], lock_name: str | None = None,
              still: Callable[[], bool] = lambda: True) -> None:
        """Record an orphan and, unless this is a dry run, remove it: under the name's lock
        when it belongs to a container name (skipped if some lxcforge holds it), and only if
        still() says, under that lock, that it is an orphan yet (what was seen before the lock
        may have been a command at work that has finished since)."""
        if self.report.dry_run:
            # A name some lxcforge works on is its business, not a leftover.
            if lock_name is None or not container_ops.at_work(self.pool, lock_name):
                self.report.items.append(item)
            return
        try:
            with (container_ops.name_lock(self.pool, lock_name) if lock_name is not None
                  else contextlib.nullcontext()):
                if not still():
                    return
                fix()
        except InUse:
            log.info("skipped %s %s: in use", item.kind, item.what)
            return
        except (LxcforgeError, OSError) as exc:
            self.report.errors.append(f"{item.kind} {item.what}: {exc}")
            return
        self.report.items.append(item)


def collect(settings: Settings, *, dry_run: bool = False) -> Report:
    """Find every orphan of this store and, unless dry_run, remove it (and repair running
    containers libvirt lost the init pid of)."""
    started = time.monotonic()
    pool = Store.from_settings(settings)
    if dry_run:
        if pool.status().state is not StoreState.READY:
            raise HostNotReady(f"store {settings.store} is not attached",
                               hint="run 'lxcforge store attach' (or gc without --dry-run, which attaches it)")
    else:
        pool.ensure(clean_tmp=False)
    with Virt(settings.uri) as virt:
        sweep = _Sweep(settings, pool, virt, dry_run)
        unfinished = _unfinished(sweep)
        domains = virt.domains()
        # Any domain's name is alive, whichever store or tool made it: gc never takes a
        # piece of a name that has one (only the domains of an unfinished operation of this
        # store's go, above).
        defined = {d.name for d in domains}
        mine = {}
        for dom in domains:
            meta = domain.read_metadata(dom.xml)
            if dom.name not in unfinished and meta is not None and meta.store == sweep.owner:
                mine[dom.name] = (dom, meta)
        _domains_without_subvolume(sweep, mine)
        _subvolumes_without_domain(sweep, defined | unfinished)
        _reservations(sweep, defined | unfinished)
        _unmanaged(sweep, mine)
        _run_leftovers(sweep, defined | unfinished)
        _stray_veths(sweep, defined | unfinished)
        if not dry_run:
            for group in cgroups.stale_groups(virt.domain_uuids):
                sweep.found(Item("cgroup", str(group)), partial(_remove_cgroup, group),
                            still=partial(lambda g: not cgroups.holds_processes(g), group))
    _locks_and_tmp(sweep)
    sweep.report.seconds = time.monotonic() - started
    return sweep.report


def _remove_cgroup(group: Path) -> None:
    if not cgroups.remove_tree(group):
        raise OSError(f"not all of it could be removed (rmdir {group})")


def _unfinished(sweep: _Sweep) -> set[str]:
    """Names a killed `new` or `destroy` left half done (store.mark_pending): every piece goes."""
    names = set(sweep.pool.pending_names())
    if not names:
        return names
    sweep.gone |= names
    # One listing and one read of each network for all of them (a kill storm leaves many).
    listed = {d.name: d for d in sweep.virt.domains()}
    orphans = addresses.orphaned_reservations(sweep.virt, sweep.owner, set(listed))
    for name in sorted(names):
        sweep.found(Item("unfinished", name, "a new or destroy was killed half way"),
                    partial(container_ops.destroy, sweep.settings, name, missing_ok=True, virt=sweep.virt,
                            pool=sweep.pool, locked=True, listed=listed, orphans=orphans),
                    lock_name=name, still=partial(sweep.pool.is_pending, name))
    return names


def _domains_without_subvolume(sweep: _Sweep, mine: Mapping[str, tuple[DomainInfo, domain.Metadata]]) -> None:
    for name in sorted(mine):
        if not sweep.pool.container_path(name).exists():
            sweep.found(Item("domain", name, "its subvolume is gone"),
                        partial(_destroy_domain, sweep, name), lock_name=None)


def _destroy_domain(sweep: _Sweep, name: str) -> None:
    container_ops.destroy(sweep.settings, name, missing_ok=True, virt=sweep.virt, pool=sweep.pool)


def _no_domain(sweep: _Sweep, name: str) -> bool:
    return not sweep.virt.domain_exists(name) and not sweep.pool.is_pending(name)


def _subvolumes_without_domain(sweep: _Sweep, alive: set[str]) -> None:
    if not sweep.pool.containers.is_dir():
        return
    for path in sorted(sweep.pool.containers.iterdir()):
        if path.name not in alive:
            sweep.gone.add(path.name)
            sweep.found(Item("subvolume", str(path), "no domain"), partial(store.delete_tree, path),
                        lock_name=path.name, still=partial(_no_domain, sweep, path.name))


def _reservations(sweep: _Sweep, alive: set[str]) -> None:
    """This store's reservations, hosts files and leases whose container is gone."""
    for net in sweep.virt.networks():
        info = sweep.virt.network(net)
        if info is None:
            continue
        plan = network.parse_network_xml(info.xml)
        orphans = [h for h in plan.hosts
                   if h.name and h.name not in alive and network.owned_by(h.mac, h.name, sweep.owner)]
        for entry in orphans:
            sweep.gone.add(str(entry.name))
            sweep.found(Item("reservation", f"{entry.name} {entry.ip} on {net}", entry.mac),
                        partial(addresses.drop_addresses, sweep.virt, net, [entry]), lock_name=entry.name,
                        still=partial(_no_domain, sweep, str(entry.name)))
        reserved = {h.mac for h in plan.hosts} - {e.mac for e in orphans}
        if plan.hostsdir:
            for mac, name in dhcp.published(plan.hostsdir):
                if mac not in reserved and name and name not in alive and network.owned_by(mac, name, sweep.owner):
                    sweep.found(Item("hostsfile", f"{name} on {net}", mac),
                                partial(_withdraw, net, plan.hostsdir, mac), lock_name=name,
                                still=partial(_unreserved, sweep, net, mac, name))
            # Notes of withdrawn entries (dhcp.withdraw) that dnsmasq has forgotten since.
            void = dhcp.void_notes(plan.hostsdir, net)
            if void:
                sweep.found(Item("dnsmasq note", f"{len(void)} withdrawn on {net}", "dnsmasq restarted since"),
                            partial(_forget_void, net, plan.hostsdir))
        if info.active and info.bridge and plan.gateway is not None:
            for lease in sweep.virt.leases(net):
                name = lease.hostname
                if (lease.mac not in reserved and name and name not in alive
                        and network.owned_by(lease.mac, name, sweep.owner)):
                    sweep.found(Item("lease", f"{name} {lease.ip} on {net}", lease.mac),
                                partial(dhcp.release_lease, info.bridge, str(plan.gateway.ip),
                                        network.DhcpHost(lease.mac, lease.ip), lease.client_id), lock_name=name,
                                still=partial(_unreserved, sweep, net, lease.mac, name))


def _unreserved(sweep: _Sweep, net: str, mac: str, name: str) -> bool:
    """Under the name's lock: no domain, and no reservation of the MAC (read again)."""
    info = sweep.virt.network(net)
    return (_no_domain(sweep, name) and info is not None
            and mac not in {h.mac for h in network.parse_network_xml(info.xml).hosts})


def _withdraw(net: str, hostsdir: str, mac: str) -> None:
    with dhcp.network_lock(net):
        dhcp.withdraw(hostsdir, mac)


def _forget_void(net: str, hostsdir: str) -> None:
    with dhcp.network_lock(net):
        for note in dhcp.void_notes(hostsdir, net):
            note.unlink(missing_ok=True)


def _unmanaged(sweep: _Sweep, mine: Mapping[str, tuple[DomainInfo, domain.Metadata]]) -> None:
    managed = repair.managed_running(sweep.virt)
    for name in sorted(mine):
        if managed.get(name, True) is False:
            sweep.found(Item("unmanaged", name, repair.UNMANAGED), partial(repair.repair, sweep.virt, name),
                        lock_name=name, still=partial(_unmanaged_yet, sweep, name))


def _unmanaged_yet(sweep: _Sweep, name: str) -> bool:
    return repair.is_managed(sweep.virt, name) is False


def _run_leftovers(sweep: _Sweep, defined: set[str]) -> None:
    """libvirt's NAME.dev/.devpts/.fuse/.sock/.pid for names that no domain has any more (a
    libvirtd killed while it started a container also leaves that container's controller,
    and its status file NAME.xml, or NAME.xml.new if killed while rewriting it)."""
    try:
        entries = list(host.LIBVIRT_LXC_STATE.iterdir())
    except OSError:
        return
    leftover: set[str] = set()
    for entry in entries:
        for suffix in RUN_SUFFIXES:
            name = entry.name[: -len(suffix)]
            if entry.name.endswith(suffix) and name not in defined and name not in LIBVIRT_OWN:
                leftover.add(name)
    sweep.gone |= leftover
    for name in sorted(leftover):
        # Under the name's lock and looked up again: a container being started has these too.
        sweep.found(Item("rundir", f"{host.LIBVIRT_LXC_STATE}/{name}.*"), partial(_remove_run_leftovers, name),
                    lock_name=name, still=partial(_no_domain, sweep, name))


def _remove_run_leftovers(name: str) -> None:
    controller = host.lxc_controller_pid(name)
    if controller is not None:
        # A controller whose domain is gone runs a container nobody can manage: end both.
        for pid in [*host.children(controller), controller]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    container_ops.remove_run_leftovers(name)


def _stray_veths(sweep: _Sweep, defined: set[str]) -> None:
    """The container end of a veth pair left in the host's namespace (by a libvirtd killed
    while it started a container): it carries the container's MAC, so it is traced like a
    reservation, and only for names no domain has."""
    for ifname, mac in host.interfaces_with_mac_prefix(network.MAC_PREFIX):
        owner = next((n for n in sorted(sweep.gone - defined) if network.owned_by(mac, n, sweep.owner)), None)
        if owner is not None:
            sweep.found(Item("veth", f"{ifname} of {owner}", mac), partial(run, ["ip", "link", "delete", ifname]),
                        lock_name=owner, still=partial(_no_domain, sweep, owner))


def _locks_and_tmp(sweep: _Sweep) -> None:
    pool = sweep.pool
    if pool.tmp.is_dir():
        stale_tmp = pool.stale_tmp()
        for entry in stale_tmp:
            sweep.found(Item("tmp", str(entry), "left by a killed build"), partial(pool.remove_tmp, entry))
    # Containers are snapshots of their own: a base's shifted copy serves only future ones.
    for entry in pool.stale_shifted():
        sweep.found(Item("shifted base", str(entry), "its base was removed or rebuilt"),
                    partial(store.delete_subvolume, entry))
    if pool.locks.is_dir():
        for path in pool.stale_locks():
            sweep.found(Item("lock", str(path)), partial(pool.remove_stale_lock, path))
