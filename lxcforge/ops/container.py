"""Container lifecycle: new, list, info, start, stop, restart, destroy, console, exec.

A container is a libvirt LXC domain (with lxcforge metadata), a writable snapshot of a base
under containers/NAME, and a static DHCP host entry on its network. `new` records each step
and undoes all of them if a later one fails."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lxcforge import cgroups, domain, faults, host, names, store
from lxcforge import enter as enter_mod
from lxcforge.config import Settings
from lxcforge.errors import AlreadyExists, HostNotReady, LxcforgeError, NotFound
from lxcforge.ops import repair
from lxcforge.run import run, which
from lxcforge.store import Store, StoreState
from lxcforge.undo import Undo
from lxcforge.virt import DomainInfo, Virt

# network, idmap, ops.addresses and the rootfs modules are imported by the functions that
# use them (new, start, destroy, exec -u): list, info and exec start on every call.
if TYPE_CHECKING:
    from lxcforge import network

log = logging.getLogger(__name__)

# systemd's request for a clean shutdown; libvirt's own shutdown sends SIGTERM, which
# systemd as PID 1 ignores.
SHUTDOWN_SIGNAL = signal.SIGRTMIN + 3
# The state `list` shows for what an interrupted lxcforge left of a container.
HALF_MADE = "half-made (lxcforge gc)"


@dataclass(frozen=True)
class NewOptions:
    base: str | None = None
    network: str | None = None
    memory: str = "512M"
    cpus: float | None = None
    ip: str | None = None
    ssh_key: str | None = None
    start: bool = True
    wait: bool = True
    timeout: float = 60.0
    keep_failed: bool = False
    static_ip: bool = False  # write the address into the guest too: no DHCP round trip at boot
    autostart: bool = False  # start at boot (lxcforge boot)
    # A user namespace: the container's ids 0..65535 are the host's idmap_offset.. (None:
    # privileged, uid 0 inside is the host's root).
    idmap_offset: int | None = None

    @property
    def memory_bytes(self) -> int:
        return domain.parse_size(self.memory)

    def check(self) -> None:
        """Every option that can be wrong, refused before any step runs."""
        try:
            domain.parse_size(self.memory)
        except ValueError as exc:
            raise LxcforgeError(str(exc), hint="e.g. --memory 512M") from exc
        if self.cpus is not None and self.cpus <= 0:
            raise LxcforgeError(f"--cpus must be positive, not {self.cpus}", hint="e.g. --cpus 1.5")
        if self.timeout <= 0:
            raise LxcforgeError(f"--timeout must be positive, not {self.timeout}", hint="e.g. --timeout 60")
        if self.idmap_offset is not None:
            from lxcforge import idmap

            try:
                idmap.check_offset(self.idmap_offset)
            except ValueError as exc:
                raise LxcforgeError(str(exc), hint=f"e.g. --id-offset {idmap.DEFAULT_OFFSET}") from exc


@dataclass(frozen=True)
class Container:
    name: str
    state: str
    ipv4: str | None
    mac: str | None
    network: str | None
    base: str | None
    memory_bytes: int | None
    created: str | None
    path: str | None
    leased: bool | None = None
    exclusive_bytes: int | None = None
    autostart: bool = False
    # False: running, but libvirt lost its init pid (see repair.py); None when not running.
    init_pid_known: bool | None = None
    repaired: int = 0  # forced restarts this command needed to get it fully managed


@dataclass(frozen=True)
class Plan:
    spec: domain.ContainerSpec
    xml: str
    host: network.DhcpHost


def resolve_base(settings: Settings, pool: Store, requested: str | None) -> str:
    wanted = requested or settings.default_base
    if wanted:
        names.validate_base_name(wanted)
        if not store.is_subvolume(pool.base_path(wanted)):
            raise NotFound(f"base {wanted} does not exist",
                           hint="see 'lxcforge base list', or build it with 'lxcforge base --release N'")
        return wanted
    bases = sorted(p.name for p in pool.bases.iterdir()) if pool.bases.is_dir() else []
    if len(bases) == 1:
        return bases[0]
    if not bases:
        raise NotFound("there is no base yet",
                       hint="build one: lxcforge base --release 41 (or --distro debian --release bookworm)")
    raise LxcforgeError(f"several bases ({', '.join(bases)}); which one?",
                        hint="pass --base NAME (or set default_base in /etc/lxcforge/config.toml)")


def init_for(rootfs: Path) -> str:
    """The container's init: lxcforge's cgroup wrapper where the rootfs has a shell to run it."""
    from lxcforge.rootfs import fixups

    return cgroups.WRAPPER_PATH if fixups.has_shell(rootfs) else "/sbin/init"


def _spec(settings: Settings, pool: Store, name: str, base: str, net: str, host_entry: network.DhcpHost,
          options: NewOptions, init: str) -> domain.ContainerSpec:
    return domain.ContainerSpec(
        name=name, uuid=str(uuid.uuid4()), rootfs=pool.container_path(name), network=net,
        mac=host_entry.mac, memory_bytes=options.memory_bytes, cpus=options.cpus, base=base,
        created=datetime.now(UTC).isoformat(timespec="seconds"), store=str(settings.store), ip=host_entry.ip,
        init=init, autostart=options.autostart, idmap_offset=options.idmap_offset,
    )


def plan_many(settings: Settings, wanted: Sequence[str], options: NewOptions,
              networks: Sequence[str] = ()) -> list[Plan]:
    """What `new` would do (domain XML and address of each), touching nothing: for --dry-run.
    Addresses are planned as a batch would reserve them: distinct, spread over the networks."""
    from lxcforge.ops import addresses

    options.check()
    for name in wanted:
        names.validate_container_name(name)
    pool = Store.from_settings(settings)
    if pool.status().state is not StoreState.READY:
        raise HostNotReady(f"store {settings.store} is not attached", hint="run 'lxcforge store attach'")
    base = resolve_base(settings, pool, options.base)
    nets = list(networks) or [options.network or settings.network]
    init = init_for(pool.base_path(base))
    plans = []
    with Virt(settings.uri) as virt:
        existing = set(virt.domain_names())
        net_plans = {net: addresses.network_plan(virt, net) for net in nets}
        leased = {net: addresses.leased_elsewhere(virt, plan) for net, plan in net_plans.items()}
        for i, name in enumerate(wanted):
            if name in existing:
                raise AlreadyExists(f"container {name} already exists", hint="choose another name")
            net = nets[i % len(nets)]
            entry = addresses.choose_address(net_plans[net], name, options.ip, leased[net], str(settings.store))
            net_plans[net] = dataclasses.replace(net_plans[net], hosts=(*net_plans[net].hosts, entry))
            spec = _spec(settings, pool, name, base, net, entry, options, init)
            plans.append(Plan(spec=spec, xml=domain.domain_xml(spec), host=entry))
    return plans


@dataclass
class Creation:
    """One container being made: what exists so far (for undo) and how long each phase took."""

    name: str
    net: str
    entry: network.DhcpHost | None = None
    spec: domain.ContainerSpec | None = None
    gateway: ipaddress.IPv4Interface | None = None
    undo: Undo = field(default_factory=Undo)
    started_at: float = field(default_factory=time.monotonic)
    repaired: int = 0
    # Each phase's start and end on the wall clock (epoch seconds), for --report.
    steps: list[tuple[str, float, float]] = field(default_factory=list)

    def timed(self, phase: str, started: float) -> None:
        now, wall = time.monotonic(), time.time()
        self.steps.append((phase, wall - (now - started), wall))

    @property
    def phases(self) -> dict[str, float]:
        """Seconds spent in each phase (a phase run twice counts twice)."""
        totals: dict[str, float] = {}
        for phase, start, end in self.steps:
            totals[phase] = totals.get(phase, 0.0) + end - start
        return totals

    def result(self, state: str, leased: bool | None) -> Container:
        assert self.entry is not None and self.spec is not None
        return Container(name=self.name, state=state, ipv4=self.entry.ip, mac=self.entry.mac,
                         network=self.net, base=self.spec.base, memory_bytes=self.spec.memory_bytes,
                         created=self.spec.created, path=str(self.spec.rootfs), leased=leased,
                         autostart=self.spec.autostart, init_pid_known=True if state == "running" else None,
                         repaired=self.repaired)


class Creator:
    """Makes containers from one base with one set of options; safe to call from threads.
    The batch (ops/bulk.py) holds every name's lock and has reserved the addresses."""

    def __init__(self, settings: Settings, pool: Store, virt: Virt, base: str, options: NewOptions,
                 connect: Callable[[], Virt] | None = None) -> None:
        # Workers of a batch share a few connections (see virt.ThreadConnections).
        self.connect = connect or (lambda: virt)
        # How a start turns IPv6 off on its veth's host end: a batch sets its host.Ipv6Switch.
        self.ipv6_off: Callable[[list[str]], object] = host.disable_ipv6
        # Containers confirmed managed, with the identity that holds for (initcache.key).
        self.confirmed: dict[str, str] = {}
        self.settings = settings
        self.pool = pool
        self.virt = virt
        self.base = base
        self.options = options
        # Every container of the batch is a snapshot of the same base: decide once. An
        # unprivileged batch snapshots the base's copy owned by its id range (made once).
        self.source = pool.base_path(base)
        if options.idmap_offset is not None:
            from lxcforge import idmap

            closed = idmap.unsearchable_ancestor(pool.containers)
            if closed is not None:
                raise LxcforgeError(f"{closed} is closed to other users (no o+x): an unprivileged container's "
                                    f"root (host uid {options.idmap_offset}) could not reach its files",
                                    hint=f"chmod o+x {closed}, or use a store on a path others can pass "
                                    "through, or make privileged containers (--privileged)")
            self.source = pool.shifted_base(base, options.idmap_offset, idmap.shift_tree)
            # libvirt's controller enters the rootfs as the range's root: it must get through.
            pool.containers.chmod(0o711)
        self.init = init_for(self.source)

    def create(self, name: str, net: str,
               reserved: tuple[network.DhcpHost, ipaddress.IPv4Interface | None]) -> Creation:
        """Snapshot, fix-ups, domain, start; no waiting. On failure every step is undone (the
        given reservation too) and the error raised; on success the caller owns creation.undo."""
        from lxcforge.ops import addresses

        entry, gateway = reserved
        creation = Creation(name=name, net=net, entry=entry, gateway=gateway)
        creation.undo.push(f"DHCP host {entry.ip}", lambda: addresses.drop_address(self.virt, net, entry))
        try:
            self._create(creation)
        except BaseException:
            creation.undo.rollback()
            raise
        return creation

    def _create(self, c: Creation) -> None:
        from lxcforge.rootfs import fixups

        virt, pool, name = self.connect(), self.pool, c.name
        assert c.entry is not None
        rootfs = pool.container_path(name)
        t = time.monotonic()
        store.snapshot(self.source, rootfs)
        c.undo.push(f"snapshot {rootfs}", lambda: store.delete_tree(rootfs))
        faults.point("new.snapshot")
        c.timed("snapshot", t)

        t = time.monotonic()
        fixups.hostname(rootfs, name)
        fixups.hosts(rootfs, name)
        fixups.empty_machine_id(rootfs)
        if self.options.ssh_key:
            fixups.ssh_authorized_key(rootfs, self.options.ssh_key)
        if self.init == cgroups.WRAPPER_PATH:
            fixups.install_init_wrapper(rootfs, cgroups.WRAPPER_PATH, cgroups.WRAPPER)
        if c.gateway is not None:
            fixups.resolver(rootfs, str(c.gateway.ip))
        if self.options.static_ip and c.gateway is not None:
            fixups.static_address_on_eth0(rootfs, c.entry.ip, c.gateway.network.prefixlen, str(c.gateway.ip))
        if self.options.idmap_offset is not None:
            # What the fix-ups wrote is the host root's: the container's root must own it.
            fixups.give_to_range(rootfs, fixups.WRITTEN_FOR_A_CONTAINER, self.options.idmap_offset)
        faults.point("new.fixups")
        c.timed("fixups", t)

        t = time.monotonic()
        spec = _spec(self.settings, pool, name, self.base, c.net, c.entry, self.options, self.init)
        c.spec = spec
        virt.define_domain(domain.domain_xml(spec))
        c.undo.push(f"domain {name}", lambda: _undefine(virt, name, spec.uuid))
        faults.point("new.defined")
        c.timed("define", t)

        if self.options.start:
            t = time.monotonic()
            # Undone after the kill below, even where libvirtd is gone: a start it cut short
            # can leave the container's end of the veth pair in the host's namespace.
            c.undo.push(f"veth of {name}", lambda: remove_left_veth(spec.mac))
            cgroups.start_defined(virt, name, spec.uuid, spec.idmap_offset, self.ipv6_off)
            c.undo.push(f"running {name}", lambda: _kill(virt, name))
            faults.point("new.started")
            c.timed("start", t)
            if not self.options.wait:
                # Nobody waits for its address: confirm libvirt manages it now.
                t = time.monotonic()
                c.repaired += repair.ensure_managed(virt, name)
                c.timed("managed", t)


