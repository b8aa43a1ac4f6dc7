"""dnsmasq's side of reservations: the watched hosts directory of lxcforge's networks, and
ending a lease at once when a container goes (dhcp_release, as OpenStack does)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

from lxcforge import network
from lxcforge.run import run, which

log = logging.getLogger(__name__)

PID_DIR = Path("/run/libvirt/network")


def _entry_file(hostsdir: str, mac: str) -> Path:
    return Path(hostsdir) / f"{mac.replace(':', '')}.conf"


def ensure_hostsdir(hostsdir: str) -> None:
    # dnsmasq reads it after dropping privileges: world-readable.
    Path(hostsdir).mkdir(mode=0o755, parents=True, exist_ok=True)


def remove_hostsdir(hostsdir: str) -> None:
    path = Path(hostsdir)
    if path.is_dir():
        for entry in path.iterdir():
            entry.unlink()
        path.rmdir()


def publish(hostsdir: str, host: network.DhcpHost) -> None:
    """Make a reservation live: dnsmasq notices a new file in its hosts directory at once."""
    ensure_hostsdir(hostsdir)
    target = _entry_file(hostsdir, host.mac)
    partial = target.with_name("." + target.name)  # dnsmasq skips dotfiles; the rename publishes
    partial.write_text(network.hostsdir_line(host))
    os.chmod(partial, 0o644)
    partial.rename(target)


def published(hostsdir: str) -> list[tuple[str, str | None]]:
    """(MAC, name) of every reservation file in a hosts directory."""
    found: list[tuple[str, str | None]] = []
    path = Path(hostsdir)
    if not path.is_dir():
        return found
    for entry in sorted(path.glob("*.conf")):
        try:
            fields = entry.read_text().strip().split(",")
        except OSError:
            continue
        if len(fields) >= 2:
            found.append((fields[0].lower(), fields[2] if len(fields) > 2 else None))
    return found


def withdraw(hostsdir: str, mac: str) -> None:
    """Remove a reservation file; dnsmasq forgets removed entries only on reload()."""
    with contextlib.suppress(FileNotFoundError):
        _entry_file(hostsdir, mac).unlink()


def reload(net: str) -> None:
    try:
        pid = int((PID_DIR / f"{net}.pid").read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        log.debug("no dnsmasq to reload for %s", net)


def release_lease(bridge: str, host: network.DhcpHost, client_id: str | None = None) -> None:
    """Tell dnsmasq the lease is over (as the client would), so the address is free again
    at once instead of an hour later."""
    if which("dhcp_release") is None:
        log.info("dhcp_release not installed; dnsmasq keeps %s's lease until it expires", host.ip)
        return
    argv = ["dhcp_release", bridge, host.ip, host.mac]
    if client_id:
        argv.append(client_id)
    run(argv, check=False)
