"""`lxcforge doctor`: is this host ready to run containers, and if not, what to do."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from lxcforge import cgroups, host, network, store, vethmac
from lxcforge.config import Settings
from lxcforge.errors import LxcforgeError
from lxcforge.ops import addresses, repair
from lxcforge.ops.capacity import BRIDGE_PORTS, INOTIFY_PER_CONTAINER
from lxcforge.run import which
from lxcforge.virt import Virt

PROVISION = "vagrant/provision.sh"


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def check_root(_: Settings) -> list[Check]:
    if host.is_root():
        return [Check("root", Status.OK, "running as root")]
    return [Check("root", Status.FAIL, "not running as root", "run lxcforge with sudo")]


def check_store(settings: Settings) -> list[Check]:
    pool = store.Store.from_settings(settings)
    status = pool.status()
    checks = []
    if status.state is store.StoreState.READY:
        checks.append(Check("store", Status.OK, f"{settings.store}: {status.detail}"))
        quotas = store.quotas_enabled(settings.store) if host.is_root() else None
        if quotas:
            checks.append(Check("btrfs quotas", Status.FAIL, "qgroups are enabled on the store",
                                f"btrfs quota disable {settings.store} (qgroups make snapshots "
                                "up to 10x slower and stall deletion)"))
        elif quotas is False:
            checks.append(Check("btrfs quotas", Status.OK, "off"))
    elif status.state is store.StoreState.DETACHED:
        checks.append(Check("store", Status.FAIL, f"{settings.store}: {status.detail}",
                            "run 'lxcforge store attach' (any lxcforge command re-attaches it)"))
    elif status.state is store.StoreState.ABSENT:
        checks.append(Check("store", Status.WARN, f"{settings.store}: {status.detail}",
                            "run 'lxcforge store attach' to create the loop-file btrfs pool now"))
    else:
        checks.append(Check("store", Status.FAIL, status.detail,
                            "use --store with a btrfs directory or an empty one"))
    return checks


def check_libvirt(settings: Settings) -> list[Check]:
    checks = []
    mounts = host.mounts()
    daemon_pids = host.libvirt_daemon_pids()
    if host.has_hybrid_cgroups(mounts):
        seen_by_daemon = []
        for pid in daemon_pids:
            try:
                seen_by_daemon.append(host.has_hybrid_cgroups(host.mounts(pid)))
            except OSError:
                continue
        if any(seen_by_daemon):
            checks.append(Check(
                "cgroup layout", Status.FAIL,
                "hybrid cgroups: libvirtd sees cgroup2 at /sys/fs/cgroup/unified, so every LXC "
                "start fails with 'Unable to create directory /sys/fs/cgroup/unified'",
                "restart libvirtd without that mount: unshare -m --propagation slave sh -c "
                f"'umount /sys/fs/cgroup/unified && exec libvirtd -d' ({PROVISION} does this)"))
        else:
            checks.append(Check("cgroup layout", Status.OK,
                                "hybrid cgroups; libvirtd runs without /sys/fs/cgroup/unified"))
    else:
        checks.append(Check("cgroup layout", Status.OK, "no hybrid cgroup2 mount"))
    try:
        with Virt(settings.uri) as virt:
            versions = virt.versions()
            checks.append(Check("libvirtd", Status.OK,
                                f"{settings.uri}: libvirt {versions['libvirt']}, "
                                f"{versions['driver']} driver, kernel {versions['kernel']}"))
            checks.extend(_check_network(virt, settings.network))
            checks.append(_check_stale_cgroups(virt))
    except LxcforgeError as exc:
        checks.append(Check("libvirtd", Status.FAIL, str(exc),
                            f"start libvirtd ({PROVISION} does it), then run lxcforge doctor again"))
    return checks


def check_cgroup_hierarchies(_: Settings) -> list[Check]:
    missing = cgroups.host_missing_hierarchies()
    if missing:
        return [Check("cgroup hierarchies", Status.WARN,
                      f"{', '.join(missing)} not mounted: every container's systemd creates and destroys "
                      "them under the kernel's cgroup lock, and boots slower",
                      "lxcforge host tune")]
    return [Check("cgroup hierarchies", Status.OK, "every controller the kernel has is mounted")]


def check_veth_macs(_: Settings) -> list[Check]:
    if not vethmac.applies():
        return []
    if vethmac.missing():
        return [Check("veth MACs", Status.FAIL,
                      "udev may replace the MAC libvirt gives a container's veth (MACAddressPolicy=persistent): "
                      "such a container misses its DHCP reservation and new waits for it in vain",
                      "lxcforge host tune")]
    return [Check("veth MACs", Status.OK, f"kept as libvirt sets them ({vethmac.LINK})")]


def _check_stale_cgroups(virt: Virt) -> Check:
    stale = cgroups.stale_groups(virt.domain_uuids)
    if stale:
        return Check("stale cgroups", Status.WARN,
                     f"{len(stale)} cgroups of containers that no longer exist or have stopped "
                     f"(under {cgroups.PARENT}/ and libvirt's {cgroups.LIBVIRT_PARENT}/)",
                     "lxcforge host tune")
    return Check("stale cgroups", Status.OK, "none")


def _check_network(virt: Virt, name: str) -> list[Check]:
    info = virt.network(name)
    if info is None:
        return [Check("network", Status.FAIL, f"network {name!r} is not defined",
                      f"define it (e.g. 'lxcforge network create {name} --subnet 192.168.122.0/24') "
                      "or pick another with --network")]
    if not info.active:
        return [Check("network", Status.FAIL, f"network {name!r} is not active",
                      f"virsh -c lxc:/// net-start {name} && virsh -c lxc:/// net-autostart {name}")]
    plan = network.parse_network_xml(info.xml)
    free = len(network.free_addresses(plan, addresses.leased_elsewhere(virt, plan)))
    status = Status.OK if free > 0 else Status.FAIL
    checks = [Check("network", status,
                    f"{name!r} active on {info.bridge}, {free} of {plan.range_size()} DHCP addresses free",
                    "" if free else "destroy unused containers or create a larger network")]
    if network.is_adopted(info.xml):
        checks.append(Check("reservations", Status.OK, f"through dnsmasq's hosts directory {plan.hostsdir}"))
    else:
        checks.append(Check("reservations", Status.WARN,
                            f"{name!r} takes reservations through libvirt's live update, ~0.3 s each, one at "
                            "a time: slow for many containers",
                            f"lxcforge network adopt {name} (restarts it; nothing may be attached)"))
    return checks


def check_tools(_: Settings) -> list[Check]:
    checks = []
    managers = [m for m in ("dnf5", "dnf", "yum") if which(m)]
    if managers:
        checks.append(Check("package manager", Status.OK, ", ".join(managers)))
    else:
        checks.append(Check("package manager", Status.FAIL, "none of dnf5, dnf, yum found",
                            "install dnf (Debian: apt-get install dnf)"))
    for tool, package in (("rpm", "rpm"), ("debootstrap", "debootstrap"),
                          ("mkfs.btrfs", "btrfs-progs"), ("btrfs", "btrfs-progs")):
        if which(tool):
            checks.append(Check(tool, Status.OK, which(tool) or ""))
        else:
            checks.append(Check(tool, Status.FAIL, f"{tool} not found", f"install {package}"))
    return checks


def _limit(name: str, label: str, judge: Callable[[int], tuple[Status, str, str]]) -> Check:
    raw = host.read_sysctl(name)
    if raw is None or not raw.split()[0].lstrip("-").isdigit():
        return Check(label, Status.WARN, f"{name} unreadable")
    status, detail, fix = judge(int(raw.split()[0]))
    return Check(label, status, f"{name} = {raw}; {detail}", fix)


def check_kernel_limits(_: Settings) -> list[Check]:
    def inotify(value: int) -> tuple[Status, str, str]:
        room = value // INOTIFY_PER_CONTAINER
        if value < 1024:
            return (Status.WARN, f"room for about {room} systemd containers",
                    "lxcforge host tune (or sysctl -w fs.inotify.max_user_instances=8192)")
        return Status.OK, f"room for about {room} systemd containers", ""

    def pid_max(value: int) -> tuple[Status, str, str]:
        if value < 65536:
            return Status.WARN, "few PIDs for hundreds of containers", "sysctl -w kernel.pid_max=4194304"
        return Status.OK, "enough PIDs", ""

    def pty_max(value: int) -> tuple[Status, str, str]:
        return Status.OK, f"one console pty per container: up to {value}", ""

    def gc_thresh3(value: int) -> tuple[Status, str, str]:
        if value < 2048:
            return (Status.WARN, f"ARP table holds {value} neighbours; more containers lose traffic",
                    "sysctl -w net.ipv4.neigh.default.gc_thresh3=8192")
        return Status.OK, f"ARP table holds {value} neighbours", ""

    def backlog(value: int) -> tuple[Status, str, str]:
        return Status.OK, "packets queued per CPU", ""

    return [
        Check("bridge ports", Status.OK, f"at most {BRIDGE_PORTS} containers per bridge (Linux limit)"),
        _limit("kernel.pty.max", "pty max", pty_max),
        _limit("fs.inotify.max_user_instances", "inotify instances", inotify),
        _limit("kernel.pid_max", "pid max", pid_max),
        _limit("net.ipv4.neigh.default.gc_thresh3", "ARP table", gc_thresh3),
        _limit("net.core.netdev_max_backlog", "netdev backlog", backlog),
    ]


def check_leftovers(settings: Settings) -> list[Check]:
    """What `gc` would remove or repair: leftovers of killed commands, containers libvirt lost."""
    from lxcforge.ops import gc

    if store.Store.from_settings(settings).status().state is not store.StoreState.READY or not host.is_root():
        return []
    report = gc.collect(settings, dry_run=True)
    counts = report.by_kind()
    unmanaged = [i.what for i in report.items if i.kind == "unmanaged"]
    checks = []
    if unmanaged:
        shown = ", ".join(unmanaged[:5]) + (" ..." if len(unmanaged) > 5 else "")
        checks.append(Check("managed containers", Status.FAIL,
                            f"{len(unmanaged)} {repair.UNMANAGED}: {shown}", repair.FIX))
    else:
        checks.append(Check("managed containers", Status.OK, "libvirt knows every running container's init"))
    counts.pop("unmanaged", None)
    if counts:
        detail = ", ".join(f"{n} {kind}" + ("s" if n > 1 else "") for kind, n in sorted(counts.items()))
        checks.append(Check("leftovers", Status.WARN, f"left by interrupted commands: {detail}",
                            "lxcforge gc (see first: lxcforge gc --dry-run)"))
    else:
        checks.append(Check("leftovers", Status.OK, "none"))
    return checks


CHECKS = (check_root, check_store, check_libvirt, check_cgroup_hierarchies, check_veth_macs, check_tools,
          check_kernel_limits, check_leftovers)


def run_checks(settings: Settings) -> list[Check]:
    results: list[Check] = []
    for check in CHECKS:
        try:
            results.extend(check(settings))
        except LxcforgeError as exc:
            results.append(Check(check.__name__.removeprefix("check_"), Status.FAIL, str(exc),
                                 exc.hint or ""))
    return results