# How long a frozen container's SIGKILLed processes may take to exit.
EXIT_WAIT_SECONDS = 10.0


def _kill(virt: Virt, name: str, *, running: bool = False) -> None:
    """Stop at once: frozen, then destroyed (Virt.destroy_frozen); where that cannot be,
    SIGKILL to init, then libvirt's destroy (which alone waits ~2 s for a systemd init to
    ignore SIGTERM). running: just seen running (destroy_frozen need not ask)."""
    controller, group = _controller_and_group(name)
    init = host.lxc_init_pid(name)
    if virt.destroy_frozen(name, running=running):
        # libvirt returns once the signals are sent. The container's init exits only after
        # every process of its pid namespace has (the kernel waits for them), so once it and
        # the controller are gone its cgroups are empty: removable, and no start of the same
        # name meets the old controller's mounts.
        if not host.wait_exited([pid for pid in (init, controller) if pid], EXIT_WAIT_SECONDS):
            log.warning("%s: processes still exiting %.0f s after it was killed", name, EXIT_WAIT_SECONDS)
        elif controller is not None:
            cgroups.remove_libvirt_groups(controller, group)
        return
    pid = init
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    virt.destroy(name)
    _remove_groups_of(controller, group)


def _controller_and_group(name: str) -> tuple[int | None, str | None]:
    """A running container's controller PID and libvirt's group name, read before it stops:
    what _remove_groups_of needs once both are gone."""
    controller = host.lxc_controller_pid(name)
    return controller, cgroups.libvirt_group_name(controller) if controller is not None else None


