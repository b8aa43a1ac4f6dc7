"""Running containers whose init libvirt was seen to know, remembered between `list`s.

Whether libvirt knows a running container's init (repair.judge) costs a libvirt call per
container: with a thousand running, half of `list`. The answer cannot change while the same
libvirtd and the same libvirt_lxc controller run (libvirt learns the init pid once, from its
controller, and loses it only with a restart of either), so a yes is kept under those two
processes' identities, pid and start time, in one file on /run (gone at reboot). Each write
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
LIBVIRTD_PID = Path("/run/libvirtd.pid")


def _identity(pid: int | None) -> str | None:
    """pid:start time of a process (a reused pid starts at another time)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{pid}:{fields[19]}"
    except (OSError, IndexError):
        return None


def libvirtd_identity() -> str | None:
    try:
        return _identity(int(LIBVIRTD_PID.read_text().strip()))
    except (OSError, ValueError):
        return None


def key(name: str, libvirtd: str | None) -> str | None:
    """What a remembered yes for NAME is good for: this libvirtd and its controller."""
    controller = _identity(host.lxc_controller_pid(name))
    return None if libvirtd is None or controller is None else f"{libvirtd}/{controller}"


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
