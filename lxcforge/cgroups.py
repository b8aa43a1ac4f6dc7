"""Containers' cgroups on cgroup v1 (legacy and hybrid) hosts where libvirt leaves gaps.

Own group. Without systemd-machined (no systemd as the host's init), libvirt puts each
container in its own cgroup for cpu, memory, blkio... but not in the name=systemd hierarchy,
and containers share the host's cgroup namespace. Every container's systemd then takes the
host's name=systemd root for its own, and they create and remove each other's
/system.slice/<unit> groups: units fail with 219/CGROUP, more often the more containers
start at once. A small wrapper run as the container's init moves it into lxcforge/<uuid>
first; systemd then builds its tree below that. It does nothing where the container already
has its own group (machined, /machine.slice) or there is no such hierarchy (cgroup v2).
On cgroup v2 (systemd hosts, machined) libvirt does make the container a scope of its own,
but mounts the host's whole hierarchy into it, writable: the wrapper gives the container a
cgroup namespace there too (see WRAPPER).

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

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lxcforge import domain, host
from lxcforge.run import run

if TYPE_CHECKING:
    from lxcforge.virt import Virt

WRAPPER_PATH = "/usr/sbin/lxcforge-init"
CGROUP_ROOT = Path("/sys/fs/cgroup")
HOST_HIERARCHY = CGROUP_ROOT / "systemd"
UNIFIED = CGROUP_ROOT / "unified"
PARENT = "lxcforge"
# The container's own group below the one libvirt made and set limits on.
OWN_CHILD = "container"
PROC_CGROUPS = Path("/proc/cgroups")

# systemd mounts these pairs as one hierarchy; a host mounting either alone makes the
# container's mount fail (EBUSY), so the host follows the same pairing.
JOINED = (("cpu", "cpuacct"), ("net_cls", "net_prio"))


def hierarchies() -> list[Path]:
    """Where lxcforge/<uuid> groups live: every hierarchy mounted under /sys/fs/cgroup
    (lxcforge-init makes one wherever libvirt left the container at the host's root:
    name=systemd, pids, hugetlb, cgroup2; and older containers' systemd mirrored its tree
    into cgroup2)."""
    try:
        entries = sorted(CGROUP_ROOT.iterdir())
    except OSError:
        return []
    return [entry for entry in entries if not entry.is_symlink() and (entry / "cgroup.procs").exists()]


WRAPPER = f"""#!/bin/sh
# lxcforge: run as the container's init before the real one (see lxcforge/cgroups.py).
# On cgroup v1 hosts:
# 1. groups of its own in every hierarchy: a child of libvirt's group where libvirt made one
#    (so the limits libvirt set there stay out of the container's reach), lxcforge/UUID where
#    libvirt left it at the host's root (name=systemd, pids, hugetlb, cgroup2);
# 2. a cgroup namespace rooted there, /sys/fs/cgroup remounted to show only that root;
# 3. systemd kept on the legacy layout, out of the host's cgroup2 hierarchy.
# On cgroup v2 hosts libvirt mounts the host's whole hierarchy, writable, and opens no cgroup
# namespace either: the same child of libvirt's group and the same namespace.
# Each tool run is a fork and an exec on every boot: shell builtins wherever they do, and
# one run of a tool for all hierarchies (mkdir, umount, mount -a: ~40 runs before, 6 now).
v1= unified=yes systemd_v1= unified_path=
while IFS=: read -r _ controllers path; do
    case "$controllers" in
        "") unified_path=$path ;;
        name=systemd) v1=yes unified= systemd_v1=yes ;;
        *) v1=yes unified= ;;
    esac
