"""Deferred Ctrl-C: remembered inside the block, raised only by check(), and the handler
that was there before is back afterwards."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from lxcforge import interrupts


def test_sigint_waits_for_check() -> None:
    reached_after_signal = False
    with pytest.raises(KeyboardInterrupt), interrupts.deferred() as interrupt:
        interrupt.check()  # nothing pending yet
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the Python-level handler has run by now
            pass
        reached_after_signal = True
        interrupt.check()
    assert reached_after_signal


def test_previous_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with interrupts.deferred():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass


def test_outside_the_main_thread_it_changes_nothing() -> None:
    seen: list[object] = []

    def worker() -> None:
        with interrupts.deferred() as interrupt:
            seen.append(signal.getsignal(signal.SIGINT))
            interrupt.check()

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]


def test_an_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.deferred() as interrupt:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            interrupt.check()  # does not raise: SIGINT was ignored
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
