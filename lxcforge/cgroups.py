"""A container's own name=systemd cgroup on hosts where libvirt does not give it one.

Without systemd-machined (no systemd as the host's init) on a cgroup v1 host, libvirt puts
each container in its own cgroup for cpu, memory, blkio... but not in the name=systemd
hierarchy, and containers share the host's cgroup namespace. Every container's systemd then
takes the host's name=systemd root for its own, and they create and remove each other's
/system.slice/<unit> groups: units fail with 219/CGROUP, more often the more containers
start at once. A small wrapper run as the container's init moves it into
lxcforge/<uuid> first; systemd then builds its tree below that. It does nothing where the
container already has its own group (machined, /machine.slice) or there is no such
hierarchy (cgroup v2)."""

from __future__ import annotations

import os
from pathlib import Path

WRAPPER_PATH = "/usr/sbin/lxcforge-init"
HOST_HIERARCHY = Path("/sys/fs/cgroup/systemd")
PARENT = "lxcforge"

WRAPPER = f"""#!/bin/sh
# lxcforge: give this container's init its own name=systemd cgroup where libvirt did not
# (hosts without systemd-machined), so containers' systemds do not share unit cgroups.
while IFS=: read -r _ controllers path; do
    [ "$controllers" = name=systemd ] || continue
    case "$path" in
        /machine*) ;;
        *) own="/sys/fs/cgroup/systemd/{PARENT}/${{LIBVIRT_LXC_UUID:-$$}}"
           mkdir -p "$own" 2>/dev/null && echo $$ > "$own/cgroup.procs" 2>/dev/null ;;
    esac
done < /proc/self/cgroup
exec /sbin/init "$@"
"""


def host_group(uuid: str) -> Path:
    return HOST_HIERARCHY / PARENT / uuid


def remove_group(uuid: str) -> None:
    """Remove a stopped container's (now empty) cgroup tree, deepest first."""
    root = host_group(uuid)
    if not root.is_dir():
        return
    for dirpath, _dirnames, _files in sorted(os.walk(root), key=lambda entry: -entry[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