done 2>/dev/null < /proc/self/cgroup
# In a user namespace the host's hierarchies cannot be mounted, nor libvirt's groups (the
# host root's) written: lxcforge makes the name=systemd group for such a container.
privileged=
read -r _ outside count 2>/dev/null < /proc/self/uid_map || privileged=yes
[ "$outside $count" != "0 4294967295" ] || privileged=yes
cgroupns() {{ [ -e /proc/self/ns/cgroup ] && unshare --cgroup true 2>/dev/null; }}
tmp=/dev/.lxcforge-cgroup
if [ "$LXCFORGE_INIT_STAGE" != cgroupns ] && [ -n "$v1" ]; then
    uuid=${{LIBVIRT_LXC_UUID:-$$}}
    # moves: "own group:libvirt's group" per hierarchy shown; hidden: "where:type:options:
    # own:libvirt's" per hierarchy to mount first (no hierarchy, group or path has a colon).
    moves= hidden= n=0
    while IFS=: read -r _ controllers path; do
        case "$path" in
            /machine*/{OWN_CHILD}|/{PARENT}/*) continue ;;
            /machine*) own="$path/{OWN_CHILD}" ;;
            /) own="/{PARENT}/$uuid" ;;
            *) continue ;;
        esac
        dir="/sys/fs/cgroup/${{controllers#name=}}"
        if [ -z "$controllers" ] || [ ! -f "$dir/cgroup.procs" ]; then
            [ -n "$privileged" ] || continue
            n=$((n + 1))
            case "$controllers" in
                "") hidden="$hidden $tmp/$n:cgroup2:-:$own:$path" ;;
                name=*) hidden="$hidden $tmp/$n:cgroup:none,$controllers:$own:$path" ;;
                *) hidden="$hidden $tmp/$n:cgroup:$controllers:$own:$path" ;;
            esac
        elif [ -d "$dir$own" ] || [ -w "$dir$path" ]; then
            moves="$moves $dir$own:$dir$path"
        fi
    done < /proc/self/cgroup
    mounted=
    if [ -n "$hidden" ]; then
        for entry in $hidden; do mounted="$mounted ${{entry%%:*}}"; done
        mkdir -p $mounted
        for entry in $hidden; do
            dir=${{entry%%:*}} rest=${{entry#*:}}
            type=${{rest%%:*}} rest=${{rest#*:}}
            options=${{rest%%:*}} rest=${{rest#*:}}
            if [ "$type" = cgroup2 ]; then mount -t cgroup2 cgroup2 "$dir"
            else mount -t cgroup -o "$options" cgroup "$dir"
            fi 2>/dev/null && moves="$moves $dir${{rest%%:*}}:$dir${{rest#*:}}"
        done
    fi
    missing=
    for entry in $moves; do [ -d "${{entry%%:*}}" ] || missing="$missing ${{entry%%:*}}"; done
    [ -z "$missing" ] || mkdir -p $missing 2>/dev/null
    for entry in $moves; do
        own=${{entry%%:*}} path=${{entry#*:}}
        [ -d "$own" ] || continue
        if [ -f "$own/cpuset.cpus" ]; then
            read -r cpus < "$path/cpuset.cpus" && echo "$cpus" > "$own/cpuset.cpus"
            read -r mems < "$path/cpuset.mems" && echo "$mems" > "$own/cpuset.mems"
        fi
        echo $$ > "$own/cgroup.procs"
    done
    if [ -n "$mounted" ]; then
        umount $mounted 2>/dev/null
        rmdir $mounted $tmp 2>/dev/null
    fi
    # util-linux before 2.28 has no --cgroup: such a container keeps the host's view.
    if cgroupns; then
        LXCFORGE_INIT_STAGE=cgroupns exec unshare --cgroup "$0" "$@"
    fi
elif [ "$LXCFORGE_INIT_STAGE" != cgroupns ] && [ -n "$unified" ]; then
    # Moved even where no namespace follows (busybox, old util-linux): exec finds the
    # container's group by that child, and joins it.
    own="/sys/fs/cgroup$unified_path/{OWN_CHILD}"
    case "$unified_path" in
        /machine*/{OWN_CHILD}) ;;
        /machine*) if mkdir -p "$own" 2>/dev/null && echo $$ > "$own/cgroup.procs" 2>/dev/null && cgroupns; then
                LXCFORGE_INIT_STAGE=cgroupns exec unshare --cgroup "$0" "$@"
            fi ;;
    esac
elif [ "$LXCFORGE_INIT_STAGE" = cgroupns ]; then
    # libvirt bind-mounted the host's hierarchies whole: mount each afresh, which in this
    # namespace shows the container's own group as its root (over libvirt's where a user
    # namespace locks that one in place). One umount and one mount -a for all of them.
    bound= entries=
    while IFS=: read -r _ controllers _; do
        dir="/sys/fs/cgroup/${{controllers#name=}}"
        [ -n "$controllers" ] && [ -f "$dir/cgroup.procs" ] || continue
        bound="$bound $dir"
        case "$controllers" in name=*) controllers="none,$controllers" ;; esac
        entries="$entries
