"""list's memory of containers whose init libvirt knows: keyed by the processes that know it."""

import os
import time
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


@pytest.fixture
def libvirt_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """libvirt's LXC config (etc) and status (run) directories, empty, under tmp_path."""
    from lxcforge import virt

    for attr, sub in (("LXC_CONFIG_DIR", "etc"), ("LXC_STATE_DIR", "run")):
        monkeypatch.setattr(virt, attr, tmp_path / sub)
        (tmp_path / sub).mkdir()
    return tmp_path


def test_list_reads_a_domains_xml_only_from_that_domains_own_file(libvirt_dirs: Path) -> None:
    from lxcforge import virt

    tmp_path = libvirt_dirs
    (tmp_path / "etc" / "web.xml").write_text("<domain><name>web</name><uuid>u-1</uuid><memory>2</memory></domain>")
    (tmp_path / "run" / "web.xml").write_text("<domstatus state='running'>\n  <monitor/>\n  <domain type='lxc' "
                                              "id='7'><name>web</name><uuid>u-1</uuid><memory>1</memory></domain>\n"
                                              "</domstatus>\n")
    assert "<memory>2</memory>" in str(virt._saved_xml("web", "u-1", active=False))
    live = virt._saved_xml("web", "u-1", active=True)  # a running one: its live definition
    assert live is not None and live.startswith("<domain ") and live.endswith("</domain>") and "<memory>1" in live
    assert virt._saved_xml("web", "u-2", active=False) is None  # redefined since: ask libvirt
    assert virt._saved_xml("db", "u-3", active=True) is None  # transient, or no file: ask libvirt


def test_a_running_domains_state_and_init_pid_come_from_its_status_file(libvirt_dirs: Path) -> None:
    from lxcforge import virt

    tmp_path = libvirt_dirs
    (tmp_path / "etc" / "web.xml").write_text("<domain><name>web</name><uuid>u-1</uuid></domain>")
    assert virt._saved_domain("web", "u-1") == ("shut off", "<domain><name>web</name><uuid>u-1</uuid></domain>")
    assert virt._status_init_pid("web") is None  # not running: libvirt is asked
    status = ("<domstatus state='paused' reason='user' pid='40'>\n  <init pid='{pid}'/>\n  <domain type='lxc' id='7'>"
              "<name>web</name><uuid>u-1</uuid><init pid='1'/></domain>\n</domstatus>\n")
    (tmp_path / "run" / "web.xml").write_text(status.format(pid=os.getpid()))
    state, xml = virt._saved_domain("web", "u-1") or ("", "")
    assert state == "paused" and xml.startswith("<domain type='lxc' id='7'>")
    assert virt._saved_domain("web", "u-2") is None  # redefined since: libvirt is asked
    # The status element's pid, not anything inside the domain's own definition.
    assert virt._status_init_pid("web") == os.getpid()
    assert virt._init_namespaces(os.getpid()) == host.namespace_inodes(os.getpid())
    (tmp_path / "run" / "web.xml").write_text(status.replace("<init pid='{pid}'/>\n  ", ""))
    assert virt._status_init_pid("web") == 0 and virt._init_namespaces(0) == set()  # libvirt has no pid
    # A stale pid (the previous run's, of a process gone since) opens nothing, as libvirt's call fails.
    assert virt._init_namespaces(2**22 + 1) == set()


def test_a_networks_bridge_is_read_from_its_definition() -> None:
    from lxcforge import virt

    assert virt._bridge_of("<network><name>n</name><bridge name='lxf-n' stp='off' delay='0'/></network>") == "lxf-n"
    assert virt._bridge_of('<network><bridge stp="on" name="virbr0"/></network>') == "virbr0"
    assert virt._bridge_of("<network><name>n</name><forward mode='bridge'/></network>") is None


