"""Containers' cgroups on a cgroup v1 host: systemd kept off the host's cgroup2 hierarchy,
groups removed with their container, `host tune` mounting the hierarchies the host lacks and
removing what vanished containers left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lxcforge import cgroups, host
from lxcforge.store import Store
from lxcforge.virt import Virt
from tests.integration.conftest import lxcforge

needs_v1 = pytest.mark.skipif(host.mounted_cgroup_controllers(host.mounts()) is None,
                              reason="a cgroup v2 host: no v1 hierarchies to keep containers on")


@needs_v1
def test_systemd_stays_off_the_hosts_cgroup2_hierarchy_and_destroy_removes_its_groups(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str, virt: Virt
) -> None:
    if not cgroups.UNIFIED.is_dir():
        pytest.skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified on this host")
    name = f"t{unique}-cg"
    containers.append(name)
    made = lxcforge(cached_pool.root, "new", name, "--base", debian_base, "--network", session_network,
                    "--privileged", "--json")
    assert made.returncode == 0, made.stderr
    container_uuid = virt.domain(name).uuid
    mirror = cgroups.UNIFIED / cgroups.PARENT / container_uuid
    inside = lxcforge(cached_pool.root, "exec", name, "--", "cat", "/proc/self/mountinfo").stdout
    assert " cgroup2 " not in inside
    # lxcforge-init's own group there holds the init, and systemd's tree is not below it.
    assert mirror.is_dir() and not (mirror / "init.scope").exists()
    assert cgroups.host_group(container_uuid).is_dir()

    # Without the wrapper's argument systemd 252 goes hybrid: it mounts cgroup2 and mirrors its
    # tree into the host's one cgroup2 hierarchy.
    wrapper = cached_pool.container_path(name) / cgroups.WRAPPER_PATH.lstrip("/")
    wrapper.write_text(wrapper.read_text().replace(' "$@" $legacy', ' "$@"'))
    assert lxcforge(cached_pool.root, "restart", name).returncode == 0
    assert " cgroup2 " in lxcforge(cached_pool.root, "exec", name, "--", "cat", "/proc/self/mountinfo").stdout
    assert (mirror / "init.scope").is_dir()

    destroyed = lxcforge(cached_pool.root, "destroy", name)
    assert destroyed.returncode == 0, destroyed.stderr
    assert not mirror.exists()
    assert not [h for h in cgroups.hierarchies() if (h / cgroups.PARENT / container_uuid).exists()]
    # Nor libvirt's: its rmdir after the SIGKILL to the frozen container comes while the
    # processes are still exiting, and lxcforge removes what that left.
    assert not [g for h in cgroups.hierarchies() for g in h.glob(f"{cgroups.LIBVIRT_PARENT}/lxc-*-{name}.libvirt-lxc")]


@needs_v1
def test_host_tune_removes_groups_of_vanished_containers() -> None:
    gone = f"{uuid.uuid4()}"
    roots = [cgroups.HOST_HIERARCHY / cgroups.PARENT / gone]
    if cgroups.UNIFIED.is_dir():
        roots.append(cgroups.UNIFIED / cgroups.PARENT / gone)
    libvirts = cgroups.CGROUP_ROOT / "memory" / cgroups.LIBVIRT_PARENT
    if libvirts.is_dir():  # libvirt's group of a container whose controller is gone (no such pid)
        roots.append(libvirts / f"lxc-{2**22 + 1}-x{gone[:8]}{cgroups.LIBVIRT_SUFFIX}")
    left = [root / "system.slice" / "x.service" for root in roots]
    try:
        for path in left:
            path.mkdir(parents=True)
        doctor = json.loads(lxcforge(None, "doctor", "--json").stdout)
        stale = next(c for c in doctor["checks"] if c["name"] == "stale cgroups")
        assert stale["status"] == "warn" and "host tune" in stale["fix"]

        tuned = lxcforge(None, "host", "tune", "--json")
        assert tuned.returncode == 0, tuned.stderr
        assert json.loads(tuned.stdout)["stale_cgroups_removed"] >= len(left)
        assert not any(root.exists() for root in roots)
        again = json.loads(lxcforge(None, "host", "tune", "--json").stdout)
        assert again["stale_cgroups_removed"] == 0
    finally:
        for root in roots:
            for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda entry: -entry[0].count("/")):
                os.rmdir(dirpath)


@needs_v1
def test_host_tune_mounts_the_hierarchies_the_host_lacks(tmp_path: Path) -> None:
    """In a private mount namespace, so the host's own mounts stay as they are."""
    optional = {"net_cls", "net_prio", "perf_event", "hugetlb"}
    hidden = [m.mount_point for m in host.mounts()
              if m.fstype == "cgroup" and optional & set(m.super_options.split(","))]
    if not hidden:
        pytest.skip("the kernel offers none of net_cls, perf_event, hugetlb")
    script = tmp_path / "in-namespace.sh"
    lxcforge_argv = f"{sys.executable} -m lxcforge"
    script.write_text(
        "set -e\n"
        + "".join(f"umount '{point}'\n" for point in hidden)
        + f"{lxcforge_argv} doctor --json > {tmp_path}/before.json || true\n"
        + f"{lxcforge_argv} host tune --json > {tmp_path}/tuned.json\n"
        + f"cat /proc/self/mountinfo > {tmp_path}/mountinfo\n"
        + f"{lxcforge_argv} host tune --json > {tmp_path}/again.json\n")
    env = {**os.environ, "LXCFORGE_CONFIG": "/nonexistent"}
    ran = subprocess.run([shutil.which("unshare") or "unshare", "-m", "--propagation", "private", "sh", str(script)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr

    before = json.loads((tmp_path / "before.json").read_text())
    row = next(c for c in before["checks"] if c["name"] == "cgroup hierarchies")
    assert row["status"] == "warn"
    mounted = json.loads((tmp_path / "tuned.json").read_text())["cgroup_hierarchies"]
    assert sorted(mounted) == sorted(Path(p).name for p in hidden)
    after = host.mounted_cgroup_controllers(host.parse_mountinfo((tmp_path / "mountinfo").read_text()))
    assert after is not None and set(",".join(mounted).split(",")) <= after
    assert json.loads((tmp_path / "again.json").read_text())["cgroup_hierarchies"] == []
