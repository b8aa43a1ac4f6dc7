"""The pure pieces gc relies on: MACs that name their store, pending marks, stale locks,
hosts files read back, the autostart mark, and fault points."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lxcforge import dhcp, domain, faults, network
from lxcforge.store import Store


def test_a_mac_names_its_store_and_container() -> None:
    mac = network.unique_mac("web1", [], owner="/var/lib/lxcforge")
    assert network.owned_by(mac, "web1", "/var/lib/lxcforge")
    assert not network.owned_by(mac, "web1", "/srv/other-store")
    assert not network.owned_by(mac, "web2", "/var/lib/lxcforge")
    assert not network.owned_by("52:54:00:12:34:56", "web1", "/var/lib/lxcforge")
    # Past a collision, the alternative is still recognised.
    second = network.unique_mac("web1", [mac], owner="/var/lib/lxcforge")
    assert second != mac and network.owned_by(second, "web1", "/var/lib/lxcforge")
    assert not network.owned_by(mac, None, "/var/lib/lxcforge")


def test_pending_marks(tmp_path: Path) -> None:
    pool = Store(tmp_path, tmp_path / "pool.img")
    assert pool.pending_names() == [] and not pool.is_pending("web1")
    pool.mark_pending("web1", "new")
    pool.mark_pending("web2", "destroy")
    assert pool.pending_names() == ["web1", "web2"] and pool.is_pending("web1")
    pool.clear_pending("web1")
    pool.clear_pending("web1")  # idempotent
    assert pool.pending_names() == ["web2"]


def test_stale_locks_are_found_and_held_ones_are_not(tmp_path: Path) -> None:
    pool = Store(tmp_path, tmp_path / "pool.img")
    pool.locks.mkdir()
    (pool.locks / "container-dead.lock").write_text("")
    old = time.time() - 120
    os.utime(pool.locks / "container-dead.lock", (old, old))
    (pool.locks / "container-just-made.lock").write_text("")  # unheld, but maybe about to be taken
    (pool.locks / "addresses.lock").write_text("")  # permanent: never reported
    held = pool.locks / "container-busy.lock"
    fd = os.open(held, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert [p.name for p in pool.stale_locks()] == ["container-dead.lock", "container-just-made.lock"]
        pool.remove_stale_locks()  # what every command does: only those a minute old
        assert sorted(p.name for p in pool.locks.iterdir()) == [
            "addresses.lock", "container-busy.lock", "container-just-made.lock"]
    finally:
        os.close(fd)


def test_hosts_files_read_back(tmp_path: Path) -> None:
    entry = network.DhcpHost("02:4c:46:aa:bb:cc", "10.0.0.5", "web1")
    dhcp.publish(str(tmp_path), entry)
    dhcp.publish(str(tmp_path), network.DhcpHost("02:4c:46:aa:bb:cd", "10.0.0.6"))
    assert dhcp.published(str(tmp_path)) == [("02:4c:46:aa:bb:cc", "web1"), ("02:4c:46:aa:bb:cd", None)]


def test_autostart_mark_round_trips() -> None:
    spec = domain.ContainerSpec(name="web1", uuid="00000000-0000-0000-0000-000000000001", rootfs=Path("/s/c/web1"),
                                network="default", mac="02:4c:46:00:00:01", store="/s", base="b")
    xml = domain.domain_xml(spec)
    assert domain.read_metadata(xml).autostart is False  # type: ignore[union-attr]
    marked = domain.container_element_with_autostart(xml, True)
    assert marked.startswith("<container>") and "<autostart>yes</autostart>" in marked and "<store>/s</store>" in marked
    assert "autostart" not in domain.container_element_with_autostart(xml, False)
    on = domain.domain_xml(spec.__class__(**{**spec.__dict__, "autostart": True}))
    assert domain.read_metadata(on).autostart is True  # type: ignore[union-attr]
    assert "autostart" not in domain.container_element_with_autostart(on, False)
    with pytest.raises(ValueError):
        domain.container_element_with_autostart("<domain type='lxc'><name>x</name></domain>", True)


def test_a_fault_point_kills_only_when_named_and_at_the_nth_time() -> None:
    code = ("from lxcforge import faults\n"
            "for i in range(3):\n"
            "    faults.point('new.snapshot'); print(i, flush=True)\n")
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert plain.returncode == 0 and plain.stdout.split() == ["0", "1", "2"]
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, faults.ENV: "new.defined"})
    assert other.returncode == 0
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, faults.ENV: "new.snapshot@2"})
    assert killed.returncode == -9 and killed.stdout.split() == ["0"]
    assert set(faults.NEW_STEPS) <= set(faults.POINTS)