cgroup $dir cgroup nosuid,nodev,noexec,$controllers 0 0"
    done < /proc/self/cgroup
    if [ -n "$unified" ]; then
        bound=/sys/fs/cgroup entries="cgroup2 /sys/fs/cgroup cgroup2 nosuid,nodev,noexec 0 0"
    fi
    if [ -n "$bound" ]; then
        # (libmount parses no pipe: the list goes to a file on the container's /dev.)
        if echo "$entries" > $tmp.fstab; then
            umount $bound 2>/dev/null
            mount -a -T $tmp.fstab
            rm -f $tmp.fstab
        fi
    fi
fi
unset LXCFORGE_INIT_STAGE
legacy=
[ -z "$systemd_v1" ] || legacy=systemd.legacy_systemd_cgroup_controller=1
exec /sbin/init "$@" $legacy
"""


def namespace_root(path: str) -> str | None:
    """The group a container's cgroup namespace is rooted at, from one of its processes'
    paths as the host sees them (the wrapper's layout: libvirt's group/container, or
    lxcforge/UUID); None for a path outside such a root."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == PARENT:
        return "/".join(parts[:3])
    if len(parts) > 2 and parts[1].startswith("machine") and OWN_CHILD in parts[2:]:
        return "/".join(parts[:parts.index(OWN_CHILD, 2) + 1])
    return None


def namespace_root_procs(init_cgroup: str, mount_list: list[host.Mount]) -> list[str]:
    """The cgroup.procs file of the root of each hierarchy's namespace of a container whose
    init's /proc/PID/cgroup is init_cgroup: where a process entering the container belongs."""
    files = []
    for line in init_cgroup.splitlines():
        _hid, controllers, path = line.split(":", 2)
        root = namespace_root(path)
        mount_point = host.cgroup_mount_point(controllers, mount_list)
        if root is not None and mount_point is not None:
            files.append(f"{mount_point}{root}/cgroup.procs")
    return files


@contextlib.contextmanager
def unprivileged_start(uuid: str, idmap_offset: int | None) -> Iterator[None]:
    """Around the start of a container in a user namespace. Without machined, libvirt 9.0
    gives such a container the host's name=systemd root as its group and chowns it (and the
    files and groups at that root) to the container's root: another container's groups,
    release_agent and all. Its own lxcforge/UUID group is made and handed to it before the
    start (lxcforge-init moves into it), and the root given back to the host's root after."""
    if idmap_offset is None or not (HOST_HIERARCHY / "cgroup.procs").exists():
        yield
        return
    own = HOST_HIERARCHY / PARENT / uuid
    own.mkdir(parents=True, exist_ok=True)
    for path in [own, *own.iterdir()]:
        os.chown(path, idmap_offset, idmap_offset)
    try:
        yield
    finally:
        # What libvirt chowned: the root, its files and the groups at the root (lxcforge/ too).
        for path in [HOST_HIERARCHY, *HOST_HIERARCHY.iterdir()]:
            with contextlib.suppress(OSError):
                os.chown(path, 0, 0)


def start_domain(virt: Virt, name: str, ipv6_off: Callable[[list[str]], object] = host.disable_ipv6) -> None:
    """Start a defined container's domain, a user namespace's needs included (above)."""
    info = virt.domain(name)
    meta = domain.read_metadata(info.xml)
    start_defined(virt, name, info.uuid, meta.idmap_offset if meta is not None else None, ipv6_off)


def start_defined(virt: Virt, name: str, uuid: str, idmap_offset: int | None,
                  ipv6_off: Callable[[list[str]], object] = host.disable_ipv6) -> None:
    """Every start of a container: within unprivileged_start, then IPv6 off on the host end of
    its veth (host.disable_ipv6: a bridge port needs no address of its own; a batch passes
    its host.Ipv6Switch)."""
    with unprivileged_start(uuid, idmap_offset):
        virt.start(name)
    ipv6_off(virt.host_interfaces(name))


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
    for hierarchy in hierarchies():
        remove_tree(hierarchy / PARENT / uuid)


