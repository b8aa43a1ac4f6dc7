"""lxcforge's own lifecycle events (address reserved, created, leased, repaired, removed...),
appended as JSON lines to the store's events.jsonl by whichever command caused them, so that
`lxcforge events` can stream them beside libvirt's domain events and scripts wait for a state
instead of polling `list`. Best effort: an event that cannot be written never fails the
operation it reports."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "events.jsonl"
# Kept to two files of at most this size: the stream is for watching, not an archive.
MAX_BYTES = 8 * 1024 * 1024
POLL_SECONDS = 0.1


def path(store_root: Path) -> Path:
    return store_root / FILE


def emit(store_root: Path, event: str, name: str, **fields: object) -> None:
    """Append one event; one write(2) of one line with O_APPEND, so lines of concurrent
    commands never interleave."""
    record = {"time": round(time.time(), 6), "source": "lxcforge", "event": event, "name": name, **fields}
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    target = path(store_root)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
            full = os.fstat(fd).st_size > MAX_BYTES
        finally:
            os.close(fd)
        if full:
            os.replace(target, target.with_name(FILE + ".1"))
    except OSError as exc:
        log.debug("event %s of %s not recorded: %s", event, name, exc)


def follow(store_root: Path, stop: threading.Event) -> Iterator[dict[str, object]]:
    """Events appended from now on, until stop is set (a rotated file is followed to its end,
    then the new one from its start)."""
    target = path(store_root)
    handle = None
    inode = None
    offset = target.stat().st_size if target.exists() else 0
    pending = b""
    while not stop.is_set():
        if handle is None:
            with contextlib.suppress(OSError):
                handle = open(target, "rb")  # noqa: SIM115 - kept open across polls
                inode = os.fstat(handle.fileno()).st_ino
                handle.seek(offset)
        chunk = handle.read() if handle is not None else b""
        if chunk:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                with contextlib.suppress(ValueError):
                    yield json.loads(line)
            continue
        try:
            rotated = os.stat(target).st_ino != inode
        except OSError:
            rotated = handle is not None
        if handle is not None and rotated:
            handle.close()
            handle, offset, pending = None, 0, b""
        stop.wait(POLL_SECONDS)
    if handle is not None:
        handle.close()
