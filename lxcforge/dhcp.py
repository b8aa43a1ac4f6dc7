"""dnsmasq's side of reservations: the watched hosts directory of lxcforge's networks, what
dnsmasq still holds after a reservation is withdrawn, and ending a lease at once when a
container goes (a DHCPRELEASE on the client's behalf, as OpenStack does with dhcp_release)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from lxcforge import faults, network

log = logging.getLogger(__name__)

PID_DIR = Path("/run/libvirt/network")
HELD_SUFFIX = ".withdrawn"


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


def _held_file(hostsdir: str, mac: str) -> Path:
    # A dotfile: dnsmasq skips those in the directories it watches.
    return Path(hostsdir) / f".{mac.replace(':', '')}{HELD_SUFFIX}"


def publish(hostsdir: str, host: network.DhcpHost) -> None:
    """Make a reservation live: dnsmasq notices a new file in its hosts directory at once."""
    ensure_hostsdir(hostsdir)
    target = _entry_file(hostsdir, host.mac)
    partial = target.with_name("." + target.name)  # dnsmasq skips dotfiles; the rename publishes
    partial.write_text(network.hostsdir_line(host))
    os.chmod(partial, 0o644)
    partial.rename(target)
    _held_file(hostsdir, host.mac).unlink(missing_ok=True)  # live again (see held)


def published(hostsdir: str) -> list[tuple[str, str | None]]:
    """(MAC, name) of every reservation file in a hosts directory."""
    return [(h.mac, h.name) for h in _read_entries(sorted(Path(hostsdir).glob("*.conf")))]


def _read_entries(paths: list[Path]) -> list[network.DhcpHost]:
    found: list[network.DhcpHost] = []
    for entry in paths:
        try:
            fields = entry.read_text().strip().split(",")
        except OSError:
            continue
        if len(fields) >= 2:
            found.append(network.DhcpHost(fields[0].lower(), fields[1], fields[2] if len(fields) > 2 else None))
    return found


def withdraw(hostsdir: str, mac: str) -> None:
    """Take a reservation file away. dnsmasq forgets a removed entry only when it reloads,
    and a reload reruns libvirt's lease helper once for every lease, each run over the
    network's whole lease file (~9 CPU-s with 1000 leases, delaying every lease after it).
    So no reload here: the file becomes a note of what dnsmasq still holds (held), whose
    address and MAC planning leaves alone until forget() or dnsmasq's next start."""
    entry = _entry_file(hostsdir, mac)
    try:
        os.utime(entry)  # the note's time: when it was withdrawn, against dnsmasq's start (held)
        entry.rename(_held_file(hostsdir, mac))
    except FileNotFoundError:
        return


def held(hostsdir: str | None, net: str) -> list[network.DhcpHost]:
    """Entries dnsmasq still holds although their files were withdrawn: a new reservation
    of the same address would be refused ("duplicate dhcp-host IP address") and one of the
    same MAC would be ambiguous. Notes older than dnsmasq's start are void (forget() and
    publish() remove notes)."""
    return _read_entries(_notes(hostsdir, net)[0]) if hostsdir else []


def _note_files(hostsdir: str) -> list[Path]:
    return sorted(Path(hostsdir).glob(f".*{HELD_SUFFIX}"))


def _notes(hostsdir: str, net: str) -> tuple[list[Path], list[Path]]:
    """(current, void) notes: void where dnsmasq started after they were made, or is not
    running (it reads the directory afresh when it starts)."""
    started = _dnsmasq_started(net)
    current, void = [], []
    for note in _note_files(hostsdir):
        with contextlib.suppress(FileNotFoundError):
            if started is not None and note.stat().st_mtime >= started:
                current.append(note)
            else:
                void.append(note)
    return current, void


def forget(net: str, hostsdir: str) -> None:
    """Make dnsmasq drop every withdrawn entry (a reload: costly with many leases, see
    withdraw), then the notes of them; under network_lock, so no note appears meanwhile.
    dnsmasq rereads the directory whenever it gets to the signal, before or after a new
    reservation's file appears: either way it ends up with the new file and without the
    withdrawn ones. Killed in between, the notes stay: their addresses are left alone a
    while longer, never handed out twice."""
    notes = _note_files(hostsdir)
    reload(net)
    faults.point("new.forgotten")
    for note in notes:
        note.unlink(missing_ok=True)


