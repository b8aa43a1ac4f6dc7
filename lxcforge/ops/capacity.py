"""Capacity before work: everything knowable at container 0 that would stop container 250.

check_new() returns every problem at once, each with its fix; require() refuses with all of
them. raise_limits() raises the kernel limits lxcforge can raise (lxcforge host tune)."""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lxcforge import domain, host, network, store
from lxcforge.errors import CapacityError
from lxcforge.ops import addresses
from lxcforge.ops import container as container_ops
from lxcforge.store import Store
from lxcforge.virt import Virt

BRIDGE_PORTS = 1024  # Linux: BR_MAX_PORTS
# Measured per systemd container (Debian base): ~6 inotify instances, ~20 processes and
# threads with libvirt's controller, ~12 MiB of host memory (a busybox container ~3.5 MiB),
# no disk of its own with a volatile journal (8 MiB with a persistent one), 2 ptys.
INOTIFY_PER_CONTAINER = 6
PIDS_PER_CONTAINER = 40
MEMORY_PER_CONTAINER = 16 * 1024**2
DISK_PER_CONTAINER = 16 * 1024**2
PTYS_PER_CONTAINER = 2
FDS_PER_CONTAINER_IN_LIBVIRTD = 8
# Kernel keys a systemd container's services hold (one session keyring each, and more), all
# charged to one host uid when containers share an id range: 60 unprivileged containers used
# 364 keys, past the default quota of 200 for non-root users (units then fail at step KEYRING).
KEYS_PER_CONTAINER = 8

# What `lxcforge host tune` (and vagrant/provision.sh) sets; values for a few thousand containers.
TUNED = {
    "fs.inotify.max_user_instances": 8192,
    "fs.inotify.max_user_watches": 1048576,
    "kernel.pid_max": 4194304,
    "kernel.pty.max": 16384,
    "net.ipv4.neigh.default.gc_thresh1": 2048,
    "net.ipv4.neigh.default.gc_thresh2": 4096,
    "net.ipv4.neigh.default.gc_thresh3": 8192,
    "net.core.netdev_max_backlog": 16384,
    "kernel.keys.maxkeys": 200000,
    "kernel.keys.maxbytes": 25000000,
}


@dataclass(frozen=True)
class Problem:
    what: str
    detail: str
    fix: str


def _sysctl_int(name: str) -> int | None:
    raw = host.read_sysctl(name)
    try:
        return int(raw.split()[0]) if raw else None
    except ValueError:
        return None


def _tune_fix(name: str) -> str:
    return f"lxcforge host tune, or new --tune-host (or sysctl -w {name}={TUNED[name]})"


@dataclass(frozen=True)
class HostLoad:
    running_containers: int
    pids_in_use: int  # threads: each takes a pid
    ptys: int
    mem_available: int
    libvirtd_nofile: int | None
    inotify_in_use: int = 0


# Host processes' inotify instances besides the containers' (a desktop holds a few hundred).
INOTIFY_HOST_ALLOWANCE = 512


def must_count_inotify(running: int, adding: int, limit: int | None) -> bool:
    """Whether inotify instances must be counted: the count reads every root process's
    descriptors (tens of thousands with 1000 containers), so it is made only where a
    generous estimate of the use after this batch comes near the limit."""
    return limit is not None and (running + adding) * INOTIFY_PER_CONTAINER + INOTIFY_HOST_ALLOWANCE > limit


def host_load(virt: Virt, adding: int = 0, inotify_limit: int | None = None) -> HostLoad:
    """What the host already carries; each figure read in O(1) of the containers on it,
    except inotify instances, counted only near their limit (must_count_inotify)."""
    running = virt.running_count()
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    available = int(meminfo.get("MemAvailable", "0 kB").split()[0]) * 1024
    nofile = None
    for pid in host.libvirt_daemon_pids():
        try:
            for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
                if line.startswith("Max open files"):
                    nofile = int(line.split()[3])
        except (OSError, ValueError, IndexError):
            continue
    inotify = host.inotify_instances_of_root() if must_count_inotify(running, adding, inotify_limit) else 0
    return HostLoad(running, host.threads_total() or 0, _sysctl_int("kernel.pty.nr") or 0, available, nofile,
                    inotify)


