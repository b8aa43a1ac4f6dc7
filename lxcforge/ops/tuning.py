"""`lxcforge host tune`: set the host up for many containers. Each step is idempotent.

- kernel limits that would stop a bulk create (capacity.TUNED), raised where lower;
- cgroup v1 hierarchies the host lacks, mounted once (see cgroups: otherwise every
  container's systemd creates and destroys them, under the global cgroup lock);
- cgroups left by containers that no longer exist, removed;
- on systemd hosts, udev told to keep the MACs libvirt gives containers' veths (vethmac);
- IPv6 off on the host ends of running containers' veths (host.disable_ipv6; every start
  does it, this catches containers started by an older lxcforge).

Sysctls and mounts last until the next reboot; vagrant/provision.sh writes the sysctls to
/etc/sysctl.d and runs this at every provision."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lxcforge import cgroups, domain, host, vethmac
from lxcforge.ops import capacity
from lxcforge.virt import Virt, interface_targets

log = logging.getLogger(__name__)


@dataclass
class Tuned:
    sysctls: list[str] = field(default_factory=list)
    cgroup_hierarchies: list[str] = field(default_factory=list)
    stale_cgroups_removed: int = 0
    veth_mac_link: bool = False
    veth_ipv6_turned_off: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.sysctls or self.cgroup_hierarchies or self.stale_cgroups_removed or self.veth_mac_link
                    or self.veth_ipv6_turned_off)


def tune(uri: str) -> Tuned:
    result = Tuned(sysctls=capacity.raise_limits())
    missing = cgroups.host_missing_hierarchies()
    if missing:
        cgroups.mount_hierarchies(missing)
        result.cgroup_hierarchies = missing
    if vethmac.applies():
        result.veth_mac_link = vethmac.install()
    with Virt(uri) as virt:
        result.stale_cgroups_removed = cgroups.remove_stale_groups(virt.domain_uuids)
        # lxcforge's running containers (any store's); other tools' domains are left alone.
        ends = [end for dom in virt.domains(from_files=True)
                if dom.state != "shut off" and domain.read_metadata(dom.xml) is not None
                for end in interface_targets(dom.xml)]
        result.veth_ipv6_turned_off = len(host.disable_ipv6(ends))
    if result.changed:
        log.info("tuned the host: %s", result)
    return result


def slow_boot_advice() -> str | None:
    """A warning for bulk creates on a host that makes every container boot slower."""
    missing = cgroups.host_missing_hierarchies()
    if not missing:
        return None
    return (f"cgroup hierarchies {', '.join(missing)} are not mounted on this host, so every container's "
            "systemd creates and destroys them: boots are slower. Run 'lxcforge host tune' once.")