def void_notes(hostsdir: str, net: str) -> list[Path]:
    """Notes dnsmasq has forgotten since: it started after they were made, or is not running."""
    return _notes(hostsdir, net)[1]


@contextlib.contextmanager
def network_lock(net: str) -> Iterator[None]:
    """Reservations and withdrawals on one network one at a time, across processes and
    stores (a flock in its hosts directory; none where the network has no
    hosts directory: libvirt's live updates serialise those)."""
    hostsdir = Path(network.hostsdir_for(net))
    if not hostsdir.is_dir():
        yield
        return
    fd = os.open(hostsdir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _dnsmasq_started(net: str) -> float | None:
    # libvirt writes the pid file when it starts the network's dnsmasq.
    try:
        return (PID_DIR / f"{net}.pid").stat().st_mtime
    except OSError:
        return None


def reload(net: str) -> None:
    try:
        pid = int((PID_DIR / f"{net}.pid").read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        log.debug("no dnsmasq to reload for %s", net)


DHCP_SERVER_PORT = 67
_BOOTREQUEST, _HTYPE_ETHER, _DHCPRELEASE = 1, 1, 7
_OPTION_MESSAGE_TYPE, _OPTION_SERVER_ID, _OPTION_CLIENT_ID, _OPTION_END = 53, 54, 61, 255
_MAGIC_COOKIE = 0x63825363


def release_packet(host: network.DhcpHost, server: str, client_id: str | None = None) -> bytes:
    """The DHCPRELEASE a client sends when it gives its address back, as dnsmasq's
    dhcp_release builds it: the lease's address and MAC, the server's address (dnsmasq
    ignores a release for another server) and the client id the client used (dnsmasq
    ignores one without it)."""
    chaddr = bytes.fromhex(host.mac.replace(":", "").replace("-", ""))
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128sI", _BOOTREQUEST, _HTYPE_ETHER, len(chaddr), 0, 0, 0, 0,
                         socket.inet_aton(host.ip), bytes(4), bytes(4), bytes(4), chaddr, b"", b"", _MAGIC_COOKIE)
    options = bytes([_OPTION_MESSAGE_TYPE, 1, _DHCPRELEASE, _OPTION_SERVER_ID, 4]) + socket.inet_aton(server)
    if client_id and client_id != "*":
        raw = bytes.fromhex(client_id.replace(":", "").replace("-", ""))
        options += bytes([_OPTION_CLIENT_ID, len(raw)]) + raw
    options += bytes([_OPTION_END])
    return header + options.ljust(308, b"\0")  # dhcp_release's fixed-size packet


def release_leases(bridge: str, server: str, leases: Sequence[tuple[network.DhcpHost, str | None]]) -> None:
    """Tell dnsmasq the leases are over (as their clients would), so the addresses are free
    again at once instead of an hour later: what dnsmasq's dhcp_release does, without a
    process per lease (~15 ms each, most of a batch destroy's tail). The socket is bound to
    the bridge, so dnsmasq takes the packet as coming from that network."""
    if not leases:
        return
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bridge.encode())
    except OSError as exc:
        log.warning("could not release leases on %s (%s): dnsmasq keeps them until they expire", bridge, exc)
        return
    with sock:
        for host, client_id in leases:
            try:
                sock.sendto(release_packet(host, server, client_id), (server, DHCP_SERVER_PORT))
            except (OSError, ValueError) as exc:  # ValueError: a client id that is not hex
                log.warning("could not release %s on %s (%s): dnsmasq keeps it until it expires", host.ip, bridge, exc)


def release_lease(bridge: str, server: str, host: network.DhcpHost, client_id: str | None = None) -> None:
    """release_leases for one (gc's leases of containers gone)."""
    release_leases(bridge, server, [(host, client_id)])
