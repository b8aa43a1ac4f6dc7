"""What libvirt alone takes to start containers and get them leased, and to force them off:
the floors under `lxcforge new`'s start and lease phases and under `lxcforge destroy`,
measured on the same host in the same round.

Given stopped, lxcforge-made containers, start each with libvirt's API directly (one
connection per worker, opened before the clock starts; `virDomainCreate`; of lxcforge's steps
around it only what keeps the host safe when the container is unprivileged,
cgroups.unprivileged_start: libvirt 9.0 would otherwise hand the host's name=systemd root to
the container's root user; no init-pid check, no IPv6 switch) and wait until each MAC has a
lease renewed after the start (read from the status file libvirt's lease helper keeps, as
lxcforge does). If this floor grows with the number of containers on the host by more than
a target allows `new` in all, no change to lxcforge's own steps can meet that target.

Forcing off is the two libvirt calls destroy makes to stop a container, `virDomainSuspend`
then `virDomainDestroy` (a frozen container is killed at once; a running one gets SIGTERM and
libvirt's 200 ms sleeps), with destroy's undefine, snapshot and reservation removal left out."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lxcforge import cgroups, domain, host
from lxcforge.virt import Virt

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Interface:
    name: str
    network: str
    mac: str
    idmap_offset: int | None  # unprivileged: its ids' offset outside (cgroups.unprivileged_start)


def interface_of(name: str, domain_xml: str) -> Interface:
    """The container's network and MAC (and user namespace offset), from the metadata
    lxcforge keeps in its definition."""
    meta = domain.read_metadata(domain_xml)
    if meta is None or meta.network is None or meta.mac is None:
        raise ValueError(f"{name}: no network interface in its definition's lxcforge metadata")
    return Interface(name, meta.network, meta.mac.lower(), meta.idmap_offset)


def leases_by_mac(virt: Virt, interfaces: Sequence[Interface]) -> dict[str, int]:
    """MAC -> lease expiry, for the MACs given that hold a lease now."""
    found: dict[str, int] = {}
    for network in sorted({i.network for i in interfaces}):
        macs = [i.mac for i in interfaces if i.network == network]
        found.update({lease.mac: lease.expiry for lease in virt.leases(network, macs=macs)})
    return found


def renewed(before: dict[str, int], now: dict[str, int]) -> set[str]:
    """MACs whose lease is new or expires later than before. Pure."""
    return {mac for mac, expiry in now.items() if mac not in before or expiry > before[mac]}


def _in_parallel(call: Callable[[Virt, str], object], names: Sequence[str], workers: int) -> float:
    """call(virt, name) for each name, WORKERS at a time, a connection per worker opened before
    the clock starts (lxcforge opens a few for a whole batch; opening 8 or 16 inside the timed
    window would put their cost, which grows with libvirtd's load, on the floor): seconds."""
    idle: queue.SimpleQueue[Virt] = queue.SimpleQueue()
    opened = [Virt() for _ in range(min(workers, len(names)))]
    for virt in opened:
        idle.put(virt)
    local = threading.local()

    def one(name: str) -> None:
        if not hasattr(local, "virt"):
            local.virt = idle.get_nowait()
        call(local.virt, name)

    try:
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(opened)) as pool:
            list(pool.map(one, names))
        return time.monotonic() - began
    finally:
        for virt in opened:
            virt.close()


def force_off(names: Sequence[str], workers: int) -> dict[str, float | int]:
    """Freeze and destroy the running containers NAMES, WORKERS at a time: seconds until every
    call returned (libvirt's destroy returns once the container's processes are gone). Then,
    untimed, what lxcforge's destroy also does after a frozen kill: libvirt's groups of each
    container removed once its controller has exited (cgroups.remove_libvirt_groups), or they
    would pile up round after round."""
    controllers = {name: host.lxc_controller_pid(name) for name in names}
    groups = {name: cgroups.libvirt_group_name(pid) if pid else None for name, pid in controllers.items()}

    def frozen_kill(virt: Virt, name: str) -> None:
        if not virt.destroy_frozen(name, running=True):
            raise RuntimeError(f"{name}: libvirt could not freeze and destroy it")

    seconds = _in_parallel(frozen_kill, names, workers)
    for name, pid in controllers.items():
        if pid is not None and host.wait_exited([pid], 2.0):
            cgroups.remove_libvirt_groups(pid, groups[name])
    return {"count": len(names), "workers": workers, "destroyed_s": round(seconds, 3)}


def start_and_lease(names: Sequence[str], workers: int, timeout: float = 120.0) -> dict[str, float | int]:
    """Start the stopped containers NAMES, WORKERS at a time: seconds until every start call
    returned and until every one held a renewed lease (from the first call's start)."""
    with Virt() as virt:
        uuids = {}
        interfaces = {}
        for name in names:
            info = virt.domain(name)
            uuids[name], interfaces[name] = info.uuid, interface_of(name, info.xml)
        each = list(interfaces.values())
        before = leases_by_mac(virt, each)

    def start(virt: Virt, name: str) -> None:
        with cgroups.unprivileged_start(uuids[name], interfaces[name].idmap_offset):
            virt.start(name)

    wanted = {i.mac for i in each}
    with Virt() as virt:  # for the lease reads, opened before the clock too
        began = time.monotonic()
        started = _in_parallel(start, names, workers)
        while True:
            if wanted <= renewed(before, leases_by_mac(virt, each)):
                break
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"{len(wanted)} containers not all leased within {timeout:.0f} s")
            time.sleep(POLL_SECONDS)
    return {"count": len(names), "workers": workers, "started_s": round(started, 3),
            "leased_s": round(time.monotonic() - began, 3)}
