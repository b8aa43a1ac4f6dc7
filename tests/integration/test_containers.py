"""Containers on real parts: a Debian systemd base and a Fedora-shaped base, booted under
libvirt LXC on an isolated test network, with reserved addresses, console logins, exec,
stop/start and destroy leaving nothing behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lxcforge import dhcp, domain, host, network, store
from lxcforge.rootfs import fixups
from lxcforge.store import Store
from lxcforge.virt import DomainInfo, Virt
from tests.integration.conftest import TEST_PASSWORD, leases_of, lxcforge
from tests.integration.console import console_login
from tests.support import fedora_repo


def wait_running(pool: Store, name: str, timeout: float = 60) -> str:
    """systemctl is-system-running once the boot has settled."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = lxcforge(pool.root, "exec", name, "--", "systemctl", "is-system-running").stdout.strip()
        if state not in ("starting", "initializing", ""):
            return state
        time.sleep(0.5)
    return state


def new(pool: Store, names: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return lxcforge(pool.root, "new", *names, *args, "--json", "--timeout", "60")


def dhcp_hosts(virt: Virt, net: str) -> list[network.DhcpHost]:
    info = virt.network(net)
    assert info is not None
    return list(network.parse_network_xml(info.xml).hosts)


def veths_on(virt: Virt, net: str) -> list[str]:
    bridge = virt.network(net).bridge  # type: ignore[union-attr]
    out = subprocess.run(["ip", "-o", "link", "show", "master", str(bridge)], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip() for line in out.splitlines()]


@pytest.mark.smoke
def test_debian_containers_boot_clean_with_their_reserved_addresses(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str, virt: Virt
) -> None:
    names = [f"t{unique}-a", f"t{unique}-b"]
    containers.extend(names)
    result = new(cached_pool, names, "--base", debian_base, "--network", session_network)
    assert result.returncode == 0, result.stderr
    made = {c["name"]: c for c in json.loads(result.stdout)["created"]}
    reserved = {h.name: h for h in dhcp_hosts(virt, session_network)}
    machine_ids = set()
    for name in names:
        assert wait_running(cached_pool, name) == "running", lxcforge(
            cached_pool.root, "exec", name, "--", "systemctl", "--failed", "--no-legend").stdout
        assert reserved[name].ip == made[name]["ipv4"] and reserved[name].mac == made[name]["mac"]
        addresses = lxcforge(cached_pool.root, "exec", name, "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
        assert re.findall(r"inet (\S+)/", addresses) == [made[name]["ipv4"]]
        link = lxcforge(cached_pool.root, "exec", name, "--", "cat", "/sys/class/net/eth0/address").stdout.strip()
        assert link == made[name]["mac"]
        assert lxcforge(cached_pool.root, "exec", name, "--", "hostname").stdout.strip() == name
        machine_ids.add(lxcforge(cached_pool.root, "exec", name, "--", "cat", "/etc/machine-id").stdout.strip())
    # Each resolves the other by name through the network's DNS, not the build host's resolver.
    for name, other in ((names[0], names[1]), (names[1], names[0])):
        found = lxcforge(cached_pool.root, "exec", name, "--", "getent", "hosts", other).stdout.split()
        assert found[:1] == [made[other]["ipv4"]], (name, other, found)
    assert len(machine_ids) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", m) for m in machine_ids)
    assert made[names[0]]["mac"] != made[names[1]]["mac"]

    listed = {c["name"]: c for c in json.loads(lxcforge(cached_pool.root, "list", "--json").stdout)}
    assert listed[names[0]]["state"] == "running" and listed[names[0]]["leased"] is True
    assert listed[names[0]]["base"] == debian_base
    # Plain libvirt domains: virsh sees them.
    virsh = subprocess.run(["virsh", "-c", "lxc:///", "list", "--name"], capture_output=True, text=True).stdout
    assert set(names) <= set(virsh.split())

    # The base cannot go while containers use it.
    refused = lxcforge(cached_pool.root, "base", "rm", debian_base)
    assert refused.returncode == 1 and names[0] in refused.stderr


def _securetty_bases(pool: Store, debian_base: str, unique: str) -> tuple[str, str]:
    """Two bases from the Debian one with Fedora's console rules: pam_securetty in
    /etc/pam.d/login and an /etc/securetty without `console`. One gets lxcforge's fix-up."""
    made = []
    for variant in ("fixed", "control"):
        name = f"sec-{variant}-{unique}"
        path = pool.base_path(name)
        store.snapshot(pool.base_path(debian_base), path)
        login = (path / "etc/pam.d/login").read_text()
        (path / "etc/pam.d/login").write_text("auth required pam_securetty.so\n" + login)
        (path / "etc/securetty").write_text("tty1\ntty2\ntty3\ntty4\ntty5\ntty6\n")
        if variant == "fixed":
            assert fixups.securetty(path)
        store.set_read_only(path)
        made.append(name)
    return made[0], made[1]


@pytest.mark.smoke
def test_console_root_login_needs_the_securetty_fixup(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str
) -> None:
    fixed, control = _securetty_bases(cached_pool, debian_base, unique)
    try:
        names = {fixed: f"t{unique}-fix", control: f"t{unique}-ctl"}
        containers.extend(names.values())
        for base, name in names.items():
            result = new(cached_pool, [name], "--base", base, "--network", session_network)
            assert result.returncode == 0, result.stderr
            assert wait_running(cached_pool, name) in ("running", "degraded")
        ok, transcript = console_login(str(cached_pool.root), names[fixed], "root", TEST_PASSWORD)
        assert ok, transcript
        refused, transcript = console_login(str(cached_pool.root), names[control], "root", TEST_PASSWORD)
        assert not refused and "Login incorrect" in transcript, transcript
    finally:
        for name in containers:
            lxcforge(cached_pool.root, "destroy", "--missing-ok", name)
        for base in (fixed, control):
            store.delete_tree(cached_pool.base_path(base))


@pytest.mark.parametrize("release", [19, 42])
def test_fedora_shaped_bases_boot_lease_resolve_a_neighbour_and_log_root_in(
    loop_store: Store, session_network: str, unique: str, release: int, password_file: Path
) -> None:
    """Signed packages checked with their key; at 42, a user that only a sysusers.d file
    declares; each container resolves its neighbour through the network's DNS; root logs in
    on the console (the base's securetty and pam_securetty, the password as a hash)."""
    home, public = fedora_repo.signing_key()
    repo = fedora_repo.build_repo(release, signed_by=home, sysusers=release >= 42)
    extra = ["--packages", "lxtest-sysusers"] if release >= 42 else []
    built = lxcforge(loop_store.root, "base", "--release", str(release), "--repo", f"file://{repo}",
                     "--gpg-key", str(public), "--root-password-file", str(password_file), *extra)
    assert built.returncode == 0, built.stderr
    names = [f"t{unique}-f{release}a", f"t{unique}-f{release}b"]
    try:
        result = new(loop_store, names, "--network", session_network)
        assert result.returncode == 0, result.stderr
        made = {c["name"]: c for c in json.loads(result.stdout)["created"]}
        assert all(c["leased"] is True and c["base"] == f"fedora-{release}" for c in made.values())
        log = lxcforge(loop_store.root, "exec", names[0], "--", "cat", "/run/init.log").stdout
        assert f"lease of {made[names[0]]['ipv4']} obtained" in log
        answer = lxcforge(loop_store.root, "exec", names[0], "--", "nslookup", names[1])
        assert made[names[1]]["ipv4"] in answer.stdout, answer.stdout + answer.stderr
        ok, transcript = console_login(str(loop_store.root), names[1], "root", TEST_PASSWORD)
        assert ok, transcript
    finally:
        lxcforge(loop_store.root, "destroy", "--missing-ok", *names)


@pytest.mark.smoke
def test_exec_stop_start_destroy(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str, virt: Virt
) -> None:
    name = f"t{unique}-life"
    containers.append(name)
    result = new(cached_pool, [name], "--base", debian_base, "--network", session_network)
    assert result.returncode == 0, result.stderr
    address = json.loads(result.stdout)["created"][0]["ipv4"]
    # Leases are read from libvirt's status file, not asked of libvirtd: the same answer.
    from_file = virt.leases(session_network)
    assert address in {lease.ip for lease in from_file}
    assert sorted(from_file, key=repr) == sorted(virt.leases(session_network, from_libvirt=True), key=repr)
    # So are its init pid (the namespaces libvirt would open) and, for a command's named
    # containers, its state and definition.
    assert virt.init_namespaces(name) == virt.init_namespaces(name, from_libvirt=True) != set()
    assert _as_read(virt.domains([name], from_files=True)) == _as_read(virt.domains([name]))
    assert virt.domains([name])[0].state == "running"
    _no_ipv6_on_host_ends(virt, name)
    # One started by an older lxcforge (IPv6 on): host tune turns it off.
    for end in virt.host_interfaces(name):
        Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").write_text("0\n")
    tuned = lxcforge(None, "host", "tune", "--json")
    assert tuned.returncode == 0 and json.loads(tuned.stdout)["veth_ipv6_turned_off"] >= 1, tuned.stderr
    _no_ipv6_on_host_ends(virt, name)

    ran = subprocess.run([sys.executable, "-m", "lxcforge", "--store", str(cached_pool.root), "exec", name, "--",
                          "sh", "-c", "read line; echo got:$line; echo oops >&2; exit 7"],
                         input="hello\n", capture_output=True, text=True)
    assert (ran.returncode, ran.stdout, ran.stderr) == (7, "got:hello\n", "oops\n")

    assert lxcforge(cached_pool.root, "stop", name, "--timeout", "20").returncode == 0
    assert virt.state(name) == "shut off"
    assert _as_read(virt.domains([name], from_files=True)) == _as_read(virt.domains([name]))
    assert virt.init_namespaces(name) is None
    started = lxcforge(cached_pool.root, "start", name)
    assert started.returncode == 0 and address in started.stdout, started.stderr
    info = json.loads(lxcforge(cached_pool.root, "info", name, "--json").stdout)
    assert info["ipv4"] == address and info["state"] == "running"
    _no_ipv6_on_host_ends(virt, name)  # a new veth at every start
    assert isinstance(info["exclusive_bytes"], int)

    veths_before = veths_on(virt, session_network)
    assert veths_before
    destroyed = lxcforge(cached_pool.root, "destroy", name)
    assert destroyed.returncode == 0, destroyed.stderr
    assert not virt.domain_exists(name)
    assert not cached_pool.container_path(name).exists()
    assert name not in {h.name for h in dhcp_hosts(virt, session_network)}
    assert leases_of(virt, session_network, lambda lease: lease.ip == address) == []
    assert len(veths_on(virt, session_network)) == len(veths_before) - 1
    again = lxcforge(cached_pool.root, "destroy", name)
    assert again.returncode == 1 and "does not exist" in again.stderr
    assert lxcforge(cached_pool.root, "destroy", "--missing-ok", name).returncode == 0


def _as_read(infos: list[DomainInfo]) -> list[tuple[str, str, str, domain.Metadata | None]]:
    """What a command takes from a listing (the files' XML is laid out differently)."""
    return [(d.name, d.uuid, d.state, domain.read_metadata(d.xml)) for d in infos]


def _no_ipv6_on_host_ends(virt: Virt, name: str) -> None:
    """The host end of the container's veth (as libvirt lists it) is a bridge port without
    IPv6: no address, no route of its own in any table."""
    listed = subprocess.run(["virsh", "-c", "lxc:///", "domiflist", name], capture_output=True, text=True,
                            check=True).stdout
    ends = virt.host_interfaces(name)
    assert ends and all(end in listed for end in ends)
    for end in ends:
        assert Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").read_text() == "1\n"
        routes = subprocess.run(["ip", "-6", "route", "show", "table", "all", "dev", end], capture_output=True,
                                text=True, check=True).stdout
        addresses = subprocess.run(["ip", "-6", "addr", "show", "dev", end], capture_output=True, text=True,
                                   check=True).stdout
        assert (routes, "inet6" in addresses) == ("", False), end


def test_a_network_is_read_in_one_call_once_its_state_is_known(session_network: str) -> None:
    with Virt("lxc:///") as virt:
        first = virt.network(session_network)
        assert first is not None and first.active and first.persistent
        shown = subprocess.run(["virsh", "-c", "lxc:///", "net-info", session_network], capture_output=True,
                               text=True, check=True).stdout
        assert f"Bridge:         {first.bridge}\n" in shown  # the bridge libvirt reports
        handle, calls = virt._net(session_network), []
        for method in ("isActive", "isPersistent", "XMLDesc", "bridgeName"):
            real = getattr(handle, method)
            setattr(handle, method, lambda *a, _name=method, _real=real: (calls.append(_name), _real(*a))[1])
        assert virt.network(session_network) == first and calls == ["XMLDesc"]


def _nothing_made(pool: Store, virt: Virt, net: str, name: str) -> None:
    assert not virt.domain_exists(name)
    assert not pool.container_path(name).exists()
    assert name not in {h.name for h in dhcp_hosts(virt, net)}


def test_bad_input_is_refused_and_creates_nothing(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str, virt: Virt,
    tmp_path: Path,
) -> None:
    taken = f"t{unique}-taken"
    containers.append(taken)
    made = new(cached_pool, [taken], "--base", debian_base, "--network", session_network, "--no-wait")
    assert made.returncode == 0, made.stderr
    taken_ip = json.loads(made.stdout)["created"][0]["ipv4"]
    plan = network.parse_network_xml(virt.network(session_network).xml)  # type: ignore[union-attr]
    inactive = f"lxfi-{unique}"
    virt.define_network(network.network_xml(inactive, "10.199.254.0/24", isolated=True), start=False)
    fresh = f"t{unique}-new"
    cases = [
        (["new", "Bad_Name", "--base", debian_base], "invalid container name"),
        (["new", "a" * 64, "--base", debian_base], "at most 63"),
        (["new", taken, "--base", debian_base, "--network", session_network], "already exists"),
        (["new", fresh, "--base", "no-such-base", "--network", session_network], "does not exist"),
        (["new", fresh, "--base", debian_base, "--network", "no-such-net"], "does not exist"),
        (["new", fresh, "--base", debian_base, "--network", inactive], "not active"),
        (["new", fresh, "--base", debian_base, "--network", session_network, "--ip", "192.0.2.7"], "outside"),
        (["new", fresh, "--base", debian_base, "--network", session_network, "--ip", taken_ip], "taken"),
        (["new", fresh, "--base", debian_base, "--network", session_network, "--memory", "lots"], "not a size"),
    ]
    try:
        for args, message in cases:
            result = lxcforge(cached_pool.root, *args)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1, args
            assert message in lines[0] and len(lines) == 2 and lines[1].startswith("hint:"), (args, result.stderr)
            _nothing_made(cached_pool, virt, session_network, fresh)
    finally:
        virt.remove_network(inactive)
    assert len(network.parse_network_xml(virt.network(session_network).xml).hosts) == len(plan.hosts)  # type: ignore[union-attr]

    not_btrfs = tmp_path / "plain"
    not_btrfs.mkdir()
    (not_btrfs / "data").write_text("x")
    result = lxcforge(not_btrfs, "new", fresh)
    assert result.returncode == 1 and "not on btrfs" in result.stderr
    assert sorted(p.name for p in not_btrfs.iterdir()) == ["data"]


def test_failure_midway_undoes_every_step(
    cached_pool: Store, debian_base: str, session_network: str, unique: str, virt: Virt
) -> None:
    """A base without an init: snapshot, address and domain are made, the start fails, and
    everything is undone."""
    broken = f"noinit-{unique}"
    path = cached_pool.base_path(broken)
    store.snapshot(cached_pool.base_path(debian_base), path)
    for init in ("sbin/init", "usr/sbin/init"):
        (path / init).unlink(missing_ok=True)
    store.set_read_only(path)
    name = f"t{unique}-broken"
    try:
        hosts_before = dhcp_hosts(virt, session_network)
        result = lxcforge(cached_pool.root, "new", name, "--base", broken, "--network", session_network,
                          "--timeout", "10")
        assert result.returncode == 1
        _nothing_made(cached_pool, virt, session_network, name)
        assert dhcp_hosts(virt, session_network) == hosts_before
    finally:
        lxcforge(cached_pool.root, "destroy", "--missing-ok", name)
        store.delete_tree(path)


def test_dry_run_prints_xml_and_touches_nothing(
    cached_pool: Store, debian_base: str, session_network: str, unique: str, virt: Virt
) -> None:
    name = f"t{unique}-dry"
    result = lxcforge(cached_pool.root, "new", name, "--base", debian_base, "--network", session_network,
                      "--print-xml")
    assert result.returncode == 0, result.stderr
    assert "<domain" in result.stdout and f"<name>{name}</name>" in result.stdout
    _nothing_made(cached_pool, virt, session_network, name)


def test_reservations_on_a_network_like_default(
    loop_store: Store, virt: Virt, unique: str
) -> None:
    """libvirt's own networks (like 'default') have no lxcforge hosts directory: reservations
    go through libvirt's live update, and destroy takes them out again."""
    from tests.integration.conftest import free_subnet

    name = f"lxd{unique}"
    xml = network.network_xml(name, free_subnet(), isolated=True)
    xml = re.sub(r"\s*<dnsmasq:options>.*</dnsmasq:options>", "", xml, flags=re.S)
    virt.define_network(xml)
    try:
        assert network.parse_network_xml(virt.network(name).xml).hostsdir is None  # type: ignore[union-attr]
        assert lxcforge(loop_store.root, "base", "--distro", "minimal", "--release", "1").returncode == 0
        made = lxcforge(loop_store.root, "new", f"c{unique}", "--network", name, "--json")
        assert made.returncode == 0, made.stderr
        entry = json.loads(made.stdout)["created"][0]
        assert entry["leased"] is True
        live = network.parse_network_xml(virt.live_network_xml(name))
        assert [(h.mac, h.ip) for h in live.hosts] == [(entry["mac"], entry["ipv4"])]
        assert lxcforge(loop_store.root, "destroy", f"c{unique}").returncode == 0
        live = network.parse_network_xml(virt.live_network_xml(name))
        assert live.hosts == () and dhcp_hosts(virt, name) == []
    finally:
        lxcforge(loop_store.root, "destroy", "--missing-ok", f"c{unique}")
        virt.remove_network(name)


def test_adopting_a_network_like_default_makes_its_reservations_fast(
    loop_store: Store, virt: Virt, unique: str
) -> None:
    """network adopt: refused while something is attached; afterwards reservations go to the
    hosts directory (no live update); a reservation the network was started with is still
    taken out of the running dnsmasq on destroy."""
    from tests.integration.conftest import free_subnet

    name = f"lxa{unique}"
    xml = network.network_xml(name, free_subnet(), isolated=True).replace('stp="off"', 'stp="on"')
    xml = re.sub(r"\s*<dnsmasq:options>.*</dnsmasq:options>", "", xml, flags=re.S)
    virt.define_network(xml)
    first, second = f"a{unique}", f"b{unique}"
    try:
        assert lxcforge(loop_store.root, "base", "--distro", "minimal", "--release", "1").returncode == 0
        assert lxcforge(loop_store.root, "new", first, "--network", name, "--json").returncode == 0
        refused = lxcforge(loop_store.root, "network", "adopt", name)
        assert refused.returncode == 1 and "attached" in refused.stderr
        assert not network.is_adopted(virt.network(name).xml)  # type: ignore[union-attr]
        assert lxcforge(loop_store.root, "destroy", first).returncode == 0

        adopted = lxcforge(loop_store.root, "network", "adopt", name, "--json")
        assert adopted.returncode == 0, adopted.stderr
        assert network.is_adopted(virt.network(name).xml)  # type: ignore[union-attr]
        hostsdir = Path(network.hostsdir_for(name))
        made = lxcforge(loop_store.root, "new", first, "--network", name, "--json")
        assert made.returncode == 0, made.stderr
        entry = json.loads(made.stdout)["created"][0]
        assert entry["leased"] is True
        assert network.parse_network_xml(virt.live_network_xml(name)).hosts == ()  # no live update
        assert [p.read_text().split(",")[1] for p in hostsdir.glob("*.conf")] == [entry["ipv4"]]
        assert lxcforge(loop_store.root, "network", "adopt", name).returncode == 0  # idempotent

        assert lxcforge(loop_store.root, "new", second, "--network", name, "--no-start").returncode == 0
        assert lxcforge(loop_store.root, "destroy", first).returncode == 0
        subprocess.run(["virsh", "-c", "lxc:///", "net-destroy", name], check=True, capture_output=True)
        subprocess.run(["virsh", "-c", "lxc:///", "net-start", name], check=True, capture_output=True)
        assert [h.name for h in network.parse_network_xml(virt.live_network_xml(name)).hosts] == [second]
        assert lxcforge(loop_store.root, "destroy", second).returncode == 0
        assert network.parse_network_xml(virt.live_network_xml(name)).hosts == ()
        assert list(hostsdir.glob("*.conf")) == [] and dhcp_hosts(virt, name) == []
    finally:
        for container in (first, second):
            lxcforge(loop_store.root, "destroy", "--missing-ok", container)
        virt.remove_network(name)
        dhcp.remove_hostsdir(network.hostsdir_for(name))


@pytest.mark.smoke
def test_destroy_kills_a_frozen_container_in_one_go(
    minimal_store: Store, minimal_net: str, unique: str, virt: Virt
) -> None:
    """destroy freezes first: libvirt then SIGKILLs the paused container's cgroup at once
    instead of SIGTERM and 200 ms rounds. libvirt 9.0 freezes LXC containers through the v1
    freezer hierarchy: where there is none (cgroup v2 only) it refuses, and destroy takes the
    old way. Either way everything of the container must go."""
    name = f"f{unique}"
    made = lxcforge(minimal_store.root, "new", name, "--network", minimal_net)
    assert made.returncode == 0, made.stderr
    controller, init = host.lxc_controller_pid(name), host.lxc_init_pid(name)
    assert controller and init
    freezer = "freezer" in (host.mounted_cgroup_controllers(host.mounts()) or set())  # None: cgroup v2 only
    assert virt.destroy_frozen(name) == freezer
    if freezer:
        assert virt.state(name) == "shut off"
        assert virt.destroy_frozen(name)  # not running: nothing to do
    else:
        assert virt.state(name) == "running"  # left as it was
    gone = lxcforge(minimal_store.root, "destroy", name)
    assert gone.returncode == 0, gone.stderr
    assert not virt.domain_exists(name)
    assert host.wait_exited([controller, init], 10)
    deadline = time.monotonic() + 10  # a systemd host removes the machine scope after
    while True:
        left = subprocess.run(["find", "/sys/fs/cgroup", "-maxdepth", "5", "-name", f"*{name}*"],
                              capture_output=True, text=True).stdout.split()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == []
