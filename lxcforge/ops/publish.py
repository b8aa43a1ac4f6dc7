"""`lxcforge publish NAME [BASE]`: turn a prepared container into a base that containers are
made from, like any other ("prepare one container, then start 300 like it").

The copy is a snapshot (a running container is frozen for the instant it takes), and what
makes a container one particular machine is reset in it, so its clones are distinct: the
machine id, the hostname, SSH host keys, DHCP leases, logs, the random seed. The base is
published read-only, at once, as a build's is."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lxcforge import names, store
from lxcforge.config import Settings
from lxcforge.errors import AlreadyExists, NotFound
from lxcforge.ops import container as container_ops
from lxcforge.rootfs import fixups, safepath
from lxcforge.store import Store
from lxcforge.virt import Virt

log = logging.getLogger(__name__)

# Files that make a container one machine, under the directories that hold them.
MACHINE_FILES = {
    "/etc/ssh": ("ssh_host_",),  # regenerated at boot where the distribution does it (Fedora's sshd-keygen)
    "/var/lib/dhclient": ("",),
    "/var/lib/NetworkManager": ("internal-", "dhclient-"),
    "/var/lib/systemd": ("random-seed",),
}
MACHINE_DIRS_EMPTIED = ("/var/log/journal",)


@dataclass(frozen=True)
class Published:
    base: str
    source: str
    froze_for_seconds: float | None  # None: the container was not running


def reset_machine_state(root: Path) -> list[str]:
    """Remove what makes root one particular machine; returns what was removed."""
    removed = []
    for directory, prefixes in MACHINE_FILES.items():
        for name in safepath.regular_files(root, directory):
            if any(name.startswith(prefix) for prefix in prefixes):
                safepath.remove(root, f"{directory}/{name}")
                removed.append(f"{directory}/{name}")
    for directory in MACHINE_DIRS_EMPTIED:
        for name in safepath.regular_files(root, directory):
            safepath.remove(root, f"{directory}/{name}")
            removed.append(f"{directory}/{name}")
    fixups.empty_machine_id(root)
    safepath.remove(root, "/etc/hostname")
    fixups.no_build_host_resolver(root)
    return removed


def publish(settings: Settings, name: str, base: str | None = None, *, force: bool = False) -> Published:
    names.validate_container_name(name)
    base_name = names.validate_base_name(base or name)
    pool = Store.from_settings(settings).ensure()
    source = pool.container_path(name)
    target = pool.base_path(base_name)
    with Virt(settings.uri) as virt, pool.claim(f"base-{base_name}", f"base {base_name} is being made"), \
            container_ops.name_lock(pool, name), pool.new_tmp_subvolume("publish") as tmp:
        container_ops.describe(virt, settings, name)  # refuses a name that is not this store's container
        if not source.exists():
            raise NotFound(f"container {name} has no root filesystem", hint="lxcforge gc")
        if target.exists() and not force:
            raise AlreadyExists(f"base {base_name} already exists", hint="pass --force to replace it, or name another")
        copy = tmp.workdir / "rootfs"
        froze: float | None = None
        if virt.is_active(name):
            # A snapshot of a running system is what a power cut leaves; frozen, every
            # process is between system calls, and its files are as consistent as they get.
            started = time.monotonic()
            virt.suspend(name)
            try:
                store.snapshot(source, copy)
            finally:
                virt.resume(name)
            froze = time.monotonic() - started
        else:
            store.snapshot(source, copy)
        removed = reset_machine_state(copy)
        log.info("reset in %s: %s", base_name, ", ".join(removed) or "nothing else")
        if target.exists():
            store.set_read_only(target, False)
            store.rename_subvolume(target, tmp.workdir / "replaced")
        store.snapshot(copy, target, read_only=True)
    return Published(base=base_name, source=name, froze_for_seconds=froze)
