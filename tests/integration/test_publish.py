"""publish: prepare one container, make a base of it, start several like it; what makes one
machine is reset in the base, and the clones are distinct."""

from __future__ import annotations

import json

from lxcforge.store import Store
from lxcforge.virt import Virt
from tests.integration.conftest import lxcforge


def test_publish_a_running_container_and_start_clones_of_it(
    minimal_store: Store, minimal_net: str, unique: str, virt: Virt
) -> None:
    name, base = f"p{unique}", f"prep{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net).returncode == 0
    prepare = ("echo ready > /root/prepared; mkdir -p /etc/ssh /var/lib/systemd /var/lib/dhclient; "
               "echo key > /etc/ssh/ssh_host_ed25519_key; echo conf > /etc/ssh/sshd_config; "
               "echo seed > /var/lib/systemd/random-seed; echo lease > /var/lib/dhclient/eth0.leases; "
               "echo 0123456789abcdef0123456789abcdef > /etc/machine-id")
    assert lxcforge(minimal_store.root, "exec", name, "--", "sh", "-c", prepare).returncode == 0
    made = lxcforge(minimal_store.root, "publish", name, base, "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["froze_for_seconds"] is not None  # it was running: frozen for the snapshot
    assert virt.state(name) == "running"  # and thawed

    root = minimal_store.base_path(base)
    assert (root / "root/prepared").read_text() == "ready\n" and (root / "etc/ssh/sshd_config").exists()
    for gone in ("etc/ssh/ssh_host_ed25519_key", "var/lib/systemd/random-seed", "var/lib/dhclient/eth0.leases",
                 "etc/hostname"):
        assert not (root / gone).exists(), gone
    assert (root / "etc/machine-id").read_text() == ""

    clones = lxcforge(minimal_store.root, "new", "--count", "3", "--prefix", f"c{unique}-", "--base", base,
                      "--network", minimal_net, "--json")
    assert clones.returncode == 0, clones.stderr
    names = sorted(c["name"] for c in json.loads(clones.stdout)["created"])
    for clone in names:
        out = lxcforge(minimal_store.root, "exec", clone, "--", "sh", "-c", "hostname; cat /root/prepared").stdout
        assert out.split() == [clone, "ready"]

    again = lxcforge(minimal_store.root, "publish", name, base)
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    missing = lxcforge(minimal_store.root, "publish", f"nosuch{unique}", f"x{unique}")
    assert missing.returncode == 1 and "hint:" in missing.stderr
    assert not minimal_store.base_path(f"x{unique}").exists()
    assert list(minimal_store.tmp.iterdir()) == []


def test_publish_a_stopped_container_replacing_a_base(minimal_store: Store, minimal_net: str, unique: str) -> None:
    name, base = f"s{unique}", f"stopped{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net).returncode == 0
    assert lxcforge(minimal_store.root, "publish", name, base).returncode == 0
    assert lxcforge(minimal_store.root, "exec", name, "--", "sh", "-c", "echo two > /root/version").returncode == 0
    assert lxcforge(minimal_store.root, "stop", name).returncode == 0
    made = lxcforge(minimal_store.root, "publish", name, base, "--force", "--json")
    assert made.returncode == 0 and json.loads(made.stdout)["froze_for_seconds"] is None
    assert (minimal_store.base_path(base) / "root/version").read_text() == "two\n"
    assert list(minimal_store.tmp.iterdir()) == []
