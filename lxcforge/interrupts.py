"""Ctrl-C at a point of our choosing.

Python raises KeyboardInterrupt between any two bytecodes of the main thread, so a batch
interrupted between "libvirt made the reservation" and "the batch wrote it down" cannot
give it back. Inside `deferred()`, SIGINT only sets a flag; the batch calls `check()` where
its bookkeeping is consistent, and that raises KeyboardInterrupt."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Deferred:
    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def _on_sigint(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True


@contextmanager
def deferred() -> Iterator[Deferred]:
    """SIGINT is remembered, not raised, until the block ends (also while it cleans up after
    an interrupt, so a second Ctrl-C cannot cut that short). Where SIGINT would not raise
    KeyboardInterrupt anyway (ignored, as for `cmd &` in a script; another handler; not the
    main thread, where Python delivers no signals) this changes nothing."""
    state = Deferred()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield state
        return
    previous = signal.signal(signal.SIGINT, state._on_sigint)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
