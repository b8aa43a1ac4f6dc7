"""libvirt: the connection, domains, networks, DHCP host entries, leases.
The only module that imports `libvirt` (and its `libvirt_lxc`); everything else sees plain data and LxcforgeErrors."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import libvirt_lxc

from lxcforge import host
from lxcforge.errors import AlreadyExists, HostNotReady, LxcforgeError, NotFound

log = logging.getLogger(__name__)

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

# Calls a listing makes at once on one connection: libvirtd serves max_client_requests (5 by
# default) of a connection's calls at a time.
CALLS_AT_ONCE = 4

START_HINT = "start libvirtd (vagrant/provision.sh does it), then run 'lxcforge doctor'"


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    active: bool
    persistent: bool
    bridge: str | None
    xml: str


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: str
    xml: str


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str | None
    expiry: int
    client_id: str | None = None


def _message(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


# The local LXC driver keeps each persistent definition in LXC_CONFIG_DIR/NAME.xml and each
# active domain's live one in LXC_STATE_DIR/NAME.xml.
LOCAL_URIS = ("lxc:///", "lxc:///system")
LXC_CONFIG_DIR = Path("/etc/libvirt/lxc")
LXC_STATE_DIR = Path("/run/libvirt/lxc")
# libvirt's lease helper keeps each network's leases in BRIDGE.status here.
DNSMASQ_STATE_DIR = Path("/var/lib/libvirt/dnsmasq")
STATUS_SETTLED_NS = 100_000_000


class Virt:
    """A connection to libvirtd at uri (lxc:/// by default)."""

    def __init__(self, uri: str = "lxc:///") -> None:
        self.uri = uri
        self._networks: dict[str, libvirt.virNetwork] = {}
        self._bridges: dict[str, str] = {}
        # Each lease status file as last read, by bridge (see _status_leases): its identity,
        # the MACs searched for (None: parsed whole) and what that found.
        self._status_cache: dict[str, tuple[tuple[int, int, int], frozenset[str] | None, list[Lease] | None]] = {}
        # A domain handle one step leaves for the next (see _dom).
        self._handed_on: dict[str, libvirt.virDomain] = {}
        # (persistent, active) of each network, asked once per connection (see network()).
        self._net_states: dict[str, tuple[bool, bool]] = {}
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise HostNotReady(f"cannot connect to libvirtd at {uri}: {_message(exc)}",
                               hint=START_HINT) from exc

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass

    def __enter__(self) -> Virt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- host -----------------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        def fmt(v: int) -> str:
            return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

        return {
            "libvirt": fmt(self.conn.getLibVersion()),
            "driver": self.conn.getType(),
            "kernel": fmt(self.conn.getVersion()),
        }

    # -- networks -------------------------------------------------------------------------
    def _net(self, name: str) -> libvirt.virNetwork:
        # One lookup per network and connection: each call is a round trip through libvirtd's
        # event loop, which polls every controller's socket (~1-5 ms with 1000 containers).
        cached = self._networks.get(name)
        if cached is not None:
            return cached
        try:
            net = self.conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                raise NotFound(f"network {name!r} does not exist",
                               hint="list networks with 'virsh -c lxc:/// net-list --all'") from exc
            raise LxcforgeError(f"network {name!r}: {_message(exc)}") from exc
        self._networks[name] = net
        return net

    def _forget_network(self, name: str) -> None:
        self._networks.pop(name, None)
        self._bridges.pop(name, None)
        self._net_states.pop(name, None)

    def _net_state(self, name: str, net: libvirt.virNetwork) -> tuple[bool, bool]:
        """(persistent, active), asked once per connection."""
        state = self._net_states.get(name)
        if state is None:
            state = self._net_states[name] = (bool(net.isPersistent()), bool(net.isActive()))
        return state

    def network(self, name: str, _retry: bool = False) -> NetworkInfo | None:
        """The network's persistent definition (or the live one of a transient network), its
        bridge and state. One call per read after the first: whether it is persistent and
        active is asked once per connection (a connection lives for one command, which would
        not notice a network stopped half way through anyway), and so is a running network's
        bridge (a stopped one's is read from the definition). Each call is a round trip through
        libvirtd's event loop, ~2.5 ms with 1000 containers running, far more under load, and
        a batch reads its networks a dozen times."""
        try:
            net = self._net(name)
        except NotFound:
            return None
        try:
            persistent, active = self._net_state(name, net)
            # The persistent definition: reservations made config-only (see network.HOSTSDIR_ROOT)
            # are there, not in the live one.
            xml = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE if persistent else 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK or _retry:
                raise LxcforgeError(f"network {name!r}: {_message(exc)}") from exc
            # Removed (or removed and made again) since this connection looked it up.
            self._forget_network(name)
            return self.network(name, _retry=True)
        # A running network's bridge is asked (its persistent definition may name another
        # since an edit that has not been applied); a stopped one's is the definition's.
        bridge = (self._running_bridge(name) if active else None) or _bridge_of(xml)
        return NetworkInfo(name=name, active=active, persistent=persistent, bridge=bridge, xml=xml)

    def _running_bridge(self, name: str) -> str | None:
        """A running network's bridge, asked once per connection (None if libvirt cannot say)."""
        bridge = self._bridges.get(name)
        if bridge is None:
            try:
                bridge = self._bridges[name] = str(self._net(name).bridgeName())
            except libvirt.libvirtError:
                return None
        return bridge

    def live_network_xml(self, name: str) -> str:
        """The running definition (without config-only changes)."""
        return str(self._net(name).XMLDesc(0))

    def networks(self) -> list[str]:
        return sorted(n.name() for n in self.conn.listAllNetworks(0))

    def define_network(self, xml: str, *, start: bool = True, autostart: bool = False) -> None:
        try:
            net = self.conn.networkDefineXML(xml)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NETWORK_EXIST, libvirt.VIR_ERR_OPERATION_FAILED):
                raise AlreadyExists(f"cannot define network: {_message(exc)}",
                                    hint="choose another name or subnet") from exc
            raise LxcforgeError(f"cannot define network: {_message(exc)}") from exc
        self._forget_network(str(net.name()))
        try:
            if start:
                net.create()
            if autostart:
                net.setAutostart(1)
        except libvirt.libvirtError as exc:
            net.undefine()
            raise LxcforgeError(f"cannot start network: {_message(exc)}",
                                hint="is the subnet or bridge name already in use?") from exc

    def start_network(self, name: str) -> None:
        self._net_states.pop(name, None)
        try:
            self._net(name).create()
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot start network {name!r}: {_message(exc)}",
                                hint=f"virsh -c {self.uri} net-start {name}") from exc

    def redefine_network(self, xml: str) -> None:
        """Replace an existing network's definition and, if it runs, restart it on the new
        one (its bridge goes down and up: attached interfaces are cut off)."""
        try:
            net = self.conn.networkDefineXML(xml)
            self._forget_network(str(net.name()))
            if net.isActive():
                net.destroy()
                net.create()
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot redefine network: {_message(exc)}") from exc

    def define_network_config(self, xml: str) -> None:
        """Replace an existing network's persistent definition only: a running network
        (its bridge, dnsmasq, firewall) is untouched, as with a config-only update."""
        try:
            name = str(self.conn.networkDefineXML(xml).name())
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot update the definition of a network: {_message(exc)}",
                                hint=f"check it with 'virsh -c {self.uri} net-dumpxml --inactive NETWORK'") from exc
        state = self._net_states.get(name)
        if state is not None:  # a definition makes it persistent; running or not, it stays so
            self._net_states[name] = (True, state[1])

    def remove_network(self, name: str) -> None:
        net = self._net(name)
        self._forget_network(name)
        try:
            if net.isActive():
                net.destroy()
            if net.isPersistent():
                net.undefine()
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot remove network {name!r}: {_message(exc)}") from exc

    def _update_dhcp_host(self, network: str, command: int, host_xml: str, live: bool) -> None:
        net = self._net(network)
        try:
            persistent, active = self._net_state(network, net)
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"network {network!r}: {_message(exc)}") from exc
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG if persistent else 0
        if live and active or not persistent:
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        try:
            net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml, flags)
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot update DHCP hosts of network {network!r}: {_message(exc)}",
                                hint="check the address with 'lxcforge network list'") from exc

    def add_dhcp_host(self, network: str, host_xml: str, *, live: bool = True) -> None:
        """Add a reservation to the persistent definition and, with live, to the running
        dnsmasq through libvirt."""
        self._update_dhcp_host(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, host_xml, live)

    def remove_dhcp_host(self, network: str, host_xml: str, *, live: bool = True) -> None:
        self._update_dhcp_host(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, host_xml, live)

    @property
    def is_local(self) -> bool:
        """The local driver: libvirt's own files (domain status, lease tables) can be read
        here instead of asking libvirtd."""
        return self.uri in LOCAL_URIS

    def leases(self, network: str, *, macs: Collection[str] | None = None,
               from_libvirt: bool = False) -> list[Lease]:
        """The network's current IPv4 leases (of the given MACs only, if any: a wait for a few
        containers' leases need not parse a thousand others'). Locally, read from the status
        file libvirt's lease helper keeps (what libvirt itself answers from): asking libvirtd
        is a round trip through its event loop and a parse of the same file, ~5 ms with 1000
        leases, and new asks every 50 ms while containers boot."""
        wanted = None if macs is None else {mac.lower() for mac in macs}
        found = None
        if not from_libvirt and self.is_local:
            found = self._status_leases(network, wanted)
        if found is None:
            net = self._net(network)
            try:
                raw = net.DHCPLeases()
            except libvirt.libvirtError as exc:
                raise LxcforgeError(f"cannot read leases of {network!r}: {_message(exc)}") from exc
            found = [
                Lease(mac=r["mac"].lower(), ip=r["ipaddr"], hostname=r.get("hostname"),
                      expiry=int(r.get("expirytime", 0)), client_id=r.get("clientid") or None)
                for r in raw
                if r.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4
            ]
        return found if wanted is None else [lease for lease in found if lease.mac in wanted]

    def _status_leases(self, network: str, macs: set[str] | None = None) -> list[Lease] | None:
        """Leases from DNSMASQ_STATE_DIR/BRIDGE.status, unexpired, as virNetworkGetDHCPLeases
        gives them (with macs, those of these MACs at least: _parse_status_of); None where
        that file cannot be read (libvirt is asked then)."""
        bridge = self._running_bridge(network)
        if bridge is None:
            return None
        path = DNSMASQ_STATE_DIR / f"{bridge}.status"
        try:
            with path.open("rb") as file:
                st = os.fstat(file.fileno())
                # libvirt's helper replaces the file whole at every lease event (a new inode):
                # a poll that finds the same one need not parse a thousand leases again.
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                # Not kept while it is this fresh: a second rewrite within the clock's
                # granularity could reuse the inode and the size.
                settled = time.time_ns() - st.st_mtime_ns > STATUS_SETTLED_NS
                cached = self._status_cache.get(bridge)
                # Reused for the same file where it was parsed whole, or searched for these MACs
                # (a wait's next look); otherwise a search for the wanted entries only.
                if cached is None or cached[0] != key or not (
                        cached[1] is None or macs is not None and macs <= cached[1]):
                    if macs is not None:
                        cached = (key, frozenset(macs), _parse_status_of(file.read(), macs))
                    else:
                        cached = (key, None, _parse_status(file.read()))
                    if settled:
                        self._status_cache[bridge] = cached
        except (OSError, ValueError):
            return None
        if cached[2] is None:
            return None
        now = time.time()
        return [lease for lease in cached[2] if not (lease.expiry and lease.expiry < now)]

    # -- domains --------------------------------------------------------------------------
    def _dom(self, name: str, *, handed_on: bool = False) -> libvirt.virDomain:
        """The domain of name. handed_on: take the handle the previous step of the same
        operation on this connection left (define, then start; the frozen destroy, then
        undefine) instead of a lookup, a round trip; once only, so no handle outlives the
        step after the one that got it."""
        if handed_on:
            dom = self._handed_on.pop(name, None)
            if dom is not None:
                return dom
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"container {name!r} does not exist",
                               hint="see 'lxcforge list'") from exc
            raise LxcforgeError(f"{name}: {_message(exc)}") from exc

    def domain_exists(self, name: str) -> bool:
        try:
            self._dom(name)
        except NotFound:
            return False
        return True

    def define_domain(self, xml: str) -> None:
        try:
            dom = self.conn.defineXML(xml)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED and "already" in _message(exc):
                raise AlreadyExists(_message(exc), hint="choose another name") from exc
            raise LxcforgeError(f"cannot define domain: {_message(exc)}") from exc
        self._handed_on[str(dom.name())] = dom

    def start(self, name: str) -> None:
        dom = self._dom(name, handed_on=True)
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot start {name}: {_message(exc)}",
                                hint="run 'lxcforge doctor' to check the host") from exc

    def destroy(self, name: str) -> None:
        """Stop at once (no clean shutdown); no error if it is not running."""
        dom = self._dom(name)
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():
                raise LxcforgeError(f"cannot stop {name}: {_message(exc)}") from exc

    def destroy_frozen(self, name: str, *, running: bool = False) -> bool:
        """Stop at once by freezing the container first: libvirt's destroy then kills a
        paused container's whole cgroup with SIGKILL and is done (~40 ms), where a running
        one gets SIGTERM and ~200 ms sleeps until it is gone (virCgroupKillPainfully), which
        queue up in parallel batches. False, with the container as it was, where freezing
        or that destroy fails (no freezer, say): the caller stops it the other way.
        running: the caller has just seen it running (a batch's listing): no call to ask."""
        dom = self._dom(name)
        try:
            state = libvirt.VIR_DOMAIN_RUNNING if running else dom.state()[0]
            if state == libvirt.VIR_DOMAIN_SHUTOFF:
                self._handed_on[name] = dom
                return True
            paused_already = state == libvirt.VIR_DOMAIN_PAUSED
            if not paused_already:
                dom.suspend()
        except libvirt.libvirtError as exc:
            with contextlib.suppress(libvirt.libvirtError):
                if running and not dom.isActive():
                    self._handed_on[name] = dom  # stopped since it was listed
                    return True
            log.debug("%s: cannot freeze it (%s); killing it the other way", name, _message(exc))
            return False
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            log.debug("%s: destroy of the frozen container failed (%s)", name, _message(exc))
            if not paused_already:
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.resume()
            return False
        self._handed_on[name] = dom  # for the undefine that follows
        return True

    def shutdown(self, name: str) -> None:
        dom = self._dom(name)
        try:
            if dom.isActive():
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_SIGNAL)
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot shut down {name}: {_message(exc)}") from exc

    def undefine(self, name: str) -> None:
        dom = self._dom(name, handed_on=True)
        try:
            dom.undefine()
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot undefine {name}: {_message(exc)}") from exc

    def init_namespaces(self, name: str, *, from_libvirt: bool = False) -> set[int] | None:
        """The inodes of the namespaces libvirt enters for a running container (its init
        pid's, through the LXC API that virsh lxc-enter-namespace uses): None when it is not
        running, an empty set when libvirt has no init pid or a dead one (see
        ops/repair.py). Compared with the real init's, they also show a stale pid. Locally
        the pid is read where libvirt saves it right after learning it (the init element of
        the domain's status file; virLXCProcessMonitorInitNotify), without two round trips
        through libvirtd (~25 ms under load with 1000 containers running)."""
        if self.is_local and not from_libvirt:
            pid = _status_init_pid(name)
            if pid is not None:
                return _init_namespaces(pid)
        return self._namespaces(self._dom(name))

    def host_interfaces(self, name: str) -> list[str]:
        """The host ends of a running domain's network interfaces (the target devices libvirt
        named), from its status file locally, else from its live definition; none where
        neither can be read (gone meanwhile): for best-effort steps after a start."""
        status = _libvirt_file(LXC_STATE_DIR, name) if self.is_local else None
        xml = _domain_of_status(status) if status is not None else None
        if xml is None:
            try:
                xml = str(self._dom(name).XMLDesc(0))
            except (libvirt.libvirtError, LxcforgeError) as exc:
                log.debug("%s: no interfaces read: %s", name, exc)
                return []
        return interface_targets(xml)

    def open_namespaces(self, name: str) -> list[int]:
        """Descriptors of a running container's namespaces, as libvirt opens them for
        lxc-enter-namespace (the caller closes them)."""
        dom = self._dom(name)
        try:
            return list(libvirt_lxc.lxcOpenNamespace(dom, 0))
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot enter {name}: {_message(exc)}",
                                hint=f"is it running and managed? 'lxcforge info {name}', 'lxcforge gc'") from exc

    def security_label(self, name: str) -> tuple[str, str] | None:
        """(model, label) of a running container under libvirt's security driver (selinux,
        apparmor); None under 'none', where containers get no label."""
        try:
            model = self.conn.getSecurityModel()[0]
            if not model or model == "none":
                return None
            label = self._dom(name).securityLabel()[0]
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot read {name}'s security label: {_message(exc)}") from exc
        return (model, label) if label else None

    def enter_cgroups(self, name: str) -> None:
        """Move this process into a running container's cgroups (its limits apply to us)."""
        try:
            libvirt_lxc.lxcEnterCGroup(self._dom(name), 0)
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot join {name}'s cgroups: {_message(exc)}") from exc

    def _namespaces(self, dom: libvirt.virDomain) -> set[int] | None:
        try:
            fds = libvirt_lxc.lxcOpenNamespace(dom, 0)
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_SYSTEM_ERROR):
                try:
                    return set() if dom.isActive() else None
                except libvirt.libvirtError:
                    return None  # gone meanwhile
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise LxcforgeError(f"{dom.name()}: {_message(exc)}") from exc
        try:
            return {os.fstat(fd).st_ino for fd in fds}
        finally:
            for fd in fds:
                os.close(fd)

    def suspend(self, name: str) -> None:
        """Freeze every process of a running container (its freezer cgroup)."""
        try:
            self._dom(name).suspend()
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot freeze {name}: {_message(exc)}") from exc

    def resume(self, name: str) -> None:
        try:
            self._dom(name).resume()
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot thaw {name}: {_message(exc)}",
                                hint=f"virsh -c {self.uri} resume {name}") from exc

    def set_memory(self, name: str, size_bytes: int) -> bool:
        """Memory limit: persistent always, live too where libvirt allows it (not above the
        limit the container started with). True if the running container has it now."""
        dom = self._dom(name)
        kib = size_bytes // 1024
        try:
            dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
            dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot change {name}'s memory limit: {_message(exc)}") from exc
        if not dom.isActive():
            return False
        try:
            dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError:
            return False  # above the live maximum: from the next start
        return True

    def set_cpu_quota(self, name: str, period_us: int, quota_us: int) -> bool:
        """CPU limit as a CFS quota per period (-1: none): persistent always, live when
        running (libvirt takes the two separately). True if applied live."""
        dom = self._dom(name)
        params = {"vcpu_period": period_us, "vcpu_quota": quota_us}
        try:
            dom.setSchedulerParametersFlags(params, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            if dom.isActive():
                dom.setSchedulerParametersFlags(params, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                return True
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot change {name}'s CPU limit: {_message(exc)}") from exc
        return False

    def set_metadata(self, name: str, element_xml: str, namespace: str, prefix: str) -> None:
        """Replace a domain's metadata element of namespace, live (if running) and persistent."""
        dom = self._dom(name)
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
        try:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, element_xml, prefix, namespace, flags)
        except libvirt.libvirtError as exc:
            raise LxcforgeError(f"cannot change {name}'s metadata: {_message(exc)}") from exc

    def domain_uuids(self) -> set[str]:
        """UUIDs of every defined domain: one call, no XML."""
        return {dom.UUIDString() for dom in self.conn.listAllDomains(0)}

    def domain_names(self) -> list[str]:
        """Names of every defined domain: one call, no XML."""
        return sorted(dom.name() for dom in self.conn.listAllDomains(0))

    def state(self, name: str) -> str:
        state, _reason = self._dom(name).state()
        return _STATES.get(state, "unknown")

    def is_active(self, name: str) -> bool:
        return bool(self._dom(name).isActive())

    def domain(self, name: str, *, from_files: bool = False) -> DomainInfo:
        """A domain's state and XML. from_files: locally, read from libvirt's own files (see
        _saved_domain; the same definition, laid out a little differently): one lookup
        instead of three calls."""
        dom = self._dom(name)
        if from_files and self.is_local:
            uuid = dom.UUIDString()
            saved = _saved_domain(name, uuid)
            if saved is not None:
                return DomainInfo(name=name, uuid=uuid, state=saved[0], xml=saved[1])
        return self._info(dom)

    def _info(self, dom: libvirt.virDomain) -> DomainInfo:
        state, _ = dom.state()
        return DomainInfo(name=dom.name(), uuid=dom.UUIDString(),
                          state=_STATES.get(state, "unknown"), xml=dom.XMLDesc(0))

    def running_count(self) -> int:
        """How many domains are active (running or paused): one call answering a number, not
        a listing of a thousand domains."""
        return int(self.conn.numOfDomains())

    def domains(self, names: Iterable[str] | None = None, *, from_files: bool = False) -> list[DomainInfo]:
        """Every domain with its XML, or only those of names that exist: a command pays for
        the containers it touches, not for every one on the host. Every domain's state comes
        from two listings rather than a call per domain; a few named ones' from a call each
        (a listing of a thousand domains is ~11 ms of libvirtd's time). The XML calls run a
        few at a time (libvirtd serves 5 per connection): a call is one round trip, ~0.7 ms,
        and hosts have a thousand domains. from_files: read from libvirt's own files where
        this is the local driver (the same XML, live for active domains): a thousand files
        cost ~30 ms, a thousand calls ~0.5 s of libvirtd; a domain without its file is asked
        for."""
        listed = self.conn.listAllDomains(0)
        state_of: Callable[[libvirt.virDomain], str]
        if names is not None:
            wanted = set(names)
            listed = [dom for dom in listed if dom.name() in wanted]  # a name is no round trip

            def state_of(dom: libvirt.virDomain) -> str:
                return _STATES.get(dom.state()[0], "unknown")
        else:
            active = {d.UUIDString() for d in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
            paused = {d.UUIDString() for d in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)}

            def state_of(dom: libvirt.virDomain) -> str:
                uuid = dom.UUIDString()
                return "paused" if uuid in paused else "running" if uuid in active else "shut off"
        from_files = from_files and self.is_local

        def info(dom: libvirt.virDomain) -> DomainInfo | None:
            uuid, name = dom.UUIDString(), dom.name()
            if from_files and names is not None:
                saved = _saved_domain(name, uuid)
                if saved is not None:
                    return DomainInfo(name=name, uuid=uuid, state=saved[0], xml=saved[1])
            try:
                state = state_of(dom)
                if from_files:
                    xml = _saved_xml(name, uuid, state != "shut off")
                    if xml is not None:
                        return DomainInfo(name=name, uuid=uuid, state=state, xml=xml)
                return DomainInfo(name=name, uuid=uuid, state=state, xml=dom.XMLDesc(0))
            except libvirt.libvirtError:
                return None  # removed while we listed

        with ThreadPoolExecutor(max_workers=CALLS_AT_ONCE) as pool:
            infos = [i for i in pool.map(info, listed) if i is not None]
        return sorted(infos, key=lambda d: d.name)

    def running_names(self) -> list[str]:
        """Names of the running domains: one listing."""
        return [dom.name() for dom in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]

    def running_init_namespaces(self, skip: Iterable[str] = ()) -> dict[str, set[int]]:
        """init_namespaces of every running domain but those in skip, a few calls at a time."""
        local = self.is_local

        def one(dom: libvirt.virDomain) -> tuple[str, set[int] | None]:
            pid = _status_init_pid(dom.name()) if local else None
            return dom.name(), _init_namespaces(pid) if pid is not None else self._namespaces(dom)

        skipped = set(skip)
        running = [d for d in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                   if d.name() not in skipped]
        with ThreadPoolExecutor(max_workers=CALLS_AT_ONCE) as pool:
            found = pool.map(one, running)
            return {name: seen for name, seen in found if seen is not None}


def _parse_status(data: bytes) -> list[Lease] | None:
    """The IPv4 leases in a lease helper's status file (expired ones included)."""
    entries = json.loads(data)
    if not isinstance(entries, list):
        return None
    leases = []
    for entry in entries:
        ip, mac = entry.get("ip-address"), entry.get("mac-address")
        if not ip or not mac or ":" in ip:
            continue
        leases.append(Lease(mac=mac.lower(), ip=ip, hostname=entry.get("hostname"),
                            expiry=int(entry.get("expiry-time") or 0), client_id=entry.get("client-id") or None))
    return leases


def _parse_status_of(data: bytes, macs: Collection[str]) -> list[Lease] | None:
    """The leases of these MACs (lower case) in a status file, without parsing the others:
    each MAC found in the raw text, the entry around it (the helper writes flat objects,
    none holding a brace) cut out and parsed. A MAC found in another entry (as a client
    id, say) yields that entry too: the caller filters by MAC."""
    lowered = data.lower()
    spans = set()
    for mac in macs:
        at = lowered.find(mac.encode())
        while at != -1:
            begin, end = data.rfind(b"{", 0, at), data.find(b"}", at)
            if begin == -1 or end == -1:
                raise ValueError("a MAC outside any entry: not a status file")
            spans.add((begin, end + 1))
            at = lowered.find(mac.encode(), end)
    return _parse_status(b"[" + b",".join(data[begin:end] for begin, end in sorted(spans)) + b"]")


def interface_targets(xml: str) -> list[str]:
    """The host devices a domain definition's interfaces are attached through (libvirt
    names them in the live definition of a running domain)."""
    return [dev for block in _INTERFACE.findall(xml) for dev in _TARGET_DEV.findall(block)]


def _status_init_pid(name: str) -> int | None:
    """The init pid libvirt holds for a running domain, from its status file (0 where it has
    none); None where there is no status file to read (not running, or not local)."""
    text = _libvirt_file(LXC_STATE_DIR, name)
    if text is None:
        return None
    found = _INIT_PID.search(text[:text.find("<domain ")] if "<domain " in text else text)
    return int(found.group(1)) if found else 0


_INIT_PID = re.compile(r"<init\s+pid='(\d+)'")
_INTERFACE = re.compile(r"<interface\s.*?</interface>", re.S)
_TARGET_DEV = re.compile(r"<target\s[^>]*?\bdev=['\"]([^'\"]+)['\"]")


def _init_namespaces(pid: int) -> set[int]:
    """The namespaces libvirt opens for lxc-enter-namespace of init pid (empty where there
    is no such process, as libvirt's open then fails)."""
    return host.namespace_inodes(pid, ("user", "ipc", "uts", "net", "pid", "mnt")) if pid > 0 else set()


def _bridge_of(xml: str) -> str | None:
    """The bridge a network definition names (libvirt fills it in when the network is defined)."""
    match = _BRIDGE_NAME.search(xml)
    return match.group(2) if match else None


_BRIDGE_NAME = re.compile(r"<bridge\s[^>]*?\bname=(['\"])([^'\"]+)\1")


def _saved_domain(name: str, uuid: str) -> tuple[str, str] | None:
    """(state, XML) of a domain from libvirt's own files, no call: an active domain has a
    status file (libvirt removes it when the domain stops) that records its state; else the
    persistent definition, shut off. None where neither is this domain's."""
    text = _libvirt_file(LXC_STATE_DIR, name)
    if text is not None:
        xml = _domain_of_status(text)
        match = _STATUS_STATE.search(text)
        if xml is not None and match and f"<uuid>{uuid}</uuid>" in xml:
            return _STATUS_STATES.get(match.group(1), "unknown"), xml
    xml = _saved_xml(name, uuid, False)
    return ("shut off", xml) if xml is not None else None


_STATUS_STATE = re.compile(r"<domstatus\s[^>]*?\bstate='([a-z]+)'")
# libvirt's names of states in status files (virDomainState), as _STATES names them.
_STATUS_STATES = {"nostate": "nostate", "running": "running", "blocked": "blocked", "paused": "paused",
                  "shutdown": "shutdown", "shutoff": "shut off", "crashed": "crashed", "pmsuspended": "suspended"}


def _libvirt_file(directory: Path, name: str) -> str | None:
    """A domain's file in one of libvirt's directories (LXC_STATE_DIR: its status while it
    runs; LXC_CONFIG_DIR: its persistent definition), or None where there is none."""
    try:
        return (directory / f"{name}.xml").read_text()
    except OSError:
        return None


def _domain_of_status(text: str) -> str | None:
    """The <domain> inside a status file's <domstatus>."""
    start, end = text.find("<domain "), text.rfind("</domain>")
    return text[start:end + len("</domain>")] if start >= 0 and end >= 0 else None


def _saved_xml(name: str, uuid: str, active: bool) -> str | None:
    """A domain's XML from libvirt's own files (each written whole and renamed into place):
    for an active domain the live definition in its status file, else the persistent one;
    None where there is no such file of this domain (a transient domain, another's file)."""
    text = _libvirt_file(LXC_STATE_DIR if active else LXC_CONFIG_DIR, name)
    if text is None:
        return None
    if active:  # <domstatus ...> ... <domain ...>...</domain> ... </domstatus>
        found = _domain_of_status(text)
        if found is None:
            return None
        text = found
    return text if f"<uuid>{uuid}</uuid>" in text else None


class ThreadConnections:
    """Connections for worker threads, each shared by up to CALLS_AT_ONCE threads, opened on
    first use and closed together. libvirtd serves at most max_client_requests (5 by
    default) calls of one connection at a time, so many workers sharing one connection
    queue behind each other's long calls (a start, a destroy): measured, a 1 ms lookup
    waited ~200 ms behind destroys. A connection per thread instead cost 16 opens per
    batch, each ~8 round trips through libvirtd's event loop (~80 ms apiece with 16 at
    once and 1000 containers running)."""

    def __init__(self, uri: str, per_connection: int = CALLS_AT_ONCE) -> None:
        self.uri = uri
        self.per_connection = per_connection
        self._local = threading.local()
        self._slots: list[_Slot] = []
        self._threads = 0
        self._lock = threading.Lock()

    def get(self) -> Virt:
        virt: Virt | None = getattr(self._local, "virt", None)
        if virt is None:
            with self._lock:
                index = self._threads // self.per_connection
                self._threads += 1
                if index == len(self._slots):
                    self._slots.append(_Slot())
                slot = self._slots[index]
            with slot.lock:  # the slot's other threads wait for this open, not other slots'
                if slot.virt is None:
                    slot.virt = Virt(self.uri)
                virt = slot.virt
            self._local.virt = virt
        return virt

    def close(self) -> None:
        with self._lock:
            opened = [slot.virt for slot in self._slots if slot.virt is not None]
            self._slots, self._threads = [], 0
        # Together: each close is a round trip (~6 ms with 1000 containers running).
        with ThreadPoolExecutor(max_workers=max(1, len(opened))) as pool:
            list(pool.map(Virt.close, opened))

    def __enter__(self) -> ThreadConnections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    virt: Virt | None = None


# -- lifecycle events ----------------------------------------------------------------------------
_LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: ("defined", {0: "added", 1: "updated", 2: "renamed", 3: "from snapshot"}),
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: ("undefined", {0: "removed", 1: "renamed"}),
    libvirt.VIR_DOMAIN_EVENT_STARTED: ("started", {0: "booted", 1: "migrated", 2: "restored", 3: "from snapshot",
                                                   4: "wakeup"}),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: ("suspended", {0: "paused"}),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: ("resumed", {0: "unpaused"}),
    libvirt.VIR_DOMAIN_EVENT_STOPPED: ("stopped", {0: "shutdown", 1: "destroyed", 2: "crashed", 3: "migrated",
                                                   4: "saved", 5: "failed", 6: "from snapshot"}),
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: ("shutdown", {0: "finished", 1: "guest", 2: "host"}),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: ("crashed", {0: "panicked"}),
}

