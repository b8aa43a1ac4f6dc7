"""libvirt's lost init pid (lxcforge/ops/repair.py), made to happen on purpose: a client takes
the controller's one init event before libvirtd connects (tests/support/init_thief.py), as
the race in libvirt's monitor set-up does under load. Without lxcforge's check the container
stays half-managed (virsh dominfo fails); with it, every start path repairs it, list, info
and doctor show it, gc repairs it, and stop does not wait for a libvirt that cannot see it.
Then Ansible, through libvirt's inventory and LXC connection, reaches every container."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lxcforge import initcache
from lxcforge.store import Store
from lxcforge.virt import Virt
from tests.integration.conftest import lxcforge, made_by_new
from tests.support.ansible import assert_each_answers_with_its_name

REPO = Path(__file__).resolve().parents[2]
HOST_WIDE = ("rundir", "cgroup")  # gc finds these for any gone domain of the host, not only this store's


@pytest.fixture
def net(minimal_net: str) -> str:
    return minimal_net


def steal_init_event(name: str) -> subprocess.Popen[str]:
    """Start taking NAME's init event; the container must start after this."""
    (Path("/run/libvirt/lxc") / f"{name}.sock").unlink(missing_ok=True)
    thief = subprocess.Popen([sys.executable, "-m", "tests.support.init_thief", name, "60"], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    return thief


def stolen(thief: subprocess.Popen[str]) -> bool:
    out, _ = thief.communicate(timeout=60)
    return out.strip() == "stolen"


def dominfo_ok(name: str) -> bool:
    result = subprocess.run(["virsh", "-c", "lxc:///", "dominfo", name], capture_output=True, text=True)
    return result.returncode == 0


def test_without_the_check_a_container_is_half_managed_and_lxcforge_shows_and_repairs_it(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    name = f"h{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", net, "--no-start").returncode == 0
    thief = steal_init_event(name)
    subprocess.run(["virsh", "-c", "lxc:///", "start", name], check=True, capture_output=True)
    assert stolen(thief)
    # What users met: running, yet libvirt cannot tell its init, nor enter it.
    broken = subprocess.run(["virsh", "-c", "lxc:///", "dominfo", name], capture_output=True, text=True)
    assert broken.returncode == 1 and "Init pid is not yet available" in broken.stderr
    listed = {c["name"]: c for c in json.loads(lxcforge(minimal_store.root, "list", "--json").stdout)}
    assert listed[name]["state"] == "running" and listed[name]["init_pid_known"] is False
    assert "lost its init pid" in lxcforge(minimal_store.root, "list").stdout
    info = json.loads(lxcforge(minimal_store.root, "info", name, "--json").stdout)
    assert info["init_pid_known"] is False
    doctor = json.loads(lxcforge(minimal_store.root, "doctor", "--json").stdout)
    row = next(c for c in doctor["checks"] if c["name"] == "managed containers")
    assert row["status"] == "fail" and name in row["detail"] and "lxcforge gc" in row["fix"]

    # stop does not wait for a shutdown libvirt cannot see.
    stopped = lxcforge(minimal_store.root, "stop", name, "--timeout", "30")
    assert stopped.returncode == 0 and "did not stop" not in stopped.stderr
    assert virt.state(name) == "shut off"

    # gc repairs one that is running half-managed.
    thief = steal_init_event(name)
    subprocess.run(["virsh", "-c", "lxc:///", "start", name], check=True, capture_output=True)
    assert stolen(thief) and not dominfo_ok(name)
    dry = json.loads(lxcforge(minimal_store.root, "gc", "--dry-run", "--json").stdout)
    # (Other tests' libvirt leftovers on this host may be listed too.)
    assert [(i["kind"], i["what"]) for i in dry["items"] if i["kind"] not in HOST_WIDE] == [("unmanaged", name)]
    assert not dominfo_ok(name)
    assert lxcforge(minimal_store.root, "gc").returncode == 0
    assert dominfo_ok(name)
    assert json.loads(lxcforge(minimal_store.root, "info", name, "--json").stdout)["init_pid_known"] is True

    # list remembers a yes for this libvirtd and this controller only: started again and
    # half-managed again, the container is checked anew and shown.
    listed = {c["name"]: c for c in json.loads(lxcforge(minimal_store.root, "list", "--json").stdout)}
    assert listed[name]["init_pid_known"] is True and name in initcache.load()
    subprocess.run(["virsh", "-c", "lxc:///", "destroy", name], check=True, capture_output=True)
    thief = steal_init_event(name)
    subprocess.run(["virsh", "-c", "lxc:///", "start", name], check=True, capture_output=True)
    assert stolen(thief)
    listed = {c["name"]: c for c in json.loads(lxcforge(minimal_store.root, "list", "--json").stdout)}
    assert listed[name]["init_pid_known"] is False


def test_new_and_start_repair_a_lost_or_stale_init_pid(
    minimal_store: Store, net: str, unique: str, virt: Virt
) -> None:
    name = f"n{unique}"
    thief = steal_init_event(name)
    made = lxcforge(minimal_store.root, "new", name, "--network", net, "--json")
    assert stolen(thief)
    assert made.returncode == 0, made.stderr
    document = json.loads(made.stdout)
    assert document["repaired"] == 1 and document["created"][0]["repaired"] == 1
    assert dominfo_ok(name)
    # Confirmed after the repair, for this controller: list will not ask libvirt again.
    key = initcache.key(name, initcache.daemon_identity())
    assert key is not None and initcache.load().get(name) == key
    assert subprocess.run(["virsh", "-c", "lxc:///", "lxc-enter-namespace", name, "--noseclabel", "--", "/bin/true"],
                          capture_output=True).returncode == 0

    # After a stop, libvirt keeps the previous run's pid: a lost event leaves a stale one,
    # which the security-label call alone would accept. start compares namespaces.
    assert lxcforge(minimal_store.root, "stop", name).returncode == 0
    thief = steal_init_event(name)
    started = lxcforge(minimal_store.root, "start", name, "--json")
    assert stolen(thief)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["repaired"] == 1
    assert dominfo_ok(name)
    assert lxcforge(minimal_store.root, "restart", name).returncode == 0
    assert dominfo_ok(name)


def test_ansible_runs_a_command_in_every_container_of_a_bulk_new(
    minimal_store: Store, net: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"ans{unique}-"
    names = made_by_new(minimal_store.root, net, prefix, 12)
    assert len(names) == 12
    inventory = tmp_path / "inventory.libvirt.yml"
    inventory.write_text("plugin: community.libvirt.libvirt\nuri: 'lxc:///'\ninventory_hostname: name\n")
    assert_each_answers_with_its_name(
        inventory, f"{prefix}*", names, tmp_path / "ansible-home", ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_INVENTORY_ENABLED="community.libvirt.libvirt", ANSIBLE_INVENTORY_UNPARSED_FAILED="True",
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True", ANSIBLE_FORCE_VALID_GROUP_NAMES="ignore")