# How long a stopped container's controller may take to exit before its groups are left to gc.
CONTROLLER_EXIT_SECONDS = 2.0


def _remove_groups_of(controller: int | None, group: str | None) -> None:
    """libvirt's groups of a container that has stopped, once its controller has exited.
    libvirt removes them itself, but now and then while the controller is still leaving them
    (seen after a stop, about one container in ten): each one left is an empty group per
    hierarchy that nothing else would remove until gc."""
    if controller is not None and host.wait_exited([controller], CONTROLLER_EXIT_SECONDS):
        cgroups.remove_libvirt_groups(controller, group)


def _undefine(virt: Virt, name: str, uuid: str) -> None:
    virt.undefine(name)
    cgroups.remove_group(uuid)
    remove_run_leftovers(name)


def remove_left_veth(mac: str) -> None:
    """The container end of a veth pair still in the host's namespace, found by the
    container's MAC: what a start cut short (libvirtd killed) leaves; deleting it removes
    its host end too. Only when undoing a new (it reads every interface of the host)."""
    from lxcforge import network

    for ifname, found in host.interfaces_with_mac_prefix(network.MAC_PREFIX):
        if found == mac.lower():
            with contextlib.suppress(LxcforgeError):
                run(["ip", "link", "delete", ifname])


def remove_run_leftovers(name: str) -> list[str]:
    """libvirt leaves NAME.dev, NAME.devpts and NAME.fuse (empty directories) and NAME.sock
    behind for every container it ever ran; thousands accumulate under churn. (NAME.pid and
    the status file NAME.xml, or the NAME.xml.new it was rewriting, too, when libvirtd died
    while it started the container.)"""
    removed = []
    for suffix in (".dev", ".devpts", ".fuse"):
        with contextlib.suppress(OSError):
            (host.LIBVIRT_LXC_STATE / f"{name}{suffix}").rmdir()
            removed.append(f"{name}{suffix}")
    for suffix in (".sock", ".pid", ".xml", ".xml.new"):
        with contextlib.suppress(OSError):
            (host.LIBVIRT_LXC_STATE / f"{name}{suffix}").unlink()
            removed.append(f"{name}{suffix}")
    return removed


