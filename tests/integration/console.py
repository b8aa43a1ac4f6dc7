"""Drive a console login through a pseudo-terminal, as a person at `lxcforge console` would."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time


def _read_until(fd: int, patterns: tuple[bytes, ...], timeout: float, seen: bytearray) -> bytes | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return None
            if not chunk:
                return None
            seen.extend(chunk)
        for pattern in patterns:
            if pattern in seen:
                return pattern
    return None


def console_login(store: str, name: str, user: str, password: str, timeout: float = 30) -> tuple[bool, str]:
    """Log in on the container's console; True if a shell answered, with the transcript."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the real command line, on a terminal
        os.execvp(sys.executable, [sys.executable, "-m", "lxcforge", "--store", store, "console", name])
    seen = bytearray()
    try:
        deadline = time.monotonic() + timeout
        found = None
        while found is None and time.monotonic() < deadline:
            os.write(fd, b"\r")
            found = _read_until(fd, (b"login: ",), 2, seen)
        if found is None:
            return False, seen.decode(errors="replace")
        os.write(fd, user.encode() + b"\r")
        if _read_until(fd, (b"assword: ",), 10, seen) is None:
            return False, seen.decode(errors="replace")
        del seen[:]
        os.write(fd, password.encode() + b"\r")
        outcome = _read_until(fd, (b"Login incorrect", b"# "), 15, seen)
        if outcome == b"# ":
            os.write(fd, b"echo CONSOLE-$((6*7))\r")
            ok = _read_until(fd, (b"CONSOLE-42",), 10, seen) is not None
            os.write(fd, b"exit\r")
            return ok, seen.decode(errors="replace")
        return False, seen.decode(errors="replace")
    finally:
        try:
            os.write(fd, b"\x1d")  # Ctrl+]: leave virsh console
        except OSError:
            pass
        time.sleep(0.2)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
