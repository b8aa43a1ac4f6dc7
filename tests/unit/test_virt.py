"""Virt's connection handling, against libvirt's own test driver (test:///default: libvirt's
client library with an in-process driver, no daemon)."""

import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from lxcforge.errors import NotFound
from lxcforge.virt import CALLS_AT_ONCE, ThreadConnections, Virt

TEST_URI = "test:///default"


def runnable_domain_xml(name: str) -> str:
    """A domain the test driver runs."""
    return f"<domain type='test'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os></domain>"


def test_worker_threads_share_a_connection_a_few_at_a_time() -> None:
    connections = ThreadConnections(TEST_URI)
    together = threading.Barrier(2 * CALLS_AT_ONCE)  # every worker is a thread of its own

    def one(_: int) -> int:
        virt = connections.get()
        assert connections.get() is virt  # the same one for the same thread
        together.wait(timeout=10)
        return id(virt)

    with ThreadPoolExecutor(max_workers=2 * CALLS_AT_ONCE) as pool:
        shared = Counter(pool.map(one, range(2 * CALLS_AT_ONCE)))
    # Two connections, each used by at most as many threads as libvirtd serves calls of one at once.
    assert sorted(shared.values()) == [CALLS_AT_ONCE, CALLS_AT_ONCE]
    connections.close()
    assert connections.get().conn.isAlive()  # a new one after closing
    connections.close()


def test_a_step_hands_its_domain_to_the_next_instead_of_a_lookup() -> None:
    name = f"lxt-{os.getpid()}"
    with Virt(TEST_URI) as virt:
        looked_up: list[str] = []
        real = virt.conn.lookupByName
        virt.conn.lookupByName = lambda n: (looked_up.append(n), real(n))[1]  # type: ignore[method-assign]
        virt.define_domain(runnable_domain_xml(name))
        virt.start(name)  # the define's handle
        assert looked_up == []
        assert virt.destroy_frozen(name)
        virt.undefine(name)  # the destroy's handle
        assert looked_up == [name]
        # Once only: a later step looks it up (and finds it gone).
        assert not virt.domain_exists(name) and looked_up == [name, name]
        with pytest.raises(NotFound):
            virt.start(name)


def test_the_frozen_destroy_of_a_container_just_listed_running_asks_no_state() -> None:
    name = f"lxs-{os.getpid()}"
    with Virt(TEST_URI) as virt:
        virt.define_domain(runnable_domain_xml(name))
        virt.start(name)
        asked: list[str] = []
        real = virt.conn.lookupByName

        def lookup(n: str) -> object:
            dom = real(n)
            state = dom.state
            dom.state = lambda *a: (asked.append("state"), state(*a))[1]
            return dom

        virt.conn.lookupByName = lookup  # type: ignore[method-assign,assignment]
        assert virt.destroy_frozen(name, running=True) and asked == []
        assert virt.state(name) == "shut off"
        # Stopped since it was listed: nothing to kill, and no error.
        assert virt.destroy_frozen(name, running=True)
        virt.undefine(name)