def wait_for_lease(virt: Virt, net: str, entry: network.DhcpHost, timeout: float,
                   check_interrupt: Callable[[], None] = lambda: None, renewed_after: int | None = None) -> bool:
    """Wait for entry's lease; with renewed_after (an expiry time seen before a start), for one
    that expires later: given, or renewed, since. An infinite lease (expiry 0) cannot show that."""
    deadline = time.monotonic() + timeout
    while True:
        if any(lease.ip == entry.ip and (not renewed_after or lease.expiry > renewed_after)
               for lease in virt.leases(net, macs=[entry.mac])):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
        check_interrupt()


# How long start waits for the lease of the run before to be renewed. Not for ever: a grant
# in the same second as the one before (a restart right after a start) leaves the expiry as
# it was, and dnsmasq then tells nobody; nor does a renewal a slow boot has not reached yet.
RENEWAL_GRACE_SECONDS = 5.0


def wait_for_address(virt: Virt, net: str, entry: network.DhcpHost, held: int | None, timeout: float) -> bool | None:
    """Wait for entry's lease after a start, given the expiry of the one held before it (None:
    none). True: a lease known to be this run's (none was held, or the held one was renewed);
    False: only the held one was seen (infinite, or not renewed within RENEWAL_GRACE_SECONDS);
    None: no lease within timeout."""
    deadline = time.monotonic() + timeout
    if held is None:
        return True if wait_for_lease(virt, net, entry, timeout) else None
    if held and wait_for_lease(virt, net, entry, min(timeout, RENEWAL_GRACE_SECONDS), renewed_after=held):
        return True
    return False if wait_for_lease(virt, net, entry, max(0.0, deadline - time.monotonic())) else None


def _lease_expiry(virt: Virt, net: str | None, entry: network.DhcpHost | None) -> int | None:
    """The expiry time of entry's current lease (0: infinite), None without one (or where the
    leases cannot be read: an inactive network, which the start then reports)."""
    if net is None or entry is None:
        return None
    try:
        leases = virt.leases(net, macs=[entry.mac])
    except LxcforgeError:
        return None
    return max((lease.expiry for lease in leases if lease.ip == entry.ip), default=None)


