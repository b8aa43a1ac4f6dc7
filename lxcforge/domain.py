"""libvirt LXC domain XML from a ContainerSpec, and the lxcforge metadata read back. Pure."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

METADATA_NS = "https://lxcforge.dev/xmlns/container/1"
METADATA_PREFIX = "lxcforge"
CPU_PERIOD_US = 100_000
IDMAP_COUNT = 65536  # ids a user namespace maps (see lxcforge/idmap.py)

# The capabilities a container keeps (libvirt's policy 'deny' drops every other, including
# those libvirt 9 has no name for: bpf, perfmon, checkpoint_restore, audit_read). What a
# systemd container needs to boot, take its address, log in on the console and reboot
# itself. Dropped beyond libvirt's own choice: sys_rawio (raw I/O ports and devices),
# sys_ptrace (other users' processes), dac_read_search (open_by_handle_at: files of the
# host's filesystems by handle), syslog (the host's kernel log), linux_immutable, sys_pacct,
# wake_alarm, block_suspend, mac_override; libvirt already drops sys_module, sys_time,
# sys_resource, mknod, audit_control and mac_admin.
KEPT_CAPABILITIES = (
    "chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap", "setfcap",
    "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_chroot", "sys_admin", "sys_boot", "sys_nice", "sys_tty_config", "lease", "audit_write",
)


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    uuid: str
    rootfs: Path
    network: str
    mac: str
    memory_bytes: int = 512 * 1024 * 1024
    cpus: float | None = None
    init: str = "/sbin/init"
    init_args: tuple[str, ...] = ()
    base: str | None = None
    created: str | None = None  # ISO 8601, UTC
    store: str | None = None
    ip: str | None = None
    autostart: bool = False
    idmap_offset: int | None = None  # unprivileged: ids 0..65535 inside are offset.. outside


@dataclass(frozen=True)
class Metadata:
    base: str | None
    created: str | None
    store: str | None
    network: str | None
    ip: str | None
    mac: str | None
    autostart: bool = False
    idmap_offset: int | None = None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def domain_xml(spec: ContainerSpec) -> str:
    """The <domain type='lxc'> for spec: init, the subvolume as /, one NIC, a console pty."""
    dom = ET.Element("domain", {"type": "lxc"})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    dom.append(_metadata_element(spec))
    _sub(dom, "memory", str(spec.memory_bytes // 1024), unit="KiB")
    _sub(dom, "vcpu", str(max(1, math.ceil(spec.cpus))) if spec.cpus else "1")
    if spec.cpus:
        tune = _sub(dom, "cputune")
        _sub(tune, "period", str(CPU_PERIOD_US))
        _sub(tune, "quota", str(int(spec.cpus * CPU_PERIOD_US)))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "exe")
    _sub(os_el, "init", spec.init)
    for arg in spec.init_args:
        _sub(os_el, "initarg", arg)
    if spec.idmap_offset is not None:
        idmap_el = _sub(dom, "idmap")
        for kind in ("uid", "gid"):
            _sub(idmap_el, kind, start="0", target=str(spec.idmap_offset), count=str(IDMAP_COUNT))
    features = _sub(dom, "features")
    capabilities = _sub(features, "capabilities", policy="deny")
    for capability in KEPT_CAPABILITIES:
        _sub(capabilities, capability, state="on")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    fs = _sub(devices, "filesystem", type="mount", accessmode="passthrough")
    _sub(fs, "source", dir=str(spec.rootfs))
    _sub(fs, "target", dir="/")
    nic = _sub(devices, "interface", type="network")
    _sub(nic, "mac", address=spec.mac)
    _sub(nic, "source", network=spec.network)
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="lxc", port="0")
    ET.indent(dom, space="  ")
    return ET.tostring(dom, encoding="unicode") + "\n"


def _metadata_element(spec: ContainerSpec) -> ET.Element:
    metadata = ET.Element("metadata")
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    container = _sub(metadata, f"{{{METADATA_NS}}}container")
    for tag, value in (
        ("base", spec.base),
        ("created", spec.created),
        ("store", spec.store),
        ("network", spec.network),
        ("ip", spec.ip),
        ("mac", spec.mac),
        ("autostart", "yes" if spec.autostart else None),
        ("idmap", str(spec.idmap_offset) if spec.idmap_offset is not None else None),
    ):
        if value is not None:
            _sub(container, f"{{{METADATA_NS}}}{tag}", value)
    return metadata


def read_metadata(xml: str) -> Metadata | None:
    """lxcforge's metadata from a domain's XML; None for a domain lxcforge did not make."""
    root = ET.fromstring(xml)
    container = root.find(f"metadata/{{{METADATA_NS}}}container")
    if container is None:
        return None

    def text(tag: str) -> str | None:
        element = container.find(f"{{{METADATA_NS}}}{tag}")
        return element.text if element is not None else None

    return Metadata(base=text("base"), created=text("created"), store=text("store"),
                    network=text("network"), ip=text("ip"), mac=text("mac"), autostart=text("autostart") == "yes",
                    idmap_offset=int(offset) if (offset := text("idmap")) and offset.isdigit() else None)


def container_element_with_autostart(xml: str, on: bool) -> str:
    """lxcforge's metadata element of a domain's XML, with the start-at-boot mark set or
    cleared (for libvirt's setMetadata, which changes the live and the persistent definition
    at once). lxcforge's own mark, not libvirt's autostart flag: at boot the store must be
    attached first, and every start goes through lxcforge's checks (see ops/boot.py)."""
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    container = ET.fromstring(xml).find(f"metadata/{{{METADATA_NS}}}container")
    if container is None:
        raise ValueError("not an lxcforge domain")
    mark = container.find(f"{{{METADATA_NS}}}autostart")
    if on and mark is None:
        _sub(container, f"{{{METADATA_NS}}}autostart", "yes")
    elif not on and mark is not None:
        container.remove(mark)
    # libvirt puts the element into the namespace itself: it wants it without one.
    plain = ET.Element("container")
    for child in container:
        ET.SubElement(plain, child.tag.split("}", 1)[-1]).text = child.text
    return ET.tostring(plain, encoding="unicode")


def memory_limit_bytes(xml: str) -> int | None:
    element = ET.fromstring(xml).find("memory")
    if element is None or element.text is None:
        return None
    factor = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "b": 1, "bytes": 1}
    return int(element.text) * factor.get(element.get("unit", "KiB"), 1024)


def parse_size(text: str) -> int:
    """'512M', '2G', '1048576' -> bytes (binary units, as operators mean them for memory)."""
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in units:
        number, unit = cleaned[:-1], cleaned[-1]
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M or 2G)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value * units[unit])
