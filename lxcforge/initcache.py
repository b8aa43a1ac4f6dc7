"""Running containers whose init libvirt was seen to know, remembered between `list`s.

Whether libvirt knows a running container's init (repair.judge) costs a libvirt call per
container: with a thousand running, half of `list`. libvirt learns the init pid once, from
the container's libvirt_lxc controller (and keeps it in its status file across its own
restarts), so a yes is kept under the identities, pid and start time, of that controller and
of the libvirt daemon serving the LXC driver (virtlxcd or libvirtd, where it has a pid
file): a restart of either asks again. One file on /run (gone at reboot); each list's write
keeps only the containers running then, so nothing outlives its container for long, and
deleting the file costs one full check."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from lxcforge import host

CACHE = Path("/run/lxcforge/init-known.json")
DAEMON_PIDS = host.LIBVIRT_DAEMON_PID_FILES


def _identity(pid: int | None) -> str | None:
    """pid:start time of a process (a reused pid starts at another time)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{pid}:{fields[19]}"
    except (OSError, IndexError):
        return None


def daemon_identity() -> str:
    """The libvirt daemon's identity, or '-' where no pid file tells it (then the
    controller's alone keys a yes)."""
    for path in DAEMON_PIDS:
        try:
            found = _identity(int(path.read_text().strip()))
        except (OSError, ValueError):
            continue
        if found is not None:
            return found
    return "-"


def key(name: str, daemon: str) -> str | None:
    """What a remembered yes for NAME is good for: this daemon and this controller."""
    controller = _identity(host.lxc_controller_pid(name))
    return None if controller is None else f"{daemon}/{controller}"


def load() -> dict[str, str]:
    try:
        data = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save(known: Mapping[str, str]) -> None:
    """Best effort: a cache that cannot be written only costs the next list a full check."""
    with contextlib.suppress(OSError):
        CACHE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = CACHE.with_name(f".{CACHE.name}.{os.getpid()}")
        partial.write_text(json.dumps(dict(sorted(known.items()))))
        partial.rename(CACHE)