def _lock_name(name: str) -> str:
    return f"container-{name}"


def name_lock(pool: Store, name: str) -> contextlib.AbstractContextManager[None]:
    """The per-name lock: one lxcforge at a time changes a given container. Its file goes
    with the release; one left by a killed lxcforge is reused by the next, or removed by gc."""
    return pool.claim(_lock_name(name), f"another lxcforge is changing container {name}")


def at_work(pool: Store, name: str) -> bool:
    """True while some lxcforge holds the name's lock (a new or destroy under way)."""
    return not pool.lock_is_stale(pool.lock_path(_lock_name(name)))


def _container(virt: Virt, info: DomainInfo, meta: domain.Metadata, settings: Settings,
               leased: bool | None = None, managed: Mapping[str, bool] | None = None) -> Container:
    known = None
    if info.state == "running":
        if managed is not None:
            known = managed.get(info.name)
        else:
            with contextlib.suppress(NotFound):
                known = repair.is_managed(virt, info.name)
    return Container(
        name=info.name, state=info.state, ipv4=meta.ip, mac=meta.mac, network=meta.network, base=meta.base,
        memory_bytes=domain.memory_limit_bytes(info.xml), created=meta.created,
        path=str(settings.store / "containers" / info.name), leased=leased, autostart=meta.autostart,
        init_pid_known=known,
    )


def _mine(settings: Settings, info: DomainInfo) -> domain.Metadata:
    meta = domain.read_metadata(info.xml)
    if meta is None or meta.store != str(settings.store):
        raise NotFound(f"{info.name} is not an lxcforge container of store {settings.store}",
                       hint="see 'lxcforge list'")
    return meta


def describe(virt: Virt, settings: Settings, dom_name: str) -> Container:
    info = virt.domain(dom_name, from_files=True)
    return _container(virt, info, _mine(settings, info), settings)


def list_containers(settings: Settings) -> list[Container]:
    result = []
    with Virt(settings.uri) as virt, ThreadPoolExecutor(max_workers=1) as beside:
        leases: dict[str, set[tuple[str, str]]] = {}
        # The init check of every running domain on a second connection while this one reads
        # every domain's XML: libvirtd serves a few calls of each connection at a time, and
        # both are a round trip per domain (0.5 s each for a thousand).
        checked = beside.submit(_managed_running, settings.uri)
        doms = virt.domains(from_files=True)
        managed = checked.result()
        for dom in doms:
            meta = domain.read_metadata(dom.xml)
            if meta is None or meta.store != str(settings.store):
                continue
            net = meta.network or ""
            if net not in leases:
                try:
                    leases[net] = {(lease.mac, lease.ip) for lease in virt.leases(net)}
                except LxcforgeError:
                    leases[net] = set()
            leased = (meta.mac, meta.ip) in leases[net] if meta.mac and meta.ip else None
            result.append(_container(virt, dom, meta, settings, leased, managed))
    # What a killed lxcforge left half made is shown too (gc or destroy removes it); listing
    # changes nothing, so a detached store shows none.
    pool = Store.from_settings(settings)
    if pool.containers.is_dir():
        listed = {c.name for c in result}
        pending = set(pool.pending_names())
        for name in sorted(pending | {p.name for p in pool.containers.iterdir()}):
            # The lock is probed only for the few names not listed as containers.
            if (name not in listed or name in pending) and not at_work(pool, name):
                result = [c for c in result if c.name != name]
                result.append(Container(name=name, state=HALF_MADE, ipv4=None, mac=None, network=None, base=None,
                                        memory_bytes=None, created=None, path=str(pool.container_path(name))))
    return sorted(result, key=lambda c: c.name)


def _managed_running(uri: str) -> dict[str, bool]:
    with Virt(uri) as virt:
        return repair.managed_running(virt, remembered=True)


def info(settings: Settings, name: str, *, with_xml: bool = False) -> tuple[Container, str | None]:
    """The container, and with_xml its definition as libvirt gives it."""
    names.validate_container_name(name)
    with Virt(settings.uri) as virt:
        container = describe(virt, settings, name)
        xml = virt.domain(name).xml if with_xml else None
    exclusive = store.exclusive_bytes(Path(container.path)) if container.path else None
    return dataclasses.replace(container, exclusive_bytes=exclusive), xml


