"""Many containers at once, on real parts: networks lxcforge creates, parallel create spread
over two networks, capacity refused up front, partial failure, glob destroy, churn, and
parallel systemd boots that must all end `running`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxcforge import cgroups, dhcp, host, network, store
from lxcforge.ops import bulk
from lxcforge.store import Store
from lxcforge.virt import Virt
from tests.integration.conftest import free_subnet, lxcforge, lxcforge_started, made_by_new

REPO = Path(__file__).resolve().parents[2]
# Forced restarts a batch of 12 may need of libvirt's own making (repair.py: it loses the
# init pid of 0.3-1 % of bulk starts; of 500 starts here, 4 had no pid when their renewed
# lease showed, and none had one 3 s later either); more means lxcforge judged too early.
LIBVIRT_OWN_LOSSES = 1


@pytest.fixture
def made_networks(minimal_store: Store) -> Iterator[list[str]]:
    """Networks appended here are removed at teardown (after their containers)."""
    nets: list[str] = []
    yield nets
    lxcforge(minimal_store.root, "destroy", "--all", "--missing-ok")
    for net in nets:
        lxcforge(minimal_store.root, "network", "rm", net)


def create_network(pool: Store, nets: list[str], name: str, subnet: str) -> None:
    result = lxcforge(pool.root, "network", "create", name, "--subnet", subnet, "--isolated", "--json")
    assert result.returncode == 0, result.stderr
    nets.append(name)


def test_network_create_list_rm(minimal_store: Store, made_networks: list[str], unique: str) -> None:
    name = f"lxn{unique}"
    subnet = free_subnet(23)
    create_network(minimal_store, made_networks, name, subnet)
    listed = {n["name"]: n for n in json.loads(lxcforge(minimal_store.root, "network", "list", "--json").stdout)}
    assert listed[name]["subnet"] == subnet and listed[name]["addresses"] == 509
    assert listed[name]["forward"] == "isolated" and listed[name]["free"] == 509
    again = lxcforge(minimal_store.root, "network", "create", name, "--subnet", free_subnet())
    assert again.returncode == 1 and "already exists" in again.stderr
    overlap = lxcforge(minimal_store.root, "network", "create", f"lxo{unique}", "--subnet", subnet)
    assert overlap.returncode == 1 and "overlaps" in overlap.stderr

    made = lxcforge(minimal_store.root, "new", f"n{unique}", "--network", name)
    assert made.returncode == 0, made.stderr
    refused = lxcforge(minimal_store.root, "network", "rm", name)
    assert refused.returncode == 1 and f"n{unique}" in refused.stderr
    assert lxcforge(minimal_store.root, "destroy", f"n{unique}").returncode == 0
    assert lxcforge(minimal_store.root, "network", "rm", name).returncode == 0
    made_networks.remove(name)
    assert not Path(network.hostsdir_for(name)).exists()


def test_bulk_create_spread_over_two_networks_then_glob_destroy(
    minimal_store: Store, made_networks: list[str], unique: str, virt: Virt
) -> None:
    nets = [f"lxa{unique}", f"lxb{unique}"]
    for net in nets:
        create_network(minimal_store, made_networks, net, free_subnet())
    prefix = f"s{unique}-"
    result = lxcforge(minimal_store.root, "new", "--count", "12", "--prefix", prefix, "--network", ",".join(nets),
                      "--json", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["succeeded"] == 12 and summary["failed"] == []
    by_net: dict[str, int] = {}
    for c in summary["created"]:
        assert c["leased"] is True
        by_net[c["network"]] = by_net.get(c["network"], 0) + 1
    assert by_net == {nets[0]: 6, nets[1]: 6}
    listed = json.loads(lxcforge(minimal_store.root, "list", "--json").stdout)
    assert sum(1 for c in listed if c["name"].startswith(prefix) and c["state"] == "running") == 12

    before = {c["name"]: c["ipv4"] for c in listed if c["name"].startswith(prefix)}
    controllers = [host.lxc_controller_pid(n) for n in before]
    stopped = lxcforge(minimal_store.root, "stop", f"{prefix}*", "--timeout", "10", "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["succeeded"] == 12, stopped.stderr
    assert all(virt.state(n) == "shut off" for n in before)
    # libvirt at times removes its groups while the controller is still in them: stop does it after
    left = [g for h in cgroups.hierarchies() for pid in controllers if pid for g in cgroups.libvirt_groups(h, pid)]
    assert left == []
    expiry = {lease.mac: lease.expiry for net in nets for lease in virt.leases(net)}
    started = lxcforge(minimal_store.root, "start", f"{prefix}*", "--json")
    assert started.returncode == 0 and json.loads(started.stdout)["succeeded"] == 12, started.stderr
    # The previous run's leases outlive the stop: taken for this run's, they made start judge
    # libvirt's init event lost before it was due, and force-restart a few of every 20. One
    # is allowed: libvirt itself loses the pid of 0.3-1 % of bulk starts (repair.py), which
    # is 4-11 % of batches of 12.
    assert json.loads(started.stdout)["repaired"] <= LIBVIRT_OWN_LOSSES
    listed = json.loads(lxcforge(minimal_store.root, "list", "--json").stdout)
    after = {c["name"]: c["ipv4"] for c in listed if c["name"].startswith(prefix) and c["state"] == "running"
             and c["leased"]}
    assert after == before
    renewed = {lease.mac: lease.expiry for net in nets for lease in virt.leases(net)}
    assert all(renewed[c["mac"]] > expiry[c["mac"]] for c in listed if c["name"] in before)
    for name in before:  # new veths: the batch's IPv6 switch turned each host end off
        for end in virt.host_interfaces(name):
            assert Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").read_text() == "1\n"
    # restart of many: the same batch path (shared connections, one IPv6 switch), each
    # container down and up again under its address, every lease renewed once more.
    started_under = {n: host.lxc_controller_pid(n) for n in before}
    restarted = lxcforge(minimal_store.root, "restart", f"{prefix}*", "--timeout", "10", "--json")
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads(restarted.stdout)["succeeded"] == 12
    assert json.loads(restarted.stdout)["repaired"] <= LIBVIRT_OWN_LOSSES
    again = {lease.mac: lease.expiry for net in nets for lease in virt.leases(net)}
    assert all(again[c["mac"]] > renewed[c["mac"]] for c in listed if c["name"] in before)
    assert all(host.lxc_controller_pid(n) not in (None, started_under[n]) for n in before)
    for name in before:
        for end in virt.host_interfaces(name):
            assert Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").read_text() == "1\n"

    gone = lxcforge(minimal_store.root, "destroy", f"{prefix}*", "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["succeeded"] == 12
    assert not [d for d in virt.domains() if d.name.startswith(prefix)]
    assert not list(minimal_store.containers.iterdir())
    for net in nets:
        info = virt.network(net)
        assert info is not None
        assert network.parse_network_xml(info.xml).hosts == ()
        assert dhcp.published(network.hostsdir_for(net)) == []


def test_capacity_is_refused_before_any_container_is_made(
    minimal_store: Store, made_networks: list[str], unique: str, virt: Virt
) -> None:
    tiny = f"lxt{unique}"
    create_network(minimal_store, made_networks, tiny, free_subnet(29))  # 5 addresses
    result = lxcforge(minimal_store.root, "new", "--count", "8", "--prefix", f"c{unique}-", "--network", tiny)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "not enough room" in lines[0] and "5 free addresses, 8 needed" in lines[0]
    assert lines[1].startswith("hint:") and "--network a,b" in lines[1]
    assert not list(minimal_store.containers.iterdir())
    assert network.parse_network_xml(virt.network(tiny).xml).hosts == ()  # type: ignore[union-attr]


def test_partial_failure_keeps_the_good_and_leaves_nothing_of_the_bad(
    minimal_store: Store, made_networks: list[str], unique: str, virt: Virt
) -> None:
    net = f"lxp{unique}"
    create_network(minimal_store, made_networks, net, free_subnet())
    # A base whose init gives up at once in containers named bad*: no address, ever.
    flaky = minimal_store.base_path("flaky")
    store.snapshot(minimal_store.base_path("minimal-1"), flaky)
    init = (flaky / "sbin/init").read_text()
    (flaky / "sbin/init").write_text(init.replace("export PATH=/bin:/sbin\n", "export PATH=/bin:/sbin\n"
                                                  "case $(cat /etc/hostname) in bad*) exit 1;; esac\n", 1))
    store.set_read_only(flaky)
    names = [f"good{unique}a", f"bad{unique}", f"good{unique}b"]
    result = lxcforge(minimal_store.root, "new", *names, "--base", "flaky", "--network", net, "--timeout", "6",
                      "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert [f["name"] for f in summary["failed"]] == [f"bad{unique}"]
    assert "no lease" in summary["failed"][0]["error"]
    assert sorted(c["name"] for c in summary["created"]) == sorted([names[0], names[2]])
    assert all(virt.state(n) == "running" for n in (names[0], names[2]))
    assert not virt.domain_exists(f"bad{unique}")
    assert not minimal_store.container_path(f"bad{unique}").exists()
    hosts = network.parse_network_xml(virt.network(net).xml).hosts  # type: ignore[union-attr]
    assert sorted(h.name or "" for h in hosts) == sorted([names[0], names[2]])


def test_churn_leaves_nothing_behind() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "churn.py"), "--cycles", "10", "--batch", "3"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed cycles, 0 leaks" in result.stdout


@pytest.mark.smoke
def test_parallel_systemd_boots_all_end_running(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str
) -> None:
    """Started together, systemd containers trampled each other's unit cgroups on hosts
    without systemd-machined (units failing with 219/CGROUP); each now has its own."""
    prefix = f"p{unique}-"
    # 20 at once; fewer where the VM stage runs under emulation (each boot there takes ~10x as long)
    count = int(os.environ.get("LXCFORGE_TEST_PARALLEL_BOOTS", "20"))
    names = [f"{prefix}{i}" for i in range(1, count + 1)]
    containers.extend(names)
    result = lxcforge(cached_pool.root, "new", *names, "--base", debian_base, "--network", session_network,
                      "-j", str(count), "--json", "--timeout", "300")
    assert result.returncode == 0, result.stderr
    states = {}
    for name in names:
        state = ""
        for _ in range(120):
            state = lxcforge(cached_pool.root, "exec", name, "--", "systemctl", "is-system-running").stdout.strip()
            if state not in ("starting", "initializing", ""):
                break
            subprocess.run(["sleep", "0.5"])
        states[name] = state
    failed = {n: s for n, s in states.items() if s != "running"}
    details = {n: lxcforge(cached_pool.root, "exec", n, "--", "systemctl", "--failed", "--no-legend").stdout
               for n in failed}
    assert not failed, details
    # Each on the MAC its reservation names (on systemd hosts udev would replace some: vethmac).
    made = {c["name"]: c for c in json.loads(result.stdout)["created"]}
    macs = {n: lxcforge(cached_pool.root, "exec", n, "--", "cat", "/sys/class/net/eth0/address").stdout.strip()
            for n in names}
    assert {n: mac for n, mac in macs.items() if mac != made[n]["mac"]} == {}


@pytest.mark.parametrize("adopted", [True, False], ids=["hosts-directory", "live-update"])
def test_interrupted_bulk_new_leaves_nothing_behind(
    minimal_store: Store, made_networks: list[str], unique: str, virt: Virt, adopted: bool
) -> None:
    """Ctrl-C in the middle of a batch: containers already complete are kept and reported;
    queued ones never start, running creations are undone when they finish, and the
    addresses of all of these are given back. On a network
    without a hosts directory each reservation is a ~0.3 s libvirt update, so Ctrl-C almost
    always arrives while one is being made: it must not be lost half-way."""
    import re
    import signal
    import time

    net = f"lxi{unique}"
    if adopted:
        create_network(minimal_store, made_networks, net, free_subnet(24))
    else:
        xml = network.network_xml(net, free_subnet(24), isolated=True)
        virt.define_network(re.sub(r"\s*<dnsmasq:options>.*</dnsmasq:options>", "", xml, flags=re.S))
    prefix = f"i{unique}-"
    try:
        proc = lxcforge_started(minimal_store.root, "new", "--count", "40", "--prefix", prefix, "--network", net,
                                "-j", "4", "--json", env={bulk.RESERVE_CHUNK_ENV: "8"})
        # Past the first chunk of reservations: later ones are made while workers run.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(d.name.startswith(prefix) for d in virt.domains()) < 6:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 130, err
        report = json.loads(out)
        kept = sorted(c["name"] for c in report["created"])
        assert report["interrupted"] is True and report["total"] == 40 and len(kept) < 40
        assert {f["error"] for f in report["failed"]} == {bulk.INTERRUPTED}
        # What was complete stays, with its reservation; nothing else of the batch exists.
        assert sorted(d.name for d in virt.domains() if d.name.startswith(prefix)) == kept
        assert sorted(p.name for p in minimal_store.containers.glob(f"{prefix}*")) == kept
        persistent = network.parse_network_xml(virt.network(net).xml).hosts  # type: ignore[union-attr]
        assert sorted(h.name for h in persistent) == kept
        if adopted:
            assert len(dhcp.published(network.hostsdir_for(net))) == len(kept)
        else:
            assert sorted(h.name for h in network.parse_network_xml(virt.live_network_xml(net)).hosts) == kept
    finally:
        if not adopted:
            lxcforge(minimal_store.root, "destroy", "--missing-ok", f"{prefix}*")
            virt.remove_network(net)


def test_dry_run_plans_distinct_addresses_on_every_network(
    minimal_store: Store, made_networks: list[str], unique: str, virt: Virt
) -> None:
    nets = [f"lxd{unique}", f"lxe{unique}"]
    for net in nets:
        create_network(minimal_store, made_networks, net, free_subnet())
    names = [f"d{unique}-{i}" for i in range(1, 5)]
    planned = lxcforge(minimal_store.root, "new", *names, "--network", ",".join(nets), "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    plans = json.loads(planned.stdout)
    assert [p["network"] for p in plans] == [nets[0], nets[1], nets[0], nets[1]]
    assert len({(p["network"], p["ipv4"]) for p in plans}) == 4 and len({p["mac"] for p in plans}) == 4
    for net in nets:  # nothing reserved, nothing defined
        assert network.parse_network_xml(virt.network(net).xml).hosts == ()  # type: ignore[union-attr]
    assert not set(names) & set(virt.domain_names())


def test_ctrl_c_during_a_start_of_many_finishes_those_under_way(
    minimal_store: Store, minimal_net: str, unique: str, virt: Virt
) -> None:
    prefix = f"i{unique}-"
    names = made_by_new(minimal_store.root, minimal_net, prefix, 8)
    try:
        assert lxcforge(minimal_store.root, "stop", f"{prefix}*", "--timeout", "10").returncode == 0
        starting = lxcforge_started(minimal_store.root, "start", f"{prefix}*", "-j", "2", "--json")
        deadline = time.monotonic() + 60
        while not any(virt.state(n) == "running" for n in names) and time.monotonic() < deadline:
            time.sleep(0.05)
        starting.send_signal(signal.SIGINT)
        out, err = starting.communicate(timeout=120)
        assert starting.returncode == 130, err
        summary = json.loads(out)
        assert summary["interrupted"] and {f["error"] for f in summary["failed"]} == {bulk.NOT_BEGUN}
        done = set(summary["done"])
        running = {n for n in names if virt.state(n) == "running"}
        # What began was finished (running, managed, its host end without IPv6); nothing more began.
        assert done == running and 1 <= len(running) < len(names), (done, running)
        for name in running:
            assert virt.init_namespaces(name)
            for end in virt.host_interfaces(name):
                assert Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").read_text() == "1\n"
    finally:
        assert lxcforge(minimal_store.root, "destroy", f"{prefix}*").returncode == 0