def evaluate(
    count: int,
    load: HostLoad,
    plans: Mapping[str, network.NetworkPlan],
    free_by_network: Mapping[str, int],
    ports_by_network: Mapping[str, int],
    memory_limit: int,
    sysctls: Mapping[str, int | None],
    own_nofile: int,
    store_free: int | None,
    quotas: bool | None,
    unprivileged: bool = False,
) -> list[Problem]:
    """Pure: every problem that `count` more containers would hit, with its fix."""
    problems: list[Problem] = []
    nets = list(plans)
    share = {net: count // len(nets) + (1 if i < count % len(nets) else 0) for i, net in enumerate(nets)}
    for net in nets:
        need, free = share[net], free_by_network[net]
        if need > free:
            problems.append(Problem(
                "addresses", f"network {net} has {free} free addresses, {need} needed",
                "destroy unused containers, or spread over more networks: --network a,b "
                "(lxcforge network create NAME --subnet 10.X.0.0/22)"))
        ports = ports_by_network.get(net, 0)
        if ports + need > BRIDGE_PORTS:
            problems.append(Problem(
                "bridge ports", f"bridge of {net} has {ports} ports; {need} more exceed Linux's {BRIDGE_PORTS}",
                "spread over more networks: --network a,b"))
    total = load.running_containers + count
    inotify = sysctls.get("fs.inotify.max_user_instances")
    if inotify is not None and load.inotify_in_use + count * INOTIFY_PER_CONTAINER > inotify:
        room = max(0, (inotify - load.inotify_in_use) // INOTIFY_PER_CONTAINER)
        problems.append(Problem(
            "inotify instances", f"fs.inotify.max_user_instances = {inotify}, {load.inotify_in_use} in use: "
            f"room for about {room} more systemd containers, {count} wanted",
            _tune_fix("fs.inotify.max_user_instances")))
    maxkeys = sysctls.get("kernel.keys.maxkeys")
    if unprivileged and maxkeys is not None and total * KEYS_PER_CONTAINER > maxkeys:
        problems.append(Problem(
            "kernel keys", f"kernel.keys.maxkeys = {maxkeys} keys per host user; {total} unprivileged containers "
            f"of one id range need about {total * KEYS_PER_CONTAINER}", _tune_fix("kernel.keys.maxkeys")))
    pid_max = sysctls.get("kernel.pid_max")
    if pid_max is not None and load.pids_in_use + count * PIDS_PER_CONTAINER > pid_max:
        problems.append(Problem("pid max", f"kernel.pid_max = {pid_max} is too low for {count} more containers",
                                _tune_fix("kernel.pid_max")))
    pty_max = sysctls.get("kernel.pty.max")
    if pty_max is not None and load.ptys + count * PTYS_PER_CONTAINER > pty_max:
        problems.append(Problem("ptys", f"kernel.pty.max = {pty_max}, {load.ptys} in use", _tune_fix("kernel.pty.max")))
    thresh = sysctls.get("net.ipv4.neigh.default.gc_thresh3")
    if thresh is not None and total + 16 > thresh:
        problems.append(Problem(
            "ARP table", f"net.ipv4.neigh.default.gc_thresh3 = {thresh}: the host forgets neighbours beyond "
            f"that; {total} containers wanted", _tune_fix("net.ipv4.neigh.default.gc_thresh3")))
    backlog = sysctls.get("net.core.netdev_max_backlog")
    if backlog is not None and count >= 300 and backlog < 4096:
        problems.append(Problem(
            "netdev backlog", f"net.core.netdev_max_backlog = {backlog}: DHCP bursts of {count} containers "
            "are dropped", _tune_fix("net.core.netdev_max_backlog")))
    if count * MEMORY_PER_CONTAINER > load.mem_available:
        problems.append(Problem(
            "memory", f"{count} containers use about {count * MEMORY_PER_CONTAINER // 1024**2} MiB; "
            f"{load.mem_available // 1024**2} MiB available", "stop or destroy containers first"))
    if memory_limit < 16 * 1024**2:
        problems.append(Problem("memory limit", f"--memory {memory_limit // 1024**2}M is too small to boot",
                                "use at least --memory 64M"))
    if load.libvirtd_nofile is not None and total * FDS_PER_CONTAINER_IN_LIBVIRTD > load.libvirtd_nofile:
        problems.append(Problem(
            "libvirtd open files", f"libvirtd may open {load.libvirtd_nofile} files; {total} containers "
            f"need about {total * FDS_PER_CONTAINER_IN_LIBVIRTD}",
            "raise LimitNOFILE of libvirtd (systemctl edit libvirtd) and restart it"))
    if own_nofile < 1024:
        problems.append(Problem("open files", f"this lxcforge may open only {own_nofile} files",
                                "ulimit -n 65536"))
    if store_free is not None and count * DISK_PER_CONTAINER > store_free:
        problems.append(Problem("store space", f"{store_free // 1024**2} MiB free in the store, about "
                                f"{count * DISK_PER_CONTAINER // 1024**2} MiB needed",
                                "free space, or grow the pool (LXCFORGE_POOL_SIZE, btrfs filesystem resize)"))
    if quotas:
        problems.append(Problem("btrfs quotas", "qgroups are on: each snapshot is up to 10x slower",
                                "btrfs quota disable STORE"))
    return problems


def raise_own_nofile() -> int:
    """Raise this process's soft open-file limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def check_new(virt: Virt, pool: Store, plans: Mapping[str, network.NetworkPlan], count: int,
              options: container_ops.NewOptions) -> list[Problem]:
    free_by_network = {}
    ports_by_network = {}
    for net, plan in plans.items():
        leased = addresses.leased_elsewhere(virt, plan)
        free_by_network[net] = len(network.free_addresses(plan, leased))
        ports_by_network[net] = host.bridge_ports(plan.bridge)
    sysctls = {name: _sysctl_int(name) for name in TUNED}
    try:
        memory = domain.parse_size(options.memory)
    except ValueError:
        memory = 0
    load = host_load(virt, count, sysctls.get("fs.inotify.max_user_instances"))
    return evaluate(count, load, plans, free_by_network, ports_by_network, memory, sysctls,
                    raise_own_nofile(), _free_bytes(pool.root), store.quotas_enabled(pool.root),
                    unprivileged=options.idmap_offset is not None)


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def require(problems: list[Problem]) -> None:
    if not problems:
        return
    details = "; ".join(f"{p.what}: {p.detail}" for p in problems)
    fixes = "; ".join(dict.fromkeys(p.fix for p in problems))
    raise CapacityError(f"not enough room on this host: {details}", hint=fixes)


def raise_limits() -> list[str]:
    """Raise kernel limits to TUNED where they are lower; returns what changed."""
    changed = []
    for name, value in TUNED.items():
        current = _sysctl_int(name)
        if current is not None and current < value:
            Path("/proc/sys", *name.split(".")).write_text(f"{value}\n")
            changed.append(f"{name}={value}")
    return changed