def start(settings: Settings, name: str, *, wait: bool = True, timeout: float = 60.0,
          virt: Virt | None = None, ipv6_off: Callable[[list[str]], object] = host.disable_ipv6,
          store_ready: bool = False) -> Container:
    """Start a stopped container (or repair a running one libvirt lost track of), wait for
    its address, and confirm libvirt fully manages it. A batch (bulk.start_many) passes its
    connection, its host.Ipv6Switch, and store_ready once it has attached the store."""
    names.validate_container_name(name)
    if not store_ready:
        Store.from_settings(settings).ensure()  # re-attach the pool after a reboot
    with contextlib.ExitStack() as stack:
        if virt is None:
            virt = stack.enter_context(Virt(settings.uri))
        container = describe(virt, settings, name)
        entry = None
        if wait and container.mac and container.ipv4 and container.network:
            from lxcforge import network

            entry = network.DhcpHost(container.mac, container.ipv4, name)
        repaired = 0
        # The lease of the last run outlives a stop: only one renewed after this start shows
        # the container booted far enough to ask for it (and libvirt had its init event).
        held = None
        if not virt.is_active(name):
            held = _lease_expiry(virt, container.network, entry)
            cgroups.start_domain(virt, name, ipv6_off)
        elif container.init_pid_known is False:
            held = _lease_expiry(virt, container.network, entry)
            repair.repair(virt, name)
            repaired = 1
        leased = fresh = None
        if entry is not None and container.network:
            fresh = wait_for_address(virt, container.network, entry, held, timeout)
            if fresh is None:
                raise LxcforgeError(f"{name} started but did not take {container.ipv4} within {timeout:.0f} s",
                                    hint=f"look at its console: lxcforge console {name}")
            leased = True
        # Without a lease known to be this run's, the check gets its usual settle time (it ends
        # as soon as libvirt knows the init pid).
        repaired += repair.ensure_managed(virt, name, settle=0.0 if fresh else None)
        return dataclasses.replace(describe(virt, settings, name), repaired=repaired,
                                   leased=leased if leased else None)


def stop(settings: Settings, name: str, *, timeout: float = 30.0, virt: Virt | None = None) -> None:
    """Clean shutdown (SIGRTMIN+3 to init, what systemd understands), then force after timeout.
    A batch (bulk.stop_many) passes its connection."""
    names.validate_container_name(name)
    with contextlib.ExitStack() as stack:
        if virt is None:
            virt = stack.enter_context(Virt(settings.uri))
        describe(virt, settings, name)
        known = repair.is_managed(virt, name)
        if known is None:
            return
        controller, group = _controller_and_group(name)
        _shut_down(virt, name, known, timeout)
        _remove_groups_of(controller, group)


