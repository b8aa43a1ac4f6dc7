"""The one exception family lxcforge raises; cli.py turns it into a line and an exit code."""

from __future__ import annotations


class LxcforgeError(Exception):
    """An error an operator can act on: a one-line message and a hint saying what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidName(LxcforgeError):
    pass


class NotFound(LxcforgeError):
    pass


class AlreadyExists(LxcforgeError):
    pass


class InUse(LxcforgeError):
    pass


class HostNotReady(LxcforgeError):
    """The host lacks something lxcforge needs (root, libvirtd, a btrfs store, a tool)."""


class CapacityError(LxcforgeError):
    pass


class UnsafePath(LxcforgeError):
    """A write into a rootfs would have left it (through a symlink or '..')."""


class CommandFailed(LxcforgeError):
    def __init__(self, argv: list[str], returncode: int, stderr_tail: str, hint: str | None = None):
        shown = " ".join(argv[:6]) + (" ..." if len(argv) > 6 else "")
        detail = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no error output"
        super().__init__(f"{shown} failed with exit status {returncode}: {detail}", hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail
