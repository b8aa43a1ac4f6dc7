"""Container lifecycle: new, list, info, start, stop, restart, destroy, console, exec.

A container is a libvirt LXC domain (with lxcforge metadata), a writable snapshot of a base
under containers/NAME, and a static DHCP host entry on its network. `new` records each step
and undoes all of them if a later one fails."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxcforge import cgroups, domain, host, interrupts, names, network, store
from lxcforge.config import Settings
from lxcforge.errors import AlreadyExists, HostNotReady, LxcforgeError, NotFound
from lxcforge.ops import addresses
from lxcforge.rootfs import fixups
from lxcforge.store import Store, StoreState
from lxcforge.undo import Undo
from lxcforge.virt import DomainInfo, Virt

log = logging.getLogger(__name__)

# systemd's request for a clean shutdown; libvirt's own shutdown sends SIGTERM, which
# systemd as PID 1 ignores.
SHUTDOWN_SIGNAL = signal.SIGRTMIN + 3


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
    return cgroups.WRAPPER_PATH if fixups.has_shell(rootfs) else "/sbin/init"


def _spec(settings: Settings, pool: Store, name: str, base: str, net: str, host_entry: network.DhcpHost,
          options: NewOptions, init: str) -> domain.ContainerSpec:
    try:
        memory = domain.parse_size(options.memory)
    except ValueError as exc:
        raise LxcforgeError(str(exc), hint="e.g. --memory 512M") from exc
    if options.cpus is not None and options.cpus <= 0:
        raise LxcforgeError(f"--cpus must be positive, not {options.cpus}", hint="e.g. --cpus 1.5")
    return domain.ContainerSpec(
        name=name, uuid=str(uuid.uuid4()), rootfs=pool.container_path(name), network=net,
        mac=host_entry.mac, memory_bytes=memory, cpus=options.cpus, base=base,
        created=datetime.now(UTC).isoformat(timespec="seconds"), store=str(settings.store), ip=host_entry.ip,
        init=init,
    )


def plan(settings: Settings, name: str, options: NewOptions) -> Plan:
    """What `new` would do (domain XML and address), touching nothing: for --dry-run."""
    names.validate_container_name(name)
    pool = Store.from_settings(settings)
    if pool.status().state is not StoreState.READY:
        raise HostNotReady(f"store {settings.store} is not attached", hint="run 'lxcforge store attach'")
    base = resolve_base(settings, pool, options.base)
    net = options.network or settings.network
    with Virt(settings.uri) as virt:
        if virt.domain_exists(name):
            raise AlreadyExists(f"container {name} already exists", hint="choose another name")
        net_plan = addresses.network_plan(virt, net)
        entry = addresses.choose_address(net_plan, name, options.ip, addresses.leased_elsewhere(virt, net_plan))
    spec = _spec(settings, pool, name, base, net, entry, options, init_for(pool.base_path(base)))
    return Plan(spec=spec, xml=domain.domain_xml(spec), host=entry)


@dataclass
class Creation:
    """One container being made: what exists so far (for undo) and how long each phase took."""

    name: str
    net: str
    entry: network.DhcpHost | None = None
    spec: domain.ContainerSpec | None = None
    gateway: ipaddress.IPv4Interface | None = None
    undo: Undo = field(default_factory=Undo)
    phases: dict[str, float] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)

    def timed(self, phase: str, started: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + time.monotonic() - started

    def result(self, state: str, leased: bool | None) -> Container:
        assert self.entry is not None and self.spec is not None
        return Container(name=self.name, state=state, ipv4=self.entry.ip, mac=self.entry.mac,
                         network=self.net, base=self.spec.base, memory_bytes=self.spec.memory_bytes,
                         created=self.spec.created, path=str(self.spec.rootfs), leased=leased)


class Creator:
    """Makes containers from one base with one set of options; safe to call from threads
    (per-name locks, one lock around address allocation)."""

    def __init__(self, settings: Settings, pool: Store, virt: Virt, base: str, options: NewOptions,
                 names_checked: bool = False, connect: Callable[[], Virt] | None = None) -> None:
        self.names_checked = names_checked
        # Workers of a batch each use their own connection (see virt.ThreadConnections).
        self.connect = connect or (lambda: virt)
        self.settings = settings
        self.pool = pool
        self.virt = virt
        self.base = base
        self.options = options
        # Every container of the batch is a snapshot of the same base: decide once.
        self.init = init_for(pool.base_path(base))

    def create(self, name: str, net: str,
               reserved: tuple[network.DhcpHost, ipaddress.IPv4Interface | None] | None = None) -> Creation:
        """Snapshot, fix-ups, address (unless reserved already), domain, start; no waiting.
        On failure every step is undone (a given reservation too) and the error raised; on
        success the caller owns creation.undo."""
        creation = Creation(name=name, net=net, entry=reserved[0] if reserved else None,
                            gateway=reserved[1] if reserved else None)
        if reserved is not None:
            entry = reserved[0]
            creation.undo.push(f"DHCP host {entry.ip}", lambda: addresses.drop_address(self.virt, net, entry))
        try:
            with _name_lock(self.pool, name):
                self._create(creation)
        except BaseException:
            creation.undo.rollback()
            raise
        return creation

    def _create(self, c: Creation) -> None:
        virt, pool, name = self.connect(), self.pool, c.name
        t = time.monotonic()
        # A batch checked every name against libvirt already (one listing); defining a name
        # that appeared since then still fails in libvirt, and is undone.
        if not self.names_checked and virt.domain_exists(name):
            raise AlreadyExists(f"container {name} already exists", hint="choose another name, or destroy it first")
        rootfs = pool.container_path(name)
        if rootfs.exists():
            raise AlreadyExists(f"{rootfs} exists without a container",
                                hint=f"remove it with 'lxcforge destroy --missing-ok {name}'")
        c.timed("check", t)

        t = time.monotonic()
        store.snapshot(pool.base_path(self.base), rootfs)
        c.undo.push(f"snapshot {rootfs}", lambda: store.delete_tree(rootfs))
        c.timed("snapshot", t)

        t = time.monotonic()
        fixups.hostname(rootfs, name)
        fixups.hosts(rootfs, name)
        fixups.empty_machine_id(rootfs)
        if self.options.ssh_key:
            fixups.ssh_authorized_key(rootfs, self.options.ssh_key)
        if self.init == cgroups.WRAPPER_PATH:
            fixups.install_init_wrapper(rootfs, cgroups.WRAPPER_PATH, cgroups.WRAPPER)
        c.timed("fixups", t)

        t = time.monotonic()
        if c.entry is None:
            reserved = addresses.reserve_addresses(virt, pool, [(name, c.net)], self.options.ip)
            entry = reserved[name][0]
            c.entry = entry
            c.undo.push(f"DHCP host {entry.ip}", lambda: addresses.drop_address(virt, c.net, entry))
            c.gateway = reserved[name][1]
        if self.options.static_ip and c.gateway is not None:
            fixups.static_address_on_eth0(rootfs, c.entry.ip, c.gateway.network.prefixlen, str(c.gateway.ip))
        c.timed("address", t)

        t = time.monotonic()
        spec = _spec(self.settings, pool, name, self.base, c.net, c.entry, self.options, self.init)
        c.spec = spec
        virt.define_domain(domain.domain_xml(spec))
        c.undo.push(f"domain {name}", lambda: _undefine(virt, name, spec.uuid))
        c.timed("define", t)

        if self.options.start:
            t = time.monotonic()
            virt.start(name)
            c.undo.push(f"running {name}", lambda: _kill(virt, name))
            c.timed("start", t)


def _kill(virt: Virt, name: str) -> None:
    """Stop at once: SIGKILL to init, then libvirt's destroy (which alone waits ~2 s for a
    systemd init to ignore SIGTERM)."""
    pid = host.lxc_init_pid(name)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    virt.destroy(name)


def _undefine(virt: Virt, name: str, uuid: str) -> None:
    virt.undefine(name)
    cgroups.remove_group(uuid)
    # libvirt leaves NAME.dev, NAME.devpts and NAME.fuse (empty directories) and NAME.sock
    # behind for every container it ever ran; thousands accumulate under churn.
    for suffix in (".dev", ".devpts", ".fuse"):
        with contextlib.suppress(OSError):
            (host.LIBVIRT_LXC_STATE / f"{name}{suffix}").rmdir()
    with contextlib.suppress(OSError):
        (host.LIBVIRT_LXC_STATE / f"{name}.sock").unlink()


def new(settings: Settings, name: str, options: NewOptions,
        progress: Callable[[str], None] = lambda _: None) -> Container:
    """Make one container; on any failure, undo every step already done."""
    names.validate_container_name(name)
    pool = Store.from_settings(settings).ensure()
    base = resolve_base(settings, pool, options.base)
    net = options.network or settings.network
    with Virt(settings.uri) as virt:
        addresses.network_plan(virt, net)  # fail early, before any work, if the network is missing
        progress(f"{name}: creating from {base}")
        # Ctrl-C is taken only where the undo record is complete: while waiting, or after.
        with interrupts.deferred() as interrupt:
            creation = Creator(settings, pool, virt, base, options).create(name, net)
            leased = _wait_or_undo(virt, net, creation, options, progress, interrupt.check)
    return creation.result("running" if options.start else "shut off", leased)


def _wait_or_undo(virt: Virt, net: str, creation: Creation, options: NewOptions,
                  progress: Callable[[str], None], check_interrupt: Callable[[], None]) -> bool | None:
    """Wait for the new container's lease (if asked to); undo the whole creation unless it
    came, or --keep-failed says keep it anyway."""
    assert creation.entry is not None
    name, leased = creation.name, None
    try:
        check_interrupt()
        if options.start and options.wait:
            progress(f"{name}: waiting for {creation.entry.ip}")
            leased = wait_for_lease(virt, net, creation.entry, options.timeout, check_interrupt)
            if not leased:
                message = f"{name} did not take its address {creation.entry.ip} within {options.timeout:.0f} s"
                if not options.keep_failed:
                    raise LxcforgeError(message + "; removed it",
                                        hint="check the base boots ('lxcforge new --keep-failed', then "
                                        "'lxcforge console NAME'), or raise --timeout")
                log.warning("%s; kept it (--keep-failed)", message)
    except BaseException:
        creation.undo.rollback()
        raise
    creation.undo.commit()
    return leased


def wait_for_lease(virt: Virt, net: str, entry: network.DhcpHost, timeout: float,
                   check_interrupt: Callable[[], None] = lambda: None) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if any(lease.mac == entry.mac and lease.ip == entry.ip for lease in virt.leases(net)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
        check_interrupt()


def _name_lock(pool: Store, name: str) -> contextlib.AbstractContextManager[None]:
    """The per-name lock: one lxcforge at a time changes a given container."""
    return pool.claim(f"container-{name}", f"another lxcforge is changing container {name}")


def _container(info: DomainInfo, meta: domain.Metadata, settings: Settings,
               leased: bool | None = None) -> Container:
    return Container(
        name=info.name, state=info.state, ipv4=meta.ip, mac=meta.mac, network=meta.network, base=meta.base,
        memory_bytes=domain.memory_limit_bytes(info.xml), created=meta.created,
        path=str(settings.store / "containers" / info.name), leased=leased,
    )


def _describe(virt: Virt, settings: Settings, dom_name: str) -> Container:
    info = virt.domain(dom_name)
    meta = domain.read_metadata(info.xml)
    if meta is None or meta.store != str(settings.store):
        raise NotFound(f"{dom_name} is not an lxcforge container of store {settings.store}",
                       hint="see 'lxcforge list'")
    return _container(info, meta, settings)


def list_containers(settings: Settings) -> list[Container]:
    result = []
    with Virt(settings.uri) as virt:
        leases: dict[str, set[tuple[str, str]]] = {}
        for dom in virt.domains():
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
            result.append(_container(dom, meta, settings, leased))
    return result


def info(settings: Settings, name: str) -> tuple[Container, str]:
    names.validate_container_name(name)
    with Virt(settings.uri) as virt:
        container = _describe(virt, settings, name)
        xml = virt.domain(name).xml
    exclusive = store.exclusive_bytes(Path(container.path)) if container.path else None
    return Container(**{**container.__dict__, "exclusive_bytes": exclusive}), xml


def start(settings: Settings, name: str, *, wait: bool = True, timeout: float = 60.0) -> Container:
    names.validate_container_name(name)
    Store.from_settings(settings).ensure()  # re-attach the pool after a reboot
    with Virt(settings.uri) as virt:
        container = _describe(virt, settings, name)
        if not virt.is_active(name):
            virt.start(name)
        if wait and container.mac and container.ipv4 and container.network:
            entry = network.DhcpHost(container.mac, container.ipv4, name)
            if not wait_for_lease(virt, container.network, entry, timeout):
                raise LxcforgeError(f"{name} started but did not take {container.ipv4} within {timeout:.0f} s",
                                    hint=f"look at its console: lxcforge console {name}")
        return _describe(virt, settings, name)


def stop(settings: Settings, name: str, *, timeout: float = 30.0) -> None:
    """Clean shutdown (SIGRTMIN+3 to init, what systemd understands), then force after timeout."""
    names.validate_container_name(name)
    with Virt(settings.uri) as virt:
        _describe(virt, settings, name)
        if not virt.is_active(name):
            return
        pid = host.lxc_init_pid(name)
        if pid is not None:
            try:
                os.kill(pid, SHUTDOWN_SIGNAL)
            except ProcessLookupError:
                pass
        else:
            virt.shutdown(name)
        deadline = time.monotonic() + timeout
        while virt.is_active(name) and time.monotonic() < deadline:
            time.sleep(0.1)
        if virt.is_active(name):
            log.warning("%s did not stop within %.0f s; forcing it off", name, timeout)
            virt.destroy(name)


def restart(settings: Settings, name: str, *, timeout: float = 30.0, wait: bool = True) -> Container:
    stop(settings, name, timeout=timeout)
    return start(settings, name, wait=wait)


def destroy(settings: Settings, name: str, *, missing_ok: bool = False, virt: Virt | None = None,
            pool: Store | None = None,
            deferred: list[tuple[str, network.DhcpHost]] | None = None,
            listed: Mapping[str, DomainInfo] | None = None) -> bool:
    """Stop at once, undefine, drop the DHCP reservation (and dnsmasq's lease), delete the
    subvolume. Also clears a half-made container. Returns False if there was nothing.
    deferred: collect (network, reservation) here instead of dropping them, for a batch to
    drop together (drop_addresses). listed: a batch's one listing of the domains, instead of
    two lookups per container."""
    names.validate_container_name(name)
    pool = pool or Store.from_settings(settings).ensure()
    rootfs = pool.container_path(name)
    with contextlib.ExitStack() as stack:
        if virt is None:
            virt = stack.enter_context(Virt(settings.uri))
        stack.enter_context(_name_lock(pool, name))
        found = False
        dom = (listed.get(name) if listed is not None
               else virt.domain(name) if virt.domain_exists(name) else None)
        if dom is not None:
            meta = domain.read_metadata(dom.xml)
            if meta is None or meta.store != str(settings.store):
                raise NotFound(f"{name} is not an lxcforge container of store {settings.store}",
                               hint="remove it with virsh if you mean to")
            try:
                _kill(virt, name)
                _undefine(virt, name, dom.uuid)
                found = True
            except NotFound:
                if listed is None:
                    raise
                # Destroyed by someone else since the listing, address and all.
            if found and meta.network and meta.mac and meta.ip:
                entry = network.DhcpHost(meta.mac, meta.ip, name)
                if deferred is not None:
                    deferred.append((meta.network, entry))
                else:
                    addresses.drop_addresses(virt, meta.network, [entry])
        if rootfs.exists():
            found = True
            store.delete_tree(rootfs)
    if not found and not missing_ok:
        raise NotFound(f"container {name} does not exist", hint="see 'lxcforge list' (or pass --missing-ok)")
    return found


CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def exec_command(name: str, command: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment for nsenter into every namespace of the container's init, with its
    root and working directory; the command is looked up on the container's PATH."""
    names.validate_container_name(name)
    if not command:
        raise LxcforgeError("no command given", hint=f"lxcforge exec {name} -- CMD [ARGS...]")
    pid = host.lxc_init_pid(name)
    if pid is None:
        raise LxcforgeError(f"container {name} is not running", hint=f"start it: lxcforge start {name}")
    argv = ["nsenter", "--target", str(pid), "--mount", "--uts", "--ipc", "--net", "--pid",
            "--root", "--wd", "--", *command]
    env = {"PATH": CONTAINER_PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "dumb"),
           "container": "lxc-libvirt", "LANG": "C.UTF-8"}
    return argv, env


def console_argv(settings: Settings, name: str) -> list[str]:
    names.validate_container_name(name)
    with Virt(settings.uri) as virt:
        _describe(virt, settings, name)
        if not virt.is_active(name):
            raise LxcforgeError(f"container {name} is not running", hint=f"start it: lxcforge start {name}")
    # The LXC driver rejects --force; the escape is Ctrl+].
    return ["virsh", "-c", settings.uri, "console", name]
