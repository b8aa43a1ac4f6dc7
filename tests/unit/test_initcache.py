"""list's memory of containers whose init libvirt knows: keyed by the processes that know it."""

import os
from pathlib import Path

import pytest

from lxcforge import host, initcache


def test_a_yes_holds_for_the_same_daemon_and_controller_only(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initcache, "CACHE", tmp_path / "run" / "init-known.json")
    monkeypatch.setattr(host, "lxc_controller_pid", lambda name: os.getpid() if name == "web" else None)
    daemon = f"{os.getppid()}:1"
    key = initcache.key("web", daemon)
    assert key is not None and key.startswith(daemon + "/" + str(os.getpid()) + ":")
    assert initcache.key("gone", daemon) is None
    assert key != initcache.key("web", f"{os.getppid()}:2")  # the daemon restarted
    # No daemon pid file (another init system's layout): the controller alone keys it.
    monkeypatch.setattr(initcache, "DAEMON_PIDS", (tmp_path / "none.pid",))
    assert initcache.daemon_identity() == "-" and initcache.key("web", "-") is not None
    (tmp_path / "virtlxcd.pid").write_text(f"{os.getpid()}\n")
    monkeypatch.setattr(initcache, "DAEMON_PIDS", (tmp_path / "virtlxcd.pid", tmp_path / "none.pid"))
    assert initcache.daemon_identity().startswith(f"{os.getpid()}:")

    assert initcache.load() == {}
    initcache.save({"web": key})
    assert initcache.load() == {"web": key}
    initcache.CACHE.write_text("not json")
    assert initcache.load() == {}  # a broken file costs a full check, nothing else


def test_list_reads_a_domains_xml_only_from_that_domains_own_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lxcforge import virt

    monkeypatch.setattr(virt, "LXC_CONFIG_DIR", tmp_path / "etc")
    monkeypatch.setattr(virt, "LXC_STATE_DIR", tmp_path / "run")
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "etc" / "web.xml").write_text("<domain><name>web</name><uuid>u-1</uuid><memory>2</memory></domain>")
    (tmp_path / "run" / "web.xml").write_text("<domstatus state='running'>\n  <monitor/>\n  <domain type='lxc' "
                                              "id='7'><name>web</name><uuid>u-1</uuid><memory>1</memory></domain>\n"
                                              "</domstatus>\n")
    assert "<memory>2</memory>" in str(virt._saved_xml("web", "u-1", active=False))
    live = virt._saved_xml("web", "u-1", active=True)  # a running one: its live definition
    assert live is not None and live.startswith("<domain ") and live.endswith("</domain>") and "<memory>1" in live
    assert virt._saved_xml("web", "u-2", active=False) is None  # redefined since: ask libvirt
    assert virt._saved_xml("db", "u-3", active=True) is None  # transient, or no file: ask libvirt
