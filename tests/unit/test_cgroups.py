"""The init wrapper, run by a real shell against fake /proc and /sys trees."""

import subprocess
from pathlib import Path

from lxcforge import cgroups, host


def run_wrapper(tmp_path: Path, proc_cgroup: str) -> tuple[str, list[str]]:
    sysfs = tmp_path / "sys/fs/cgroup/systemd"
    sysfs.mkdir(parents=True)
    (tmp_path / "self-cgroup").write_text(proc_cgroup)
    script = (cgroups.WRAPPER.replace("/proc/self/cgroup", str(tmp_path / "self-cgroup"))
              .replace("/sys/fs/cgroup/systemd", str(sysfs))
              .replace("exec /sbin/init", "echo exec-init"))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         env={"LIBVIRT_LXC_UUID": "u-1", "PATH": "/usr/bin:/bin"}).stdout
    made = sorted(str(p.relative_to(sysfs)) for p in sysfs.rglob("*"))
    return out, made


LEGACY = "systemd.legacy_systemd_cgroup_controller=1"


def test_wrapper_moves_init_into_its_own_group_without_machined(tmp_path: Path) -> None:
    out, made = run_wrapper(tmp_path, "9:name=systemd:/\n4:memory:/machine/lxc-1-x.libvirt-lxc\n")
    assert out.split() == ["exec-init", LEGACY]
    assert made == ["lxcforge", "lxcforge/u-1", "lxcforge/u-1/cgroup.procs"]


def test_wrapper_keeps_systemd_legacy_on_v1_and_does_nothing_on_v2(tmp_path: Path) -> None:
    out, made = run_wrapper(tmp_path, "9:name=systemd:/machine.slice/machine-lxc-1.scope\n")
    assert out.split() == ["exec-init", LEGACY] and made == []
    out, made = run_wrapper(tmp_path / "v2", "0::/machine.slice/x\n")
    assert out.split() == ["exec-init"] and made == []


PROC_CGROUPS = """\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t5\t1
cpu\t1\t4\t1
cpuacct\t2\t5\t1
memory\t4\t37\t1
net_cls\t0\t1\t1
perf_event\t0\t1\t1
net_prio\t0\t1\t1
hugetlb\t0\t1\t1
rdma\t0\t1\t0
pids\t8\t14\t1
"""

# A host without systemd: only what libvirt's setup mounted (cpu and cpuacct apart).
V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime shared:5 - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:6 - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime shared:7 - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime shared:8 - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime shared:13 - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:14 - cgroup cgroup rw,xattr,name=systemd
"""


def test_missing_hierarchies_are_grouped_as_systemd_mounts_them() -> None:
    mounts = host.parse_mountinfo(V1_MOUNTS)
    # net_cls and net_prio together (systemd's pairing); rdma is disabled in the kernel.
    assert cgroups.missing_hierarchies(PROC_CGROUPS, mounts) == ["net_cls,net_prio", "perf_event", "hugetlb"]


def test_a_half_mounted_pair_leaves_the_other_alone() -> None:
    mounts = host.parse_mountinfo(V1_MOUNTS + "41 31 0:38 / /sys/fs/cgroup/net_cls rw - cgroup cgroup rw,net_cls\n")
    assert cgroups.missing_hierarchies(PROC_CGROUPS, mounts) == ["perf_event", "net_prio", "hugetlb"]


def test_nothing_is_missing_on_a_tuned_host_or_cgroup_v2() -> None:
    tuned = V1_MOUNTS + "".join(
        f"{50 + i} 31 0:{50 + i} / /sys/fs/cgroup/{g} rw - cgroup cgroup rw,{g}\n"
        for i, g in enumerate(("net_cls,net_prio", "perf_event", "hugetlb")))
    assert cgroups.missing_hierarchies(PROC_CGROUPS, host.parse_mountinfo(tuned)) == []
    v2 = host.parse_mountinfo("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cgroups.missing_hierarchies(PROC_CGROUPS, v2) == []
