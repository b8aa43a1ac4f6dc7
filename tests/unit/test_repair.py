"""The repair decision of ops/repair.py against a scripted stand-in for libvirt: what it asks
libvirt, in which order, and when it gives up. (Real libvirt: tests/integration/test_init_pid.py.)"""

from __future__ import annotations

import pytest

from lxcforge.ops import repair
from lxcforge.virt import DomainInfo


class ScriptedVirt:
    """Answers init_namespaces from a script: an empty set is 'Init pid is not yet available'."""

    def __init__(self, answers: list[set[int] | None]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def init_namespaces(self, name: str) -> set[int] | None:
        self.calls.append("ask")
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def destroy(self, name: str) -> None:
        self.calls.append("destroy")

    def start(self, name: str) -> None:
        self.calls.append("start")

    def host_interfaces(self, name: str) -> list[str]:
        return []  # none to turn IPv6 off on

    def domain(self, name: str) -> DomainInfo:  # a privileged container's definition
        return DomainInfo(name, "6a0e2f6c-0000-4000-8000-000000000001", "running", "<domain type='lxc'/>")


def test_a_managed_container_costs_one_question() -> None:
    virt = ScriptedVirt([{1, 2}])
    assert repair.ensure_managed(virt, "nosuch-web1", settle=0) == 0  # type: ignore[arg-type]
    assert virt.calls == ["ask"]


def test_a_lost_pid_is_repaired_by_a_forced_stop_and_a_start() -> None:
    virt = ScriptedVirt([set(), {1, 2}])
    assert repair.ensure_managed(virt, "nosuch-web1", settle=0) == 1  # type: ignore[arg-type]
    assert virt.calls == ["ask", "destroy", "start", "ask"]


def test_a_pid_still_on_its_way_is_waited_for_not_repaired() -> None:
    virt = ScriptedVirt([set(), set(), {1}])
    assert repair.ensure_managed(virt, "nosuch-web1", settle=5) == 0  # type: ignore[arg-type]
    assert "destroy" not in virt.calls


def test_a_pid_a_few_ms_behind_the_lease_is_waited_for_not_repaired() -> None:
    # new looks at the lease table every 50 ms: a lease can be seen before a busy
    # libvirtd has handled the init event; the check after a lease gives it a moment.
    virt = ScriptedVirt([set(), set(), set(), {1}])
    assert repair.ensure_managed(virt, "nosuch-web1", settle=repair.LEASED_SETTLE_SECONDS) == 0  # type: ignore[arg-type]
    assert "destroy" not in virt.calls
    # One libvirt has lost for good is still repaired once the short wait is over.
    lost = LostUntilRestarted([set()])
    assert repair.ensure_managed(lost, "nosuch-web1", settle=repair.LEASED_SETTLE_SECONDS) == 1  # type: ignore[arg-type]
    assert lost.calls[-3:] == ["destroy", "start", "ask"]


class LostUntilRestarted(ScriptedVirt):
    """No init pid until a forced restart; known after it."""

    def init_namespaces(self, name: str) -> set[int] | None:
        self.calls.append("ask")
        return {1} if "start" in self.calls else set()


def test_a_stopped_container_needs_no_repair() -> None:
    virt = ScriptedVirt([None])
    assert repair.ensure_managed(virt, "nosuch-web1", settle=0) == 0  # type: ignore[arg-type]


def test_gives_up_after_the_attempts_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repair, "SETTLE_SECONDS", 0.01)
    virt = ScriptedVirt([set()])
    with pytest.raises(repair.Unmanaged) as caught:
        repair.ensure_managed(virt, "nosuch-web1", settle=0)  # type: ignore[arg-type]
    assert "after 2 forced restarts" in caught.value.message and caught.value.hint
    assert virt.calls.count("destroy") == repair.ATTEMPTS

