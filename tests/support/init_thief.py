"""Take a container's init event before libvirtd can: the deterministic form of libvirt's
lost-init-pid race (see lxcforge/ops/repair.py).

libvirt_lxc sends the init event only to the first client that connects to its monitor
socket, /run/libvirt/lxc/NAME.sock. Connected first, this process receives it; libvirtd,
queued behind, then gets a monitor with no event and never learns the init pid, exactly as
when the race loses the event. Run it before the container starts:

    python -m tests.support.init_thief NAME [TIMEOUT]

It prints 'stolen' once it has the event (exit 0), or 'missed' (exit 1)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path


def steal(name: str, timeout: float = 30.0) -> bool:
    path = Path("/run/libvirt/lxc") / f"{name}.sock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            time.sleep(0.0002)
            continue
        try:
            sock.settimeout(5.0)
            # The event is one RPC message: a 4-byte length, then header and body.
            data = sock.recv(4096)
            return len(data) > 4
        except OSError:
            return False
        finally:
            sock.close()
    return False


if __name__ == "__main__":
    ok = steal(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 30.0)
    print("stolen" if ok else "missed", flush=True)
    sys.exit(0 if ok else 1)