DomainEvent = Callable[[str, str, str | None], None]  # (domain name, event, detail)


def watch_domains(uri: str, on_event: DomainEvent, stop: threading.Event) -> None:
    """Call on_event for every lifecycle event of uri's domains (defined, started, stopped,
    crashed, undefined...) as libvirtd sends them, until stop is set. Blocks: run it in a
    thread of its own. No polling of libvirtd: one connection, pushed events."""
    libvirt.virEventRegisterDefaultImpl()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HostNotReady(f"cannot connect to libvirtd at {uri}: {_message(exc)}", hint=START_HINT) from exc

    def lifecycle(_conn: object, dom: libvirt.virDomain, event: int, detail: int, _opaque: object) -> None:
        kind, details = _LIFECYCLE.get(event, (f"event-{event}", {}))
        on_event(dom.name(), kind, details.get(detail))

    closed = threading.Event()
    conn.registerCloseCallback(lambda *_args: closed.set(), None)
    callback = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
    # Wakes the loop often enough to notice stop; libvirt's own keepalive notices a dead libvirtd.
    timer = libvirt.virEventAddTimeout(200, lambda *_args: None, None)
    conn.setKeepAlive(5, 3)
    try:
        while not stop.is_set() and not closed.is_set():
            libvirt.virEventRunDefaultImpl()
    finally:
        libvirt.virEventRemoveTimeout(timer)
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback)
            conn.close()
    if closed.is_set() and not stop.is_set():
        raise HostNotReady(f"libvirtd at {uri} went away", hint=START_HINT)
