"""The foundation on real parts: a loop pool, subvolumes and snapshots, an isolated network,
and a libvirt LXC domain whose root is a snapshot, started and seen running."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lxcforge import domain, host, network, store
from lxcforge.store import Store, StoreState
from lxcforge.virt import Virt


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_loop_pool_is_btrfs_laid_out_and_reattaches(loop_store: Store) -> None:
    status = loop_store.status()
    assert status.state is StoreState.READY and status.loop_pool and status.fstype == "btrfs"
    for sub in store.SUBDIRS:
        assert (loop_store.root / sub).is_dir()
    (loop_store.cache / "marker").write_text("kept")
    assert store.quotas_enabled(loop_store.root) is False

    loop_store.detach()
    assert loop_store.status().state is StoreState.DETACHED
    assert not (loop_store.cache / "marker").exists()
    loop_store.ensure()
    assert (loop_store.cache / "marker").read_text() == "kept"


def test_snapshot_is_writable_copy_and_base_read_only(loop_store: Store, busybox_base: Path) -> None:
    clone = loop_store.container_path("clone")
    store.set_read_only(busybox_base)
    store.snapshot(busybox_base, clone)
    assert store.is_subvolume(busybox_base) and store.is_subvolume(clone)
    (clone / "etc" / "hostname").write_text("clone\n")
    with pytest.raises(OSError):
        (busybox_base / "etc" / "hostname").write_text("base\n")
    assert not (busybox_base / "etc" / "hostname").exists()
    store.delete_tree(clone)
    store.delete_tree(busybox_base)
    assert not clone.exists() and not busybox_base.exists()


def test_lxc_domain_boots_from_a_snapshot(
    loop_store: Store, busybox_base: Path, test_network: str, virt: Virt, domains: list[str],
    unique: str,
) -> None:
    name = f"lxft-{unique}"
    rootfs = loop_store.container_path(name)
    store.snapshot(busybox_base, rootfs)
    spec = domain.ContainerSpec(
        name=name, uuid=str(uuid.uuid4()), rootfs=rootfs, network=test_network,
        mac=network.mac_for(name), memory_bytes=64 * 1024**2, init="/bin/sh",
        init_args=("-c", "echo booted > /proof; exec /bin/busybox sleep 600"),
    )
    domains.append(name)
    virt.define_domain(domain.domain_xml(spec))
    virt.start(name)
    assert virt.state(name) == "running"
    # The container's init wrote into its own snapshot, not into the base.
    assert wait_for(lambda: (rootfs / "proof").exists())
    assert not (busybox_base / "proof").exists()
    # Its NIC sits on the test bridge.
    bridge = virt.network(test_network).bridge  # type: ignore[union-attr]
    ports = subprocess.run(["ip", "-o", "link", "show", "master", str(bridge)],
                           capture_output=True, text=True, check=True).stdout
    assert ports.strip(), "no veth attached to the test bridge"

    virt.destroy(name)
    virt.undefine(name)
    assert not virt.domain_exists(name)
    store.delete_tree(rootfs)
    assert not rootfs.exists()


def test_hybrid_cgroup_layout_is_hidden_from_libvirtd() -> None:
    """On a hybrid host, libvirtd must not see /sys/fs/cgroup/unified (else no LXC start)."""
    if not host.has_hybrid_cgroups(host.mounts()):
        pytest.skip("not a hybrid cgroup host")
    pids = host.pids_of("libvirtd")
    assert pids and not host.has_hybrid_cgroups(host.mounts(pids[0]))


def lxcforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxcforge", *args], capture_output=True, text=True)


def test_doctor_fails_with_a_fix_when_store_detached(loop_store: Store) -> None:
    ok = lxcforge("--store", str(loop_store.root), "doctor", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    loop_store.detach()
    bad = lxcforge("--store", str(loop_store.root), "doctor")
    assert bad.returncode == 1
    row = next(line for line in bad.stdout.splitlines() if line.startswith("store"))
    assert "fail" in row and "lxcforge store attach" in row


def test_doctor_fails_with_a_fix_when_libvirtd_unreachable(tmp_path: Path) -> None:
    result = lxcforge("--uri", f"lxc+unix:///?socket={tmp_path}/no-libvirtd.sock", "doctor")
    assert result.returncode == 1
    row = next(line for line in result.stdout.splitlines() if line.startswith("libvirtd"))
    assert "fail" in row and "start libvirtd" in row


def test_store_that_is_not_btrfs_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious").write_text("x")
    result = lxcforge("--store", str(tmp_path / "data"), "store", "attach")
    assert result.returncode == 1
    assert "not on btrfs" in result.stderr and "hint:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_lease_release_is_what_dhcp_release_sends(unique: str) -> None:
    """lxcforge sends DHCPRELEASE itself (no process per lease): byte for byte what dnsmasq's
    own dhcp_release sends, received on the server address of a throwaway namespace."""
    from lxcforge import dhcp

    ns = f"lxr{unique}"[:15]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for argv in (["link", "add", "r0", "type", "veth", "peer", "name", "r1"],
                     ["addr", "add", "10.99.0.1/24", "dev", "r0"], ["link", "set", "r0", "up"],
                     ["link", "set", "r1", "up"], ["link", "set", "lo", "up"]):
            subprocess.run(["ip", "-n", ns, *argv], check=True)
        probe = f"""
import socket, subprocess, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from lxcforge import dhcp, network
listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listener.bind(("0.0.0.0", dhcp.DHCP_SERVER_PORT))
listener.settimeout(5)
subprocess.run(["dhcp_release", "r0", "10.99.0.7", "02:4c:46:aa:bb:cc", "01:02:4c:46:aa:bb:cc"], check=True)
theirs = listener.recv(2048)
dhcp.release_leases("r0", "10.99.0.1", [(network.DhcpHost("02:4c:46:aa:bb:cc", "10.99.0.7"), "01:02:4c:46:aa:bb:cc")])
print((theirs == listener.recv(2048)) and len(theirs))
"""
        ran = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=30)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == str(len(dhcp.release_packet(network.DhcpHost("02:4c:46:aa:bb:cc", "10.99.0.7"),
                                                                  "10.99.0.1")))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