# Where libvirt makes an LXC domain's groups without machined: machine/lxc-PID-NAME.libvirt-lxc,
# PID its controller's; NAME as libvirt rewrites it (it drops and squeezes characters, cuts
# long names), so these groups are found by the controller's PID, never by the name.
LIBVIRT_PARENT = "machine"
LIBVIRT_SUFFIX = ".libvirt-lxc"


def libvirt_groups(hierarchy: Path, controller_pid: int | None = None) -> list[Path]:
    """libvirt's LXC groups in one hierarchy (of one controller's container, if given)."""
    pattern = f"lxc-{controller_pid if controller_pid is not None else '*'}-*{LIBVIRT_SUFFIX}"
    try:
        return [entry for entry in (hierarchy / LIBVIRT_PARENT).glob(pattern) if entry.is_dir()]
    except OSError:
        return []


def _controller_pid(group: Path) -> int | None:
    pid = group.name.removeprefix("lxc-").partition("-")[0]
    return int(pid) if pid.isdigit() else None


def holds_processes(root: Path) -> bool:
    """True if root or any group below it has a process (a running container's empty unit
    groups are its systemd's business: nothing of such a tree is pruned)."""
    for dirpath, _dirnames, _files in os.walk(root):
        try:
            if Path(dirpath, "cgroup.procs").read_text().strip():
                return True
        except OSError:
            continue
    return False


def libvirt_group_name(controller_pid: int, proc: Path = host.PROC) -> str | None:
    """The name of libvirt's group of a running controller (the same in every hierarchy), from
    the controller's /proc/PID/cgroup: known without listing machine/, which holds a group per
    running container."""
    prefix = f"lxc-{controller_pid}-"
    try:
        text = (proc / str(controller_pid) / "cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        _hid, _controllers, path = line.split(":", 2)
        for part in path.split("/"):
            if part.startswith(prefix) and part.endswith(LIBVIRT_SUFFIX):
                return part
    return None


def remove_libvirt_groups(controller_pid: int, name: str | None = None) -> None:
    """Remove libvirt's groups of a container that has stopped, once its init and controller
    have exited. libvirt removes them right after its SIGKILL to a paused container, while the
    killed processes (and its controller, which sits in them) are still exiting: the rmdir
    fails and they stay, one per hierarchy and container, thousands after a few scaling runs,
    each an empty group the kernel keeps (and walks on every cgroup v1 mount). With the group's
    name (libvirt_group_name, read while the controller ran) each hierarchy is one stat; without,
    one listing of its machine/."""
    for hierarchy in hierarchies():
        groups = libvirt_groups(hierarchy, controller_pid) if name is None else [hierarchy / LIBVIRT_PARENT / name]
        for group in groups:
            if group.is_dir() and not holds_processes(group):
                remove_tree(group)


def stale_libvirt_groups() -> list[Path]:
    """libvirt's LXC groups whose controller no longer runs and that hold no process (left by
    a frozen kill before lxcforge removed them, or by a libvirtd killed while it stopped a
    container). libvirt never uses such a group again: a start makes one named after its new
    controller."""
    stale = []
    for hierarchy in hierarchies():
        for group in libvirt_groups(hierarchy):
            pid = _controller_pid(group)
            if pid is not None and not host.is_libvirt_controller(pid) and not holds_processes(group):
                stale.append(group)
    return sorted(stale)


def groups() -> list[Path]:
    """Every lxcforge/<uuid> group present, in every hierarchy."""
    found: list[Path] = []
    for hierarchy in hierarchies():
        try:
            found.extend(entry for entry in (hierarchy / PARENT).iterdir() if entry.is_dir())
        except OSError:
            continue
    return sorted(found)


def stale_groups(live_uuids: Callable[[], set[str]]) -> list[Path]:
    """Groups of containers that no longer exist, and libvirt's groups of stopped ones. The
    groups are listed before the containers, so a container started meanwhile is never
    counted stale."""
    present = groups()
    live = live_uuids()
    gone = [group for group in present if group.name not in live and not holds_processes(group)]
    return gone + stale_libvirt_groups()


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
