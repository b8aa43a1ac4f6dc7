"""Waiting for a container's lease after a start: the previous run's lease outlives a stop."""

from __future__ import annotations

from typing import Any, cast

import pytest

from lxcforge import network
from lxcforge.errors import LxcforgeError
from lxcforge.ops import container as container_ops
from lxcforge.virt import Lease, Virt

ENTRY = network.DhcpHost("02:4c:46:00:00:01", "10.0.0.5", "web1")


class _Leases:
    """The lease table as the status file shows it, one state per read."""

    def __init__(self, *states: list[Lease]) -> None:
        self.states = list(states)
        self.reads = 0

    def leases(self, net: str, *, macs: Any = None) -> list[Lease]:
        self.reads += 1
        return self.states[min(self.reads, len(self.states)) - 1]


def _lease(expiry: int, ip: str = ENTRY.ip) -> Lease:
    return Lease(mac=ENTRY.mac, ip=ip, hostname=None, expiry=expiry)


def _wait(table: _Leases, renewed_after: int | None, timeout: float = 0.0) -> bool:
    return container_ops.wait_for_lease(cast(Virt, table), "net", ENTRY, timeout, renewed_after=renewed_after)


def test_the_previous_runs_lease_is_not_taken_for_this_runs() -> None:
    assert not _wait(_Leases([_lease(1000)]), renewed_after=1000)
    # Without the expiry seen before the start, the stale lease would pass at once.
    assert _wait(_Leases([_lease(1000)]), renewed_after=None)


def test_a_lease_renewed_after_the_start_ends_the_wait() -> None:
    table = _Leases([_lease(1000)], [_lease(1000)], [_lease(4600)])
    assert _wait(table, renewed_after=1000, timeout=5.0)
    assert table.reads == 3


def test_another_address_or_an_infinite_lease() -> None:
    assert not _wait(_Leases([_lease(4600, ip="10.0.0.6")]), renewed_after=None)
    # Infinite leases (expiry 0) never change: nothing to compare, the lease is accepted.
    assert _wait(_Leases([_lease(0)]), renewed_after=0)


def test_the_expiry_seen_before_a_start() -> None:
    table = _Leases([_lease(900, ip="10.0.0.9"), _lease(1000)])
    assert container_ops._lease_expiry(cast(Virt, table), "net", ENTRY) == 1000
    assert container_ops._lease_expiry(cast(Virt, _Leases([])), "net", ENTRY) is None
    assert container_ops._lease_expiry(cast(Virt, table), None, ENTRY) is None


def test_unreadable_leases_leave_the_start_to_say_what_is_wrong() -> None:
    class Inactive:
        def leases(self, net: str, *, macs: Any = None) -> list[Lease]:
            raise LxcforgeError("cannot read leases of 'net': network is not active")

    assert container_ops._lease_expiry(cast(Virt, Inactive()), "net", ENTRY) is None


def _address(table: _Leases, held: int | None, timeout: float = 1.0) -> bool | None:
    return container_ops.wait_for_address(cast(Virt, table), "net", ENTRY, held, timeout)


def test_a_start_with_no_lease_before_takes_the_first_as_its_own() -> None:
    assert _address(_Leases([], [_lease(4600)]), held=None) is True
    assert _address(_Leases([]), held=None, timeout=0.0) is None


def test_a_start_after_a_stop_waits_for_the_renewal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container_ops, "RENEWAL_GRACE_SECONDS", 0.5)
    renewed = _Leases([_lease(1000)], [_lease(4600)])
    assert _address(renewed, held=1000) is True and renewed.reads == 2
    # Granted in the same second as the one before: nothing changes, nobody is told. The held
    # lease is taken after the grace, as not known to be this run's.
    same = _Leases([_lease(1000)])
    assert _address(same, held=1000, timeout=60.0) is False and same.reads > 1
    assert _address(_Leases([_lease(0)]), held=0) is False  # infinite: nothing to wait for
    assert _address(_Leases([]), held=1000, timeout=0.6) is None  # expired meanwhile, none since
