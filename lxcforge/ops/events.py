"""The lifecycle events of this store's containers as they happen, in one stream: libvirt's
domain events (defined, started, stopped, crashed, undefined), pushed by libvirtd, and
lxcforge's own (reserved, created, leased, repaired, removed, failures) from the store's
event journal. Nothing is polled but the journal file."""

from __future__ import annotations

import fnmatch
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from lxcforge import domain, journal
from lxcforge.config import Settings
from lxcforge.errors import LxcforgeError
from lxcforge.virt import Virt, watch_domains


@dataclass(frozen=True)
class Event:
    time: float  # epoch seconds
    source: str  # libvirt | lxcforge
    event: str
    name: str
    detail: str | None = None
    fields: dict[str, object] = field(default_factory=dict)


def stream(settings: Settings, patterns: Sequence[str], stop: threading.Event) -> Iterator[Event]:
    """Events of this store's containers whose names match patterns (all if none), from now
    until stop is set. A libvirtd that goes away ends the stream with its error."""
    events: queue.Queue[Event | BaseException] = queue.Queue()
    containers = settings.store / "containers"
    with Virt(settings.uri) as virt:
        mine = {d.name for d in virt.domains()
                if (meta := domain.read_metadata(d.xml)) is not None and meta.store == str(settings.store)}

    def from_libvirt(name: str, kind: str, detail: str | None) -> None:
        events.put(Event(time.time(), "libvirt", kind, name, detail))

    def watch() -> None:
        try:
            watch_domains(settings.uri, from_libvirt, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            events.put(exc)

    def follow() -> None:
        for record in journal.follow(settings.store, stop):
            extra = {k: v for k, v in record.items() if k not in ("time", "source", "event", "name")}
            stamp = record.get("time")
            when = float(stamp) if isinstance(stamp, float | int) else time.time()
            events.put(Event(when, "lxcforge", str(record.get("event")), str(record.get("name")), fields=extra))

    threads = [threading.Thread(target=watch, daemon=True, name="lxcforge-libvirt-events"),
               threading.Thread(target=follow, daemon=True, name="lxcforge-journal")]
    for thread in threads:
        thread.start()
    while not stop.is_set():
        try:
            item = events.get(timeout=0.2)
        except queue.Empty:
            continue
        if isinstance(item, BaseException):
            raise item if isinstance(item, LxcforgeError) else LxcforgeError(f"event stream failed: {item}")
        if item.source == "libvirt" and item.name not in mine:
            # A container of this store has its subvolume before its domain is defined.
            if not (containers / item.name).exists():
                continue
            mine.add(item.name)
        if patterns and not any(fnmatch.fnmatchcase(item.name, p) for p in patterns):
            continue
        yield item