def test_a_running_domains_host_interfaces_come_from_its_status_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lxcforge import virt

    monkeypatch.setattr(virt, "LXC_STATE_DIR", tmp_path)
    (tmp_path / "web.xml").write_text(
        "<domstatus state='running' pid='40'>\n  <init pid='41'/>\n  <domain type='lxc' id='7'><name>web</name>"
        "<devices><filesystem type='mount'><source dir='/s'/><target dir='/'/></filesystem>"
        "<interface type='network'><mac address='02:00:00:00:00:01'/><source network='n' bridge='br'/>"
        "<target dev='vnet12'/><model type='virtio'/></interface>"
        "<interface type='network'><source network='m'/><target dev=\"vnet13\"/></interface>"
        "<console type='pty'><target type='lxc' port='0'/></console></devices></domain>\n</domstatus>\n")
    with virt.Virt("test:///default") as connection:
        connection.uri = "lxc:///"  # as the local driver reads it (no call is made)
        assert connection.host_interfaces("web") == ["vnet12", "vnet13"]


def test_ipv6_is_turned_off_on_the_interfaces_that_exist(tmp_path: Path) -> None:
    conf = tmp_path / "sys" / "net" / "ipv6" / "conf"
    (conf / "vnet1").mkdir(parents=True)
    (conf / "vnet1" / "disable_ipv6").write_text("0\n")
    assert host.disable_ipv6(["vnet1", "gone"], proc=tmp_path) == ["vnet1"]
    assert (conf / "vnet1" / "disable_ipv6").read_text() == "1\n"
    assert host.disable_ipv6(["vnet1"], proc=tmp_path) == []  # already off: nothing to report


def test_a_batch_switch_turns_ipv6_off_from_its_low_priority_shell(tmp_path: Path) -> None:
    conf = tmp_path / "sys" / "net" / "ipv6" / "conf"
    for name, value in [("vnet1", "0"), ("vnet2", "1"), ("vnet3", "0")]:
        (conf / name).mkdir(parents=True)
        # As a sysctl file reads in a shell: no newline before its end.
        (conf / name / "disable_ipv6").write_text(value)
    written_before = (conf / "vnet2" / "disable_ipv6").stat().st_mtime_ns
    with host.Ipv6Switch(proc=tmp_path) as switch:
        assert switch._shell is None  # none until a start needs it
        switch.turn_off(["gone", "vnet1"])  # an interface removed meanwhile stops nothing
        assert switch._shell is not None
        assert os.getpriority(os.PRIO_PROCESS, switch._shell.pid) == host.IPV6_SWITCH_NICE
        assert os.getsid(switch._shell.pid) == switch._shell.pid  # Ctrl-C at the terminal misses it
        switch.turn_off(iter(["vnet3"]))
        shell = switch._shell
    assert shell.returncode is not None  # waited for
    assert (conf / "vnet1" / "disable_ipv6").read_text() == "1\n"
    assert (conf / "vnet3" / "disable_ipv6").read_text() == "1\n"
    assert (conf / "vnet2" / "disable_ipv6").stat().st_mtime_ns == written_before  # already off: not written
    assert not (conf / "gone").exists()


def test_without_a_shell_a_switch_writes_in_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "sys" / "net" / "ipv6" / "conf"
    (conf / "vnet1").mkdir(parents=True)
    (conf / "vnet1" / "disable_ipv6").write_text("0\n")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with host.Ipv6Switch(proc=tmp_path) as switch:
        switch.turn_off(iter(["vnet1"]))
        assert switch._shell is None
        assert (conf / "vnet1" / "disable_ipv6").read_text() == "1\n"


def test_when_its_shell_dies_a_switch_writes_in_the_caller_and_redoes_what_it_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "sys" / "net" / "ipv6" / "conf"
    for name in ("vnet1", "vnet2"):
        (conf / name).mkdir(parents=True)
        (conf / name / "disable_ipv6").write_text("0")
    monkeypatch.setattr(host, "_IPV6_OFF_SCRIPT", "exec sleep 30")  # takes lines, writes nothing
    with host.Ipv6Switch(proc=tmp_path) as switch:
        switch.turn_off(["vnet1"])
        assert switch._shell is not None
        switch._shell.kill()
        switch._shell.wait()
        switch.turn_off(["vnet2"])
        assert (conf / "vnet2" / "disable_ipv6").read_text() == "1\n"  # written before the return
        assert (conf / "vnet1" / "disable_ipv6").read_text() == "0"  # lost with the shell...
    assert (conf / "vnet1" / "disable_ipv6").read_text() == "1\n"  # ...and written at the end