def _shut_down(virt: Virt, name: str, known: bool, timeout: float) -> None:
    pid = host.lxc_init_pid(name)
    if pid is not None:
        try:
            os.kill(pid, SHUTDOWN_SIGNAL)
        except ProcessLookupError:
            pass
    else:
        virt.shutdown(name)
    deadline = time.monotonic() + timeout
    if known is False:
        # libvirt lost this container's monitor (repair.py): it would never see it stop.
        # Watch init itself, then let libvirt clean up.
        while pid is not None and host.process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and host.process_alive(pid):
            log.warning("%s did not stop within %.0f s; forcing it off", name, timeout)
        virt.destroy(name)
        return
    while virt.is_active(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if virt.is_active(name):
        log.warning("%s did not stop within %.0f s; forcing it off", name, timeout)
        virt.destroy(name)


def restart(settings: Settings, name: str, *, timeout: float = 30.0, wait: bool = True,
            virt: Virt | None = None, ipv6_off: Callable[[list[str]], object] = host.disable_ipv6,
            store_ready: bool = False) -> Container:
    """stop, then start; a batch (bulk.restart_many) passes what it passes start."""
    stop(settings, name, timeout=timeout, virt=virt)
    return start(settings, name, wait=wait, virt=virt, ipv6_off=ipv6_off, store_ready=store_ready)


def set_autostart(settings: Settings, name: str, on: bool) -> Container:
    """Mark a container to start at boot (lxcforge boot), or clear the mark."""
    names.validate_container_name(name)
    with Virt(settings.uri) as virt:
        describe(virt, settings, name)
        element = domain.container_element_with_autostart(virt.domain(name).xml, on)
        virt.set_metadata(name, element, domain.METADATA_NS, domain.METADATA_PREFIX)
        return describe(virt, settings, name)


def set_limits(settings: Settings, name: str, *, memory: str | None = None, cpus: float | None = None) -> Container:
    """Change a container's memory and CPU limits: kept in its definition always, applied to
    the running container where libvirt can (memory only up to the limit it started with;
    more takes effect at the next start, as the warning says). cpus 0 removes the limit."""
    names.validate_container_name(name)
    if memory is None and cpus is None:
        raise LxcforgeError("nothing to change", hint="give --memory SIZE and/or --cpus N")
    size = None
    if memory is not None:
        try:
            size = domain.parse_size(memory)
        except ValueError as exc:
            raise LxcforgeError(str(exc), hint="e.g. --memory 512M") from exc
    if cpus is not None and cpus < 0:
        raise LxcforgeError(f"--cpus must not be negative, not {cpus}", hint="e.g. --cpus 1.5, or 0 for no limit")
    with Virt(settings.uri) as virt:
        describe(virt, settings, name)
        running = virt.is_active(name)
        if size is not None and not virt.set_memory(name, size) and running:
            log.warning("%s: memory limit %s from its next start (a running container's cannot rise above the "
                        "limit it started with)", name, memory)
        if cpus is not None:
            quota = int(cpus * domain.CPU_PERIOD_US) if cpus > 0 else -1
            virt.set_cpu_quota(name, domain.CPU_PERIOD_US, quota)
        return describe(virt, settings, name)


def destroy(settings: Settings, name: str, *, missing_ok: bool = False, virt: Virt | None = None,
            pool: Store | None = None,
            deferred: list[tuple[str, network.DhcpHost]] | None = None,
            listed: Mapping[str, DomainInfo] | None = None,
            orphans: Mapping[str, Sequence[tuple[str, network.DhcpHost]]] | None = None,
            locked: bool = False) -> bool:
    """Stop at once, undefine, drop the DHCP reservation (and dnsmasq's lease), delete the
    subvolume: every piece of the name that exists, also of a half-made container (a
    reservation of this store for the name without a domain, a subvolume alone). Returns
    False if there was nothing.
    deferred: collect (network, reservation) here instead of dropping them, for a batch to
    drop together (drop_addresses). listed: a batch's one listing of the domains, instead of
    two lookups per container. orphans: a batch's reservations without a domain, by name
    (else the networks are read here). locked: the caller holds the name's lock."""
    from lxcforge import network
    from lxcforge.ops import addresses

    names.validate_container_name(name)
    pool = pool or Store.from_settings(settings).ensure()
    rootfs = pool.container_path(name)
    owner = str(settings.store)
    with contextlib.ExitStack() as stack:
        if virt is None:
            virt = stack.enter_context(Virt(settings.uri))
        if not locked:
            stack.enter_context(name_lock(pool, name))
        found = False
        dom = (listed.get(name) if listed is not None
               else virt.domain(name) if virt.domain_exists(name) else None)
        drop: list[tuple[str, network.DhcpHost]] = []
        meta = _mine(settings, dom) if dom is not None else None  # refuses another's domain, changing nothing
        pool.mark_pending(name, "destroy")
        if dom is not None and meta is not None:
            try:
                _kill(virt, name, running=dom.state == "running")
                faults.point("destroy.killed")
                _undefine(virt, name, dom.uuid)
                faults.point("destroy.undefined")
                found = True
            except NotFound:
                if listed is None:
                    raise
                # Destroyed by someone else since the listing, address and all.
            if found and meta.network and meta.mac and meta.ip:
                drop.append((meta.network, network.DhcpHost(meta.mac, meta.ip, name)))
        else:
            # Half-made or half-destroyed: this store's reservations of the name, if any.
            known = orphans.get(name, ()) if orphans is not None else addresses.orphaned_reservations(
                virt, owner, set(virt.domain_names())).get(name, ())
            drop += list(known)
            found = found or bool(known)
        if drop:
            if deferred is not None:
                deferred.extend(drop)
            else:
                for net, entries in addresses.by_network(drop).items():
                    addresses.drop_addresses(virt, net, entries)
            faults.point("destroy.released")
        if rootfs.exists():
            found = True
            store.delete_tree(rootfs)
            faults.point("destroy.deleted")
        pool.clear_pending(name)
    if not found and not missing_ok:
        raise NotFound(f"container {name} does not exist", hint="see 'lxcforge list' (or pass --missing-ok)")
    return found


CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Way:
    """What it takes to enter one running container (both exec paths use it): libvirt's
    descriptors of its namespaces (checked to be its real init's; the caller closes them),
    its controller and init, the init's bounding set, its security label, the user to be."""

    fds: list[int]
    controller: int
    init: int
    bounding_set: int
    label: tuple[str, str] | None
    uid: int | None
    gid: int | None
    home: str | None
    # The container's own groups (lxcforge-init's, the roots of its cgroup namespace), one
    # cgroup.procs per hierarchy; empty for a container made before it had them.
    cgroup_procs: list[str]


def way_in(virt: Virt, settings: Settings, name: str, user: str | None,
           mount_list: list[host.Mount] | None = None) -> Way:
    container = describe(virt, settings, name)  # this store's container, or refused
    if container.state != "running":
        raise LxcforgeError(f"container {name} is not running", hint=f"start it: lxcforge start {name}")
    if container.init_pid_known is False:
        raise LxcforgeError(f"{name} is {repair.UNMANAGED}", hint=repair.FIX)
    controller, init = host.lxc_controller_pid(name), host.lxc_init_pid(name)
    if controller is None or init is None:
        raise LxcforgeError(f"cannot find the init process of {name}", hint=f"lxcforge restart {name}")
    uid = gid = home = None
    if user is not None:
        uid, gid, home = account(settings, name, user)
    label = virt.security_label(name)
    fds = virt.open_namespaces(name)
    try:
        enter_mod.check_namespaces(fds, init)
        keep = enter_mod.bounding_set(init)
        # libvirt opens no cgroup namespace: the container's is its init's (lxcforge-init).
        cgroup_ns = enter_mod.own_cgroup_namespace(init)
        if cgroup_ns is not None:
            fds.append(cgroup_ns)
        procs = cgroups.namespace_root_procs(Path(f"/proc/{init}/cgroup").read_text(),
                                             mount_list if mount_list is not None else host.mounts())
    except (ValueError, OSError) as exc:
        for fd in fds:
            os.close(fd)
        raise LxcforgeError(f"cannot enter {name}: {exc}", hint=repair.FIX) from exc
    return Way(fds=fds, controller=controller, init=init, bounding_set=keep, label=label, uid=uid, gid=gid,
               home=home, cgroup_procs=procs)


def enter(settings: Settings, name: str, command: Sequence[str], *, user: str | None = None,
          cwd: str | None = None, env: Sequence[str] = ()) -> enter_mod.Entry:
    """Prepare this process to run command inside a running container (see lxcforge/enter.py):
    it joins the container's cgroups and keeps no capability the container's init lacks;
    the returned nsenter argv then joins its namespaces through libvirt's descriptors. The
    caller execs it: stdin, stdout, stderr and the exit status pass through."""
    names.validate_container_name(name)
    if not command:
        raise LxcforgeError("no command given", hint=f"lxcforge exec {name} -- CMD [ARGS...]")
    nsenter = which("nsenter")
    if nsenter is None:
        raise HostNotReady("nsenter is not installed", hint="install util-linux")
    variables = exec_environment(env)
    with Virt(settings.uri) as virt:
        way = way_in(virt, settings, name, user)
        if way.home is not None:
            variables["HOME"] = way.home
        for fd in way.fds:
            os.set_inheritable(fd, True)
        virt.enter_cgroups(name)
    for procs in way.cgroup_procs:  # below libvirt's groups: the container's namespace roots
        Path(procs).write_text(f"{os.getpid()}\n")
    user_ns = enter_mod.foreign_user_namespace(way.fds)
    if user_ns is not None:  # unprivileged: its user namespace first, or the narrowing is undone
        enter_mod.join_user_namespace(user_ns)
    enter_mod.narrow_bounding_set(way.bounding_set)
    enter_mod.label_next_exec(way.label)
    argv = enter_mod.nsenter_argv(nsenter, way.fds, command, uid=way.uid, gid=way.gid, cwd=cwd,
                                  user_joined=user_ns is not None)
    return enter_mod.Entry(argv=argv, env=variables, fds=way.fds)


def exec_environment(env: Sequence[str]) -> dict[str, str]:
    """What an exec'd command starts with: a plain environment, and --env NAME=VALUE."""
    variables = {"PATH": CONTAINER_PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "dumb"),
                 "container": "lxc-libvirt", "LANG": "C.UTF-8"}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LxcforgeError(f"--env {item!r} is not NAME=VALUE", hint="e.g. --env LANG=C.UTF-8")
        variables[key] = value
    return variables


def account(settings: Settings, name: str, user: str) -> tuple[int, int, str]:
    """uid, gid and home of user (a name or a number) from the container's own /etc/passwd,
    read without following a link out of the rootfs."""
    from lxcforge.rootfs import safepath

    rootfs = settings.store / "containers" / name
    try:
        passwd = safepath.read_text(rootfs, "/etc/passwd")
    except (OSError, LxcforgeError):
        passwd = ""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and (fields[0] == user or fields[2] == user) and fields[2].isdigit() \
                and fields[3].isdigit():
            return int(fields[2]), int(fields[3]), fields[5] or "/"
    if user.isdigit():
        return int(user), int(user), "/"
    raise NotFound(f"no user {user!r} in the container's /etc/passwd", hint="give a user name it has, or a uid")


def console_argv(settings: Settings, name: str) -> list[str]:
    names.validate_container_name(name)
    with Virt(settings.uri) as virt:
        describe(virt, settings, name)
        if not virt.is_active(name):
            raise LxcforgeError(f"container {name} is not running", hint=f"start it: lxcforge start {name}")
    # The LXC driver rejects --force; the escape is Ctrl+].
    return ["virsh", "-c", settings.uri, "console", name]
