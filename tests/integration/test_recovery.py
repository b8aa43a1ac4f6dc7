"""Nothing half-made, ever: lxcforge is SIGKILLed at every named step of new (one and many),
destroy and base, libvirtd is killed mid-batch, and the host is 'rebooted'; afterwards gc (or
the next command on the same name) leaves not one piece behind, and the containers marked
--autostart come back with their addresses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lxcforge import dhcp, faults, host, network
from lxcforge.ops import bulk
from lxcforge.store import Store
from lxcforge.virt import Virt
from tests.integration.conftest import isolated_network, leases_of, lxcforge

REPO = Path(__file__).resolve().parents[2]
LIBVIRTD = REPO / "vagrant" / "libvirtd.sh"
HOST_WIDE = ("rundir", "cgroup")  # gc finds these for any gone domain of the host, not only this store's


def own(items: list[dict[str, str]]) -> list[dict[str, str]]:
    return [i for i in items if i["kind"] not in HOST_WIDE]


@pytest.fixture
def net(minimal_net: str) -> str:
    return minimal_net


def leftovers(pool: Store, virt: Virt, net: str, names: list[str], running: int = 0) -> list[str]:
    """Every piece of state the named containers could have left, found independently of gc
    (running: how many other containers on the network are up, each with its veth)."""
    found = []
    defined = set(virt.domain_names())
    found += [f"domain {n}" for n in names if n in defined]
    found += [f"subvolume {n}" for n in names if pool.container_path(n).exists()]
    info = virt.network(net)
    assert info is not None
    plan = network.parse_network_xml(info.xml)
    found += [f"reservation {h.name}" for h in plan.hosts if h.name in names]
    assert plan.hostsdir is not None
    found += [f"hostsfile {name}" for _mac, name in dhcp.published(plan.hostsdir) if name in names]
    found += [f"lease {le.hostname}" for le in leases_of(virt, net, lambda le: le.hostname in names)]
    found += [f"lock {p.name}" for p in pool.locks.glob("*.lock") if p.name != "addresses.lock"]
    found += [f"pending {n}" for n in pool.pending_names()]
    found += [f"tmp {p.name}" for p in pool.tmp.iterdir()]
    found += [f"rundir {p.name}" for n in names for p in host.LIBVIRT_LXC_STATE.glob(f"{n}.*")]
    ports = subprocess.run(["ip", "-o", "link", "show", "master", str(info.bridge)], capture_output=True,
                           text=True).stdout
    veths = [line.split(":")[1].strip() for line in ports.splitlines()]
    if len(veths) != running:
        found += [f"veth {v}" for v in veths]
    return found


def complete(pool: Store, virt: Virt, net: str, name: str) -> bool:
    """A container with every piece: domain, subvolume, reservation; libvirt manages it."""
    info = virt.network(net)
    assert info is not None
    reserved = {h.name for h in network.parse_network_xml(info.xml).hosts}
    return name in virt.domain_names() and pool.container_path(name).exists() and name in reserved


def killed_at(pool: Store, step: str, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    result = lxcforge(pool.root, *args, env={faults.ENV: step, **(env or {})})
    assert result.returncode == -signal.SIGKILL, (step, result.returncode, result.stderr)
    return result


@pytest.mark.smoke
def test_kill_single_new_at_every_step_then_gc_leaves_nothing(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    name = f"k{unique}"
    for step in faults.NEW_STEPS:
        killed_at(minimal_store, step, "new", name, "--network", net)
        if step == "new.leased":
            # Killed after the container was complete: it is kept, whole.
            assert complete(minimal_store, virt, net, name)
            assert lxcforge(minimal_store.root, "destroy", name).returncode == 0
        gc = lxcforge(minimal_store.root, "gc", "--json")
        assert gc.returncode == 0, gc.stderr
        assert not [i for i in json.loads(gc.stdout)["items"] if "/driver." in i["what"]]  # libvirt's own
        assert leftovers(minimal_store, virt, net, [name]) == [], step
        again = json.loads(lxcforge(minimal_store.root, "gc", "--json").stdout)
        assert own(again["items"]) == [], (step, again)


def test_a_name_whose_new_was_killed_can_be_made_again_at_once(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    name = f"r{unique}"
    for step in faults.NEW_STEPS:
        if step == "new.leased":
            continue  # killed once complete: the container exists, as it should
        killed_at(minimal_store, step, "new", name, "--network", net)
        made = lxcforge(minimal_store.root, "new", name, "--network", net, "--json")
        assert made.returncode == 0, (step, made.stderr)
        assert json.loads(made.stdout)["created"][0]["leased"] is True
        assert lxcforge(minimal_store.root, "destroy", name).returncode == 0
        assert leftovers(minimal_store, virt, net, [name]) == [], step


def test_kill_bulk_new_at_every_step_keeps_only_complete_containers(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    for i, step in enumerate(faults.NEW_STEPS):
        prefix = f"b{unique}{i}-"
        names = [f"{prefix}{n}" for n in range(1, 7)]
        # The third time the step is reached: some containers of the batch are further along.
        # Steps once per batch: the first time; once per chunk of reservations (-j 2 and
        # chunks of at least 4: four, then more as the first finish): the second.
        occurrence = {"new.locked": 1, "new.reclaimed": 1, "new.hostsfile": 2}.get(step, 3)
        killed_at(minimal_store, f"{step}@{occurrence}", "new", "--count", "6", "--prefix", prefix, "--network", net,
                  "-j", "2", env={bulk.RESERVE_CHUNK_ENV: "4"})
        assert lxcforge(minimal_store.root, "gc").returncode == 0
        kept = [n for n in names if n in virt.domain_names()]
        for name in kept:
            assert complete(minimal_store, virt, net, name), (step, name)
            assert virt.init_namespaces(name), (step, name)
        assert leftovers(minimal_store, virt, net, [n for n in names if n not in kept], len(kept)) == [], step
        assert lxcforge(minimal_store.root, "destroy", "--missing-ok", *names).returncode == 0
        assert leftovers(minimal_store, virt, net, names) == [], step


def test_kill_destroy_at_every_step_then_destroy_or_gc_finishes_it(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    for i, step in enumerate(faults.DESTROY_STEPS):
        for finish in ("destroy", "gc"):
            name = f"d{unique}{i}{finish[0]}"
            assert lxcforge(minimal_store.root, "new", name, "--network", net).returncode == 0
            killed_at(minimal_store, step, "destroy", name)
            args = ["destroy", "--missing-ok", name] if finish == "destroy" else ["gc"]
            assert lxcforge(minimal_store.root, *args).returncode == 0
            assert leftovers(minimal_store, virt, net, [name]) == [], (step, finish)


def test_kill_base_build_at_every_step_then_gc_leaves_nothing(minimal_store: Store) -> None:
    for step in faults.BASE_STEPS:
        killed_at(minimal_store, step, "base", "--distro", "minimal", "--release", "1", "--name", "killed")
        published = minimal_store.base_path("killed").exists()
        assert published == (step == "base.published"), step
        gc = json.loads(lxcforge(minimal_store.root, "gc", "--json").stdout)
        assert {item["kind"] for item in own(gc["items"])} <= {"tmp", "lock"}, gc
        assert list(minimal_store.tmp.iterdir()) == [], step
        assert [p.name for p in minimal_store.locks.glob("*.lock") if p.name != "addresses.lock"] == []
        if published:
            assert lxcforge(minimal_store.root, "base", "rm", "killed").returncode == 0


def test_orphaned_reservations_are_counted_reclaimed_and_others_left_alone(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    name = f"o{unique}"
    # Another tool's reservation on the same network, with the same kind of name.
    foreign = network.DhcpHost("52:54:00:aa:bb:cc", "", f"f{unique}")
    plan = network.parse_network_xml(virt.network(net).xml)  # type: ignore[union-attr]
    foreign = network.DhcpHost(foreign.mac, str(network.free_addresses(plan)[-1]), foreign.name)
    virt.add_dhcp_host(net, network.dhcp_host_xml(foreign), live=False)
    killed_at(minimal_store, "new.hostsfile", "new", name, "--network", net)
    shown = {c["name"]: c for c in json.loads(lxcforge(minimal_store.root, "list", "--json").stdout)}
    assert shown[name]["state"] == "half-made (lxcforge gc)"
    listed = {n["name"]: n for n in json.loads(lxcforge(minimal_store.root, "network", "list", "--json").stdout)}
    assert listed[net]["orphaned"] == 1 and listed[net]["containers"] == []
    doctor = json.loads(lxcforge(minimal_store.root, "doctor", "--json").stdout)
    row = next(c for c in doctor["checks"] if c["name"] == "leftovers")
    assert row["status"] == "warn" and "lxcforge gc" in row["fix"]
    dry = json.loads(lxcforge(minimal_store.root, "gc", "--dry-run", "--json").stdout)
    assert sorted(i["kind"] for i in own(dry["items"])) == ["lock", "unfinished"]
    assert leftovers(minimal_store, virt, net, [name]) != []  # the dry run changed nothing
    # destroy removes every piece of the name, the reservation without a domain included.
    assert lxcforge(minimal_store.root, "destroy", name).returncode == 0
    assert leftovers(minimal_store, virt, net, [name]) == []
    assert own(json.loads(lxcforge(minimal_store.root, "gc", "--json").stdout)["items"]) == []
    hosts = network.parse_network_xml(virt.network(net).xml).hosts  # type: ignore[union-attr]
    assert foreign in hosts  # never touched

    # Another tool's domain: destroy refuses it and leaves no mark that gc would act on.
    other = f"other{unique}"
    virt.define_domain(f"<domain type='lxc'><name>{other}</name><memory>65536</memory><os><type>exe</type>"
                       "<init>/bin/sh</init></os><devices><filesystem type='mount'><source dir='/var/empty'/>"
                       "<target dir='/'/></filesystem></devices></domain>")
    try:
        refused = lxcforge(minimal_store.root, "destroy", other)
        assert refused.returncode == 1 and "not an lxcforge container" in refused.stderr
        assert not minimal_store.is_pending(other)
        assert other not in json.dumps(json.loads(lxcforge(minimal_store.root, "gc", "--json").stdout))
        assert other in virt.domain_names()
    finally:
        virt.undefine(other)


def test_libvirtd_killed_mid_batch_then_gc_leaves_only_complete_containers(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    prefix = f"v{unique}-"
    names = [f"{prefix}{n}" for n in range(1, 17)]
    batch = subprocess.Popen([sys.executable, "-m", "lxcforge", "--store", str(minimal_store.root), "new",
                              "--count", "16", "--prefix", prefix, "--network", net, "-j", "2", "--timeout", "20"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while sum(1 for n in names if minimal_store.container_path(n).exists()) < 4:
            assert time.monotonic() < deadline and batch.poll() is None
            time.sleep(0.05)
        subprocess.run(["bash", str(LIBVIRTD), "kill"], check=True)
        subprocess.run(["bash", str(LIBVIRTD), "start"], check=True)
        batch.communicate(timeout=120)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()
        subprocess.run(["bash", str(LIBVIRTD), "start"], check=True)
    with Virt("lxc:///") as fresh:
        gc = lxcforge(minimal_store.root, "-vv", "gc")
        assert gc.returncode == 0, gc.stderr[-3000:]
        kept = [n for n in names if n in fresh.domain_names()]
        for name in kept:
            assert complete(minimal_store, fresh, net, name), name
        assert leftovers(minimal_store, fresh, net, [n for n in names if n not in kept], len(kept)) == []
        assert lxcforge(minimal_store.root, "destroy", "--missing-ok", *names).returncode == 0
        assert leftovers(minimal_store, fresh, net, names) == []


def test_marked_containers_come_back_after_a_reboot(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    marked, plain, later = f"a{unique}-1", f"a{unique}-2", f"a{unique}-3"
    made = json.loads(lxcforge(minimal_store.root, "new", marked, "--autostart", "--network", net, "--json").stdout)
    address = made["created"][0]["ipv4"]
    assert lxcforge(minimal_store.root, "new", plain, later, "--network", net).returncode == 0
    assert lxcforge(minimal_store.root, "autostart", later).returncode == 0
    listed = {c["name"]: c for c in json.loads(lxcforge(minimal_store.root, "list", "--json").stdout)}
    assert listed[marked]["autostart"] and listed[later]["autostart"] and not listed[plain]["autostart"]
    assert lxcforge(minimal_store.root, "autostart", "--off", later).returncode == 0

    # The reboot: containers stop, libvirtd stops, the loop-file store is detached.
    assert lxcforge(minimal_store.root, "stop", "--all").returncode == 0
    subprocess.run(["bash", str(LIBVIRTD), "stop"], check=True)
    try:
        subprocess.run(["umount", str(minimal_store.root)], check=True)
        assert not minimal_store.container_path(marked).exists()
    finally:
        subprocess.run(["bash", str(LIBVIRTD), "start"], check=True)
    booted = lxcforge(minimal_store.root, "boot", "--json")
    assert booted.returncode == 0, booted.stderr
    with Virt("lxc:///") as fresh:
        assert fresh.state(marked) == "running"
        assert fresh.state(plain) == "shut off" and fresh.state(later) == "shut off"
        assert fresh.init_namespaces(marked)
        listed = {c["name"]: c for c in json.loads(lxcforge(minimal_store.root, "list", "--json").stdout)}
        assert listed[marked]["ipv4"] == address and listed[marked]["leased"] is True
        # Running it again changes nothing.
        assert lxcforge(minimal_store.root, "boot").returncode == 0
        assert fresh.state(plain) == "shut off"


def test_killed_while_shifting_a_base_for_an_unprivileged_container_leaves_nothing(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    name = f"u{unique}"
    # A store below a directory others cannot pass through: refused, with what to do, before any step.
    closed = minimal_store.root.parent
    closed.chmod(0o700)
    try:
        refused = lxcforge(minimal_store.root, "new", name, "--network", net)
    finally:
        closed.chmod(0o711)
    assert refused.returncode == 1 and f"chmod o+x {closed}" in refused.stderr, refused.stderr
    assert "--privileged" in refused.stderr
    assert leftovers(minimal_store, virt, net, [name]) == [] and not list(minimal_store.shifted.iterdir())

    killed_at(minimal_store, "new.shifted", "new", name, "--network", net, "--id-offset", "200000")
    assert lxcforge(minimal_store.root, "gc").returncode == 0
    assert leftovers(minimal_store, virt, net, [name]) == []
    assert not list(minimal_store.shifted.iterdir())

    made = lxcforge(minimal_store.root, "new", name, "--network", net, "--id-offset", "200000")
    assert made.returncode == 0, made.stderr
    shifted = list(minimal_store.shifted.iterdir())
    assert len(shifted) == 1 and shifted[0].name.startswith("minimal-1@200000.")
    assert lxcforge(minimal_store.root, "destroy", name).returncode == 0
    # The base gone, its shifted copy is an orphan gc removes.
    assert lxcforge(minimal_store.root, "base", "rm", "minimal-1").returncode == 0
    collected = json.loads(lxcforge(minimal_store.root, "gc", "--json").stdout)
    assert [i["kind"] for i in collected["items"] if i["kind"] == "shifted base"] == ["shifted base"]
    assert not list(minimal_store.shifted.iterdir())


def test_destroy_leaves_dnsmasq_unreloaded_and_new_reloads_it_only_when_it_must(
    minimal_store: Store, unique: str, virt: Virt
) -> None:
    """A withdrawn reservation stays in dnsmasq until it reloads (and a reload reruns libvirt's
    lease helper once per lease): destroy does not reload, the same name takes its own entry
    back, and only a `new` that finds nothing else free reloads, once."""
    with isolated_network(virt, f"lxh{unique}", prefix=29) as net:  # 5 addresses
        hostsdir = network.hostsdir_for(net)

        def new(*names: str) -> dict[str, dict[str, object]]:
            made = lxcforge(minimal_store.root, "new", *names, "--network", net, "--json")
            assert made.returncode == 0, made.stderr
            created = {c["name"]: c for c in json.loads(made.stdout)["created"]}
            assert all(c["leased"] is True for c in created.values()), created
            return created

        def destroy(*names: str) -> None:
            assert lxcforge(minimal_store.root, "destroy", *names).returncode == 0

        first = new(f"s{unique}")[f"s{unique}"]
        destroy(f"s{unique}")
        assert [(h.ip, h.name) for h in dhcp.held(hostsdir, net)] == [(first["ipv4"], f"s{unique}")]
        again = new(f"s{unique}")[f"s{unique}"]
        assert (again["ipv4"], again["mac"]) == (first["ipv4"], first["mac"]) and dhcp.held(hostsdir, net) == []

        fill = [f"f{unique}-{i}" for i in range(4)]
        new(*fill)  # the network is full
        destroy(f"s{unique}", *fill[:2])
        held = {h.ip for h in dhcp.held(hostsdir, net)}
        assert len(held) == 3
        # Only held addresses are free: dnsmasq reloads, and a new container leases one.
        other = new(f"o{unique}")[f"o{unique}"]
        assert other["ipv4"] in held and dhcp.held(hostsdir, net) == []

        # Killed between the reload and the removal of the notes: nothing of its container is
        # left after gc, the notes only keep their addresses a while longer.
        destroy(f"o{unique}")
        new(f"p{unique}-1", f"p{unique}-2")
        destroy(f"p{unique}-1")
        killed_at(minimal_store, "new.forgotten", "new", f"k{unique}", "--network", net)
        assert lxcforge(minimal_store.root, "gc").returncode == 0
        assert leftovers(minimal_store, virt, net, [f"k{unique}"], running=3) == []
        assert new(f"k{unique}")[f"k{unique}"]["ipv4"] in held
        destroy(*fill[2:], f"p{unique}-2", f"k{unique}")

        # dnsmasq restarted: it has forgotten them all, and gc removes the notes.
        assert len(dhcp.held(hostsdir, net)) == 4
        for action in ("net-destroy", "net-start"):
            subprocess.run(["virsh", "-c", "lxc:///", action, net], check=True, capture_output=True)
        assert dhcp.held(hostsdir, net) == []
        collected = json.loads(lxcforge(minimal_store.root, "gc", "--json").stdout)
        assert [i["kind"] for i in collected["items"]] == ["dnsmasq note"]
        assert dhcp.void_notes(hostsdir, net) == []
