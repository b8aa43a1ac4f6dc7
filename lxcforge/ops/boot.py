"""`lxcforge boot`: bring this store's containers back after the host restarts.

libvirt alone cannot: the loop-file store is not mounted at boot, and every start has to go
through lxcforge's own checks (the init-pid confirmation of repair.py, the cgroup wrapper).
So containers carry lxcforge's own start-at-boot mark (domain metadata, not libvirt's
autostart flag), and the lxcforge-boot service runs this once libvirtd is up."""

from __future__ import annotations

import logging
import time

from lxcforge import domain
from lxcforge.config import Settings
from lxcforge.ops import bulk, gc
from lxcforge.store import Store
from lxcforge.virt import Virt

log = logging.getLogger(__name__)


def start_marked(settings: Settings, *, timeout: float = 120.0) -> bulk.Summary:
    started = time.monotonic()
    Store.from_settings(settings).ensure()
    owner = str(settings.store)
    marked: list[str] = []
    with Virt(settings.uri) as virt:
        nets: set[str] = set()
        for dom in virt.domains():
            meta = domain.read_metadata(dom.xml)
            if meta is not None and meta.store == owner and meta.autostart:
                marked.append(dom.name)
                if meta.network:
                    nets.add(meta.network)
        for net in sorted(nets):
            info = virt.network(net)
            if info is not None and not info.active:
                log.info("starting network %s", net)
                virt.start_network(net)
    summary = bulk.start_many(settings, marked, wait=True, timeout=timeout, action="boot")
    report = gc.collect(settings)
    if report.items:
        log.warning("gc after boot: %s", ", ".join(f"{n} {k}" for k, n in report.by_kind().items()))
    summary.seconds = time.monotonic() - started
    return summary