def test_leases_are_parsed_again_only_when_the_helper_replaced_its_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from lxcforge import virt

    monkeypatch.setattr(virt, "DNSMASQ_STATE_DIR", tmp_path)
    parsed: list[bytes] = []
    real = virt._parse_status
    monkeypatch.setattr(virt, "_parse_status", lambda data: (parsed.append(data), real(data))[1])

    def write(*ips: str) -> None:  # as libvirt's helper does: a new file renamed into place
        (tmp_path / "new").write_text(json.dumps(
            [{"ip-address": ip, "mac-address": "02:4C:46:00:00:01", "expiry-time": 4102444800} for ip in ips]
            + [{"ip-address": "10.0.0.9", "mac-address": "02:4c:46:00:00:09", "expiry-time": 1}]))
        (tmp_path / "new").rename(tmp_path / "br0.status")
        os.utime(tmp_path / "br0.status", ns=(0, time.time_ns() - 2 * virt.STATUS_SETTLED_NS))

    with virt.Virt("test:///default") as connection:
        connection.uri = "lxc:///"
        connection._bridges["lab"] = "br0"
        write("10.0.0.2")
        assert [(lease.mac, lease.ip) for lease in connection.leases("lab")] == [("02:4c:46:00:00:01", "10.0.0.2")]
        assert [lease.ip for lease in connection.leases("lab")] == ["10.0.0.2"] and len(parsed) == 1
        write("10.0.0.2", "10.0.0.3")
        assert [lease.ip for lease in connection.leases("lab")] == ["10.0.0.2", "10.0.0.3"] and len(parsed) == 2
        # One rewritten this very moment is parsed at every read until it has settled.
        (tmp_path / "br0.status").touch()
        connection.leases("lab")
        connection.leases("lab")
        assert len(parsed) == 4


def test_a_wait_for_some_leases_parses_only_their_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from lxcforge import virt

    monkeypatch.setattr(virt, "DNSMASQ_STATE_DIR", tmp_path)
    parsed: list[bytes] = []
    real = virt._parse_status
    monkeypatch.setattr(virt, "_parse_status", lambda data: (parsed.append(data), real(data))[1])
    others = [{"ip-address": f"10.0.1.{i}", "mac-address": f"02:4c:46:00:01:{i:02x}", "hostname": f"o{i}",
               "expiry-time": 4102444800} for i in range(200)]
    wanted = [
        {"ip-address": "10.0.0.2", "mac-address": "02:4C:46:00:00:01", "hostname": "a", "expiry-time": 4102444800},
        # Another's entry naming the wanted MAC (as its client id): read, then left out by MAC.
        {"ip-address": "10.0.0.5", "mac-address": "02:4c:46:00:00:05", "client-id": "01:02:4c:46:00:00:02",
         "expiry-time": 4102444800},
        {"ip-address": "10.0.0.3", "mac-address": "02:4c:46:00:00:02", "client-id": "01:02:4c:46:00:00:02",
         "expiry-time": 4102444800},
        {"ip-address": "10.0.0.4", "mac-address": "02:4c:46:00:00:03", "expiry-time": 1},  # expired
        {"ip-address": "fd00::4", "mac-address": "02:4c:46:00:00:03", "expiry-time": 4102444800},  # IPv6
        {"ip-address": "10.0.0.6", "mac-address": "02:4c:46:00:00:06", "expiry-time": 4102444800},
    ]
    # libvirt's helper writes its array indented, one key to a line.
    (tmp_path / "br0.status").write_text(json.dumps(others[:100] + wanted + others[100:], indent=4))
    macs = ["02:4c:46:00:00:01", "02:4c:46:00:00:02", "02:4C:46:00:00:03", "02:4c:46:00:00:04", "02:4C:46:00:00:06"]
    with virt.Virt("test:///default") as connection:
        connection.uri = "lxc:///"
        connection._bridges["lab"] = "br0"
        some = connection.leases("lab", macs=macs)
        assert len(parsed) == 1 and len(parsed[0]) < 1000  # the wanted entries, not the 200 others
        everything = connection.leases("lab")
    assert len(everything) == 204
    assert sorted(some, key=repr) == sorted([lease for lease in everything if lease.mac in {m.lower() for m in macs}],
                                            key=repr)
    assert [(lease.mac, lease.ip) for lease in sorted(some, key=repr)] == [
        ("02:4c:46:00:00:01", "10.0.0.2"), ("02:4c:46:00:00:02", "10.0.0.3"), ("02:4c:46:00:00:06", "10.0.0.6")]


