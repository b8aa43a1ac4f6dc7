"""A container is running only when libvirt fully manages it: it knows the container's init pid.

libvirt's LXC driver loses the init pid of some containers started under load (0.3-1 % of
bulk starts here; also with plain `virsh start`, 8 at a time). How the pid travels: the
controller (libvirt_lxc; src/lxc/lxc_controller.c, virLXCControllerClientPrivateNew) sends
an "init" event to the first client it ever accepts, and only to that one; libvirtd
(src/lxc/lxc_process.c, virLXCProcessMonitorInitNotify) stores it and saves it in the
domain's status XML, the only other place it is read from (after a libvirtd restart).
The race, in src/lxc/lxc_monitor.c, virLXCMonitorNew: libvirtd registers the connection's
I/O with its event loop (virNetClientRegisterAsyncIO) before it adds the event program
(virNetClientAddProgram) and copies its callbacks. An event read in that window is either
refused ("No program found for event": the connection is closed, and with no callbacks yet
nothing notices, so the domain stays "running" with no monitor) or dropped (no initNotify
callback yet). Either way libvirt keeps pid 0, or the previous run's pid, which it never
resets. Then virsh dominfo, lxc-enter-namespace and the security-label call fail with "Init
pid is not yet available", a clean shutdown is refused, and (with no monitor) libvirt never
sees the container stop. libvirt has had this order since 2012: 4.8 (commit 7882c6ec) only
moved the close callback up; 9.0 (Debian 12) and 11.3 are the same. Load widens the window.

The check: the namespaces libvirt's LXC API opens for the container (what lxc-enter-namespace
uses) must be those of the real init, the child of its controller; this also catches a stale
pid. The repair is what clears it by hand: a forced stop (libvirt kills the container's
cgroup without needing the pid) and one more start. Every start path (new, start, restart,
boot, gc) confirms and repairs before it says "running"."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from lxcforge import cgroups, host
from lxcforge.errors import LxcforgeError
from lxcforge.virt import Virt

log = logging.getLogger(__name__)

ATTEMPTS = 2
# A healthy container's init event reaches libvirtd within milliseconds of the start call
# returning (measured 0.1-4 ms idle); allow for a loaded host before calling it lost.
SETTLE_SECONDS = 3.0
# Once a container holds its address it has booted far enough that its init event is due; a
# lease new sees within tens of ms of dnsmasq's grant (bulk.LEASE_POLL_SECONDS) may still beat
# a busy libvirtd's handling of that event, so new's check waits this much (returning as soon
# as libvirt knows the pid). start, which looks every 200 ms, checks at once.
LEASED_SETTLE_SECONDS = 0.3
UNMANAGED = "running, but libvirt does not know its init pid"
FIX = "lxcforge gc (stops it hard and starts it again)"


class Unmanaged(LxcforgeError):
    pass


def is_managed(virt: Virt, name: str) -> bool | None:
    """True when libvirt knows the running container's real init pid; None when it is not
    running."""
    return judge(name, virt.init_namespaces(name))


def note_confirmed(confirmed: dict[str, str], name: str) -> None:
    """Right after ensure_managed: the identity this yes holds for (initcache.key), where the
    check could compare namespaces (an init child was there to compare with)."""
    from lxcforge import initcache

    if host.lxc_init_pid(name) is not None:
        key = initcache.key(name, initcache.daemon_identity())
        if key is not None:
            confirmed[name] = key


def remember_managed(confirmed: Mapping[str, str]) -> None:
    """Note containers confirmed managed (note_confirmed) for list (initcache)."""
    if not confirmed:
        return
    from lxcforge import initcache

    initcache.save(initcache.load() | dict(confirmed))


def managed_running(virt: Virt, *, remembered: bool = False) -> dict[str, bool]:
    """is_managed of every running domain, from one listing (for list and gc). remembered:
    a yes from an earlier check under the same libvirt daemon and controller stands
    (initcache; for list: gc, which repairs, always asks libvirt)."""
    if not remembered:
        return {name: judge(name, seen) is not False for name, seen in virt.running_init_namespaces().items()}
    from lxcforge import initcache

    daemon = initcache.daemon_identity()
    keys = {name: initcache.key(name, daemon) for name in virt.running_names()}
    earlier = initcache.load()
    known = {name for name, k in keys.items() if k is not None and earlier.get(name) == k}
    judged = {name: _judged(name, seen) for name, seen in virt.running_init_namespaces(skip=known).items()}
    verdicts = {name: verdict for name, (verdict, _compared) in judged.items()}
    # Only a yes that compared namespaces is kept (judge also says yes when it cannot tell).
    strong = {name for name, (verdict, compared) in judged.items() if verdict is True and compared}
    initcache.save({name: k for name, k in keys.items() if k is not None and (name in known or name in strong)})
    return {name: True for name in known} | {name: v is not False for name, v in verdicts.items()}


def judge(name: str, seen: set[int] | None) -> bool | None:
    """Whether the namespaces libvirt enters (seen) are those of the container's real init."""
    return _judged(name, seen)[0]


def _judged(name: str, seen: set[int] | None) -> tuple[bool | None, bool]:
    """judge's answer, and whether it compared namespaces (else a yes is libvirt's word)."""
    if seen is None:
        return None, False
    if not seen:
        return False, False
    pid = host.lxc_init_pid(name)
    if pid is None:
        return True, False  # no controller child to compare with: libvirt's word stands
    # The container's own mount and pid namespaces: the user namespace a privileged
    # container shares with the host would match any process, a stale pid's included.
    own = host.namespace_inodes(pid, ("mnt", "pid"))
    return (not own or own <= seen), bool(own)


def wait_known(virt: Virt, name: str, settle: float | None = None) -> bool | None:
    """Poll until libvirt knows the init pid (True), settle (default SETTLE_SECONDS) runs out
    (False), or the container is no longer running (None)."""
    deadline = time.monotonic() + (SETTLE_SECONDS if settle is None else settle)
    delay = 0.002
    while True:
        known = is_managed(virt, name)
        if known is not False or time.monotonic() >= deadline:
            return known
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def repair(virt: Virt, name: str) -> None:
    """Forced stop and start until libvirt knows the init pid; Unmanaged if it never does."""
    for attempt in range(1, ATTEMPTS + 1):
        log.warning("%s: %s; stopping it hard and starting it again (attempt %d)", name, UNMANAGED, attempt)
        virt.destroy(name)
        cgroups.start_domain(virt, name)
        if wait_known(virt, name) is not False:
            return
    raise Unmanaged(f"{name} is {UNMANAGED} after {ATTEMPTS} forced restarts",
                    hint=f"look at /var/log/libvirt/lxc/{name}.log; 'lxcforge destroy {name}' removes it")


def ensure_managed(virt: Virt, name: str, settle: float | None = None) -> int:
    """Confirm a just-started container is fully managed; repair it if not. Returns the
    number of repairs (0 almost always). settle: how long a missing pid may still be on its
    way (short once the container has booted far enough to take its address)."""
    if wait_known(virt, name, settle) is not False:
        return 0
    repair(virt, name)
    return 1
