"""list's memory of containers whose init libvirt knows: keyed by the processes that know it."""

import os
from pathlib import Path

import pytest

from lxcforge import host, initcache


def test_a_yes_holds_for_the_same_libvirtd_and_controller_only(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initcache, "CACHE", tmp_path / "run" / "init-known.json")
    monkeypatch.setattr(host, "lxc_controller_pid", lambda name: os.getpid() if name == "web" else None)
    libvirtd = f"{os.getppid()}:1"
    key = initcache.key("web", libvirtd)
    assert key is not None and key.startswith(libvirtd + "/" + str(os.getpid()) + ":")
    assert initcache.key("gone", libvirtd) is None and initcache.key("web", None) is None
    assert key != initcache.key("web", f"{os.getppid()}:2")  # libvirtd restarted

    assert initcache.load() == {}
    initcache.save({"web": key})
    assert initcache.load() == {"web": key}
    initcache.CACHE.write_text("not json")
    assert initcache.load() == {}  # a broken file costs a full check, nothing else


def test_list_reads_a_persistent_definition_only_from_that_domains_own_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lxcforge import virt

    monkeypatch.setattr(virt, "LXC_CONFIG_DIR", tmp_path)
    (tmp_path / "web.xml").write_text("<domain><name>web</name><uuid>u-1</uuid></domain>")
    assert virt._persistent_xml("web", "u-1") is not None
    assert virt._persistent_xml("web", "u-2") is None  # redefined since: ask libvirt
    assert virt._persistent_xml("db", "u-3") is None  # transient: no file