def test_a_waits_looks_at_an_unchanged_lease_file_do_not_read_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """new looks every 50 ms while its containers wait: once the file has settled, a look
    that finds the same file and asks for the same MACs (or fewer) costs a stat."""
    import json

    from lxcforge import virt

    monkeypatch.setattr(virt, "DNSMASQ_STATE_DIR", tmp_path)
    searched: list[set[str]] = []
    real = virt._parse_status_of
    monkeypatch.setattr(virt, "_parse_status_of", lambda data, macs: (searched.append(set(macs)), real(data, macs))[1])

    def write(*ips: str, age_ns: int = 2 * virt.STATUS_SETTLED_NS) -> None:
        (tmp_path / "new").write_text(json.dumps(
            [{"ip-address": ip, "mac-address": f"02:4c:46:00:00:0{i}", "expiry-time": 4102444800}
             for i, ip in enumerate(ips, 1)], indent=4))
        (tmp_path / "new").rename(tmp_path / "br0.status")
        os.utime(tmp_path / "br0.status", ns=(0, time.time_ns() - age_ns))

    both, first = ["02:4c:46:00:00:01", "02:4c:46:00:00:02"], ["02:4c:46:00:00:01"]
    with virt.Virt("test:///default") as connection:
        connection.uri = "lxc:///"
        connection._bridges["lab"] = "br0"
        write("10.0.0.2")
        for _ in range(3):
            assert [lease.ip for lease in connection.leases("lab", macs=both)] == ["10.0.0.2"]
        assert [lease.ip for lease in connection.leases("lab", macs=first)] == ["10.0.0.2"]
        assert len(searched) == 1  # one read for four looks
        connection.leases("lab", macs=["02:4c:46:00:00:03"])  # a MAC not asked about: read
        assert len(searched) == 2
        write("10.0.0.2", "10.0.0.3")  # the helper replaced it: read
        assert [lease.ip for lease in connection.leases("lab", macs=both)] == ["10.0.0.2", "10.0.0.3"]
        assert len(searched) == 3
        write("10.0.0.2", "10.0.0.4", age_ns=0)  # this fresh: read at every look until settled
        connection.leases("lab", macs=both)
        connection.leases("lab", macs=both)
        assert len(searched) == 5


def test_a_switch_whose_shell_lags_writes_in_the_caller_instead_of_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "sys" / "net" / "ipv6" / "conf"
    (conf / "vnet1").mkdir(parents=True)
    (conf / "vnet1" / "disable_ipv6").write_text("0")
    # A shell that reads nothing: its pipe fills, as a shell starved of CPU would let it.
    monkeypatch.setattr(host, "_IPV6_OFF_SCRIPT", "exec sleep 30")
    with host.Ipv6Switch(proc=tmp_path) as switch:
        started = time.monotonic()
        for _ in range(2000):  # ~130 kB of lines, twice a pipe's buffer
            switch.turn_off(["vnet1"])
        assert time.monotonic() - started < 10
        assert (conf / "vnet1" / "disable_ipv6").read_text() == "1\n"
        assert switch._shell is not None
        switch._shell.kill()  # not 30 s of waiting at the end
