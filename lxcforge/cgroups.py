"""Containers' cgroups on cgroup v1 (legacy and hybrid) hosts where libvirt leaves gaps.

Own group. Without systemd-machined (no systemd as the host's init), libvirt puts each
container in its own cgroup for cpu, memory, blkio... but not in the name=systemd hierarchy,
and containers share the host's cgroup namespace. Every container's systemd then takes the
host's name=systemd root for its own, and they create and remove each other's
/system.slice/<unit> groups: units fail with 219/CGROUP, more often the more containers
start at once. A small wrapper run as the container's init moves it into lxcforge/<uuid>
first; systemd then builds its tree below that. It does nothing where the container already
has its own group (machined, /machine.slice) or there is no such hierarchy (cgroup v2).

Legacy layout. The same wrapper tells systemd (systemd reads a container init's arguments as
its kernel command line) to stay on the legacy layout its cgroups already have. Otherwise
systemd 252 mounts cgroup2 at /sys/fs/cgroup/unified and mirrors its tree there, in the
host's one cgroup2 hierarchy: every cgroup v1 mount by any later container walks all of
those groups under the global cgroup lock, and nothing removed them when a container went.

Host hierarchies. A container's systemd mounts every v1 controller the kernel has; libvirt
mounts only the ones it manages. For a controller no host hierarchy holds (net_cls,
perf_event, hugetlb on hosts without systemd), the first container's mount creates the
hierarchy and the last container's exit destroys it, 0.1-0.4 s of kernel time each under
the cgroup lock. Mounting them once on the host (lxcforge host tune) makes those mounts
cheap: measured 14-135 ticks of kernel time for one container's systemd, 4-7 after."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lxcforge import host
from lxcforge.run import run

WRAPPER_PATH = "/usr/sbin/lxcforge-init"
CGROUP_ROOT = Path("/sys/fs/cgroup")
HOST_HIERARCHY = CGROUP_ROOT / "systemd"
UNIFIED = CGROUP_ROOT / "unified"
# Where lxcforge/<uuid> groups live: name=systemd (the wrapper's), and the cgroup2 hierarchy
# where systemd mirrored its tree in hybrid mode (containers made before the wrapper kept
# systemd on the legacy layout, or guests that ignore the argument).
HIERARCHIES = (HOST_HIERARCHY, UNIFIED)
PARENT = "lxcforge"
PROC_CGROUPS = Path("/proc/cgroups")

# systemd mounts these pairs as one hierarchy; a host mounting either alone makes the
# container's mount fail (EBUSY), so the host follows the same pairing.
JOINED = (("cpu", "cpuacct"), ("net_cls", "net_prio"))

WRAPPER = f"""#!/bin/sh
# lxcforge: give this container's init its own name=systemd cgroup where libvirt did not
# (hosts without systemd-machined), so containers' systemds do not share unit cgroups; and
# keep systemd on the legacy layout, out of the host's cgroup2 hierarchy.
legacy=
while IFS=: read -r _ controllers path; do
    [ "$controllers" = name=systemd ] || continue
    legacy=systemd.legacy_systemd_cgroup_controller=1
    case "$path" in
        /machine*) ;;
        *) own="/sys/fs/cgroup/systemd/{PARENT}/${{LIBVIRT_LXC_UUID:-$$}}"
           mkdir -p "$own" 2>/dev/null && echo $$ > "$own/cgroup.procs" 2>/dev/null ;;
    esac
done < /proc/self/cgroup
exec /sbin/init "$@" $legacy
"""


def host_group(uuid: str) -> Path:
    return HOST_HIERARCHY / PARENT / uuid


def remove_tree(root: Path) -> bool:
    """rmdir a cgroup tree deepest first; True if it is gone."""
    if not root.is_dir():
        return True
    for dirpath, _dirnames, _files in sorted(os.walk(root), key=lambda entry: -entry[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    return not root.exists()


def remove_group(uuid: str) -> None:
    """Remove a stopped container's (now empty) cgroup trees."""
    for hierarchy in HIERARCHIES:
        remove_tree(hierarchy / PARENT / uuid)


def groups() -> list[Path]:
    """Every lxcforge/<uuid> group present, in both hierarchies."""
    found: list[Path] = []
    for hierarchy in HIERARCHIES:
        try:
            found.extend(entry for entry in (hierarchy / PARENT).iterdir() if entry.is_dir())
        except OSError:
            continue
    return sorted(found)


def stale_groups(live_uuids: Callable[[], set[str]]) -> list[Path]:
    """Groups of containers that no longer exist. The groups are listed before the
    containers, so a container started meanwhile is never counted stale."""
    present = groups()
    live = live_uuids()
    return [group for group in present if group.name not in live]


def remove_stale_groups(live_uuids: Callable[[], set[str]]) -> int:
    """Remove the groups of containers that no longer exist (a running container's group
    cannot be removed anyway: it holds processes); returns how many went."""
    return sum(1 for group in stale_groups(live_uuids) if remove_tree(group))


def missing_hierarchies(proc_cgroups: str, mount_list: list[host.Mount]) -> list[str]:
    """v1 controllers the kernel offers that no hierarchy mounted here holds, grouped as
    systemd mounts them ("net_cls,net_prio"). Empty on cgroup v2 hosts."""
    mounted = host.mounted_cgroup_controllers(mount_list)
    if mounted is None:
        return []
    missing = [c for c in host.cgroup_v1_controllers(proc_cgroups) if c not in mounted]
    groups: list[str] = []
    for controller in missing:
        pair = next((p for p in JOINED if controller in p), None)
        if pair and all(c in missing for c in pair):
            name = ",".join(pair)
            if name not in groups:
                groups.append(name)
        else:
            groups.append(controller)
    return groups


def host_missing_hierarchies() -> list[str]:
    try:
        return missing_hierarchies(PROC_CGROUPS.read_text(), host.mounts())
    except OSError:
        return []


def mount_hierarchies(groups: list[str]) -> None:
    """Mount each controller group at /sys/fs/cgroup/<group>, as systemd would."""
    for group in groups:
        target = CGROUP_ROOT / group
        target.mkdir(exist_ok=True)
        run(["mount", "-t", "cgroup", "-o", f"nosuid,nodev,noexec,{group}", "cgroup", str(target)],
            hint=f"mount the {group} cgroup hierarchy by hand, or ignore: containers boot slower without it")
        # systemd's links (net_cls -> net_cls,net_prio): libvirt looks a controller up by name.
        for member in group.split(",") if "," in group else ():
            link = CGROUP_ROOT / member
            if not link.exists() and not link.is_symlink():
                link.symlink_to(group)
