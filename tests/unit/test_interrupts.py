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


def test_ctrl_c_in_a_batch_begins_no_more_and_finishes_those_under_way() -> None:
    from lxcforge.ops import bulk

    begun: list[str] = []
    finished: list[str] = []

    def slow(name: str) -> None:
        begun.append(name)
        if name == "c1":  # the first worker: Ctrl-C while both workers are busy
            os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(0.3)
        finished.append(name)

    summary = bulk.each("stop", [f"c{i}" for i in range(1, 9)], slow, jobs=2)
    assert summary.interrupted
    assert sorted(begun) == sorted(finished) and 1 <= len(begun) <= 4  # none cut half way
    assert {o.name for o in summary.succeeded} == set(finished)
    assert {o.name for o in summary.failed} == {f"c{i}" for i in range(1, 9)} - set(finished)
    assert all(o.error == bulk.NOT_BEGUN for o in summary.failed)
