"""The init wrapper, run by a real shell against fake /proc and /sys trees."""

import subprocess
from pathlib import Path

import pytest

from lxcforge import cgroups, host

# Logs each run (an fstab given to mount -a with it); mkdir, rmdir and rm then do their job.
FAKE_TOOL = """#!/bin/sh
tool=$(basename "$0")
echo "$tool $*" >> "$LOG"
[ "$tool $1" != "mount -a" ] || sed 's/^/  /' "$3" >> "$LOG"
case "$tool" in mkdir|rmdir|rm) exec "/bin/$tool" "$@" ;; esac
[ "$tool" != unshare ] || [ -n "$UNSHARE_WORKS" ] || exit 1
[ "$tool" != mount ] || [ -z "$MOUNT_FAILS" ] || exit 32
"""
PRIVILEGED = "         0          0 4294967295\n"
USER_NAMESPACE = "         0     100000      65536\n"


def run_wrapper(tmp_path: Path, proc_cgroup: str, *, dirs: tuple[str, ...] = (), stage: str = "",
                unshare: bool = False, uid_map: str = PRIVILEGED,
                mount_fails: bool = False) -> tuple[list[str], list[str], Path]:
    """The wrapper with /sys/fs/cgroup, /dev and /proc/self/{cgroup,uid_map} moved under
    tmp_path and every tool it runs replaced by a logger; returns (its output, the tools it
    ran, the fake /sys/fs/cgroup). dirs: hierarchies libvirt bind-mounted, with the groups
    given."""
    sysfs = tmp_path / "cgroup"
    for d in dirs:
        (sysfs / d).mkdir(parents=True, exist_ok=True)
        (sysfs / d.split("/")[0] / "cgroup.procs").write_text("")
    (tmp_path / "self-cgroup").write_text(proc_cgroup)
    (tmp_path / "uid-map").write_text(uid_map)
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("mount", "umount", "unshare", "mkdir", "rmdir", "rm"):
        (tools / tool).write_text(FAKE_TOOL)
        (tools / tool).chmod(0o755)
    script = (cgroups.WRAPPER.replace("/proc/self/cgroup", str(tmp_path / "self-cgroup"))
              .replace("/proc/self/uid_map", str(tmp_path / "uid-map"))
              .replace("/sys/fs/cgroup", str(sysfs)).replace("/dev/.lxcforge-cgroup", str(tmp_path / "tmpmount"))
              .replace("exec /sbin/init", "echo exec-init"))
    (tmp_path / "wrapper").write_text(script)
    log = tmp_path / "log"
    log.write_text("")
    env = {"LIBVIRT_LXC_UUID": "u-1", "PATH": f"{tools}:/usr/bin:/bin", "LOG": str(log),
           "LXCFORGE_INIT_STAGE": stage, "UNSHARE_WORKS": "yes" if unshare else "",
           "MOUNT_FAILS": "yes" if mount_fails else ""}
    out = subprocess.run(["sh", str(tmp_path / "wrapper")], capture_output=True, text=True, env=env).stdout
    return out.split(), log.read_text().splitlines(), sysfs


LEGACY = "systemd.legacy_systemd_cgroup_controller=1"
LIBVIRT_GROUP = "machine/lxc-1-x.libvirt-lxc"


def test_wrapper_gives_init_groups_of_its_own_below_libvirts_and_at_the_hosts_root(tmp_path: Path) -> None:
    out, ran, sysfs = run_wrapper(tmp_path, f"9:name=systemd:/\n4:memory:/{LIBVIRT_GROUP}\n",
                                  dirs=("systemd", f"memory/{LIBVIRT_GROUP}"))
    assert out == ["exec-init", LEGACY]
    # Below libvirt's group, so the limits libvirt set there are out of the container's reach.
    assert (sysfs / "memory" / LIBVIRT_GROUP / "container/cgroup.procs").read_text().strip().isdigit()
    assert (sysfs / "systemd/lxcforge/u-1/cgroup.procs").read_text().strip().isdigit()
    # Both were mounted already: one mkdir for both groups; this unshare cannot.
    assert ran == [f"mkdir -p {sysfs}/systemd/lxcforge/u-1 {sysfs}/memory/{LIBVIRT_GROUP}/container",
                   "unshare --cgroup true"]


def test_wrapper_mounts_a_hierarchy_libvirt_did_not_and_copies_cpuset(tmp_path: Path) -> None:
    cpuset = tmp_path / "cgroup/cpuset" / LIBVIRT_GROUP
    cpuset.mkdir(parents=True)
    (cpuset / "cpuset.cpus").write_text("0-1\n")
    (cpuset / "cpuset.mems").write_text("0\n")
    (cpuset / "container").mkdir()  # as the kernel makes it: the files there, empty
    (cpuset / "container/cpuset.cpus").write_text("")
    (cpuset / "container/cpuset.mems").write_text("")
    out, ran, sysfs = run_wrapper(tmp_path, f"8:pids:/\n3:cpuset:/{LIBVIRT_GROUP}\n0::/\n", dirs=("cpuset",))
    assert (cpuset / "container/cpuset.cpus").read_text() == "0-1\n"
    assert (cpuset / "container/cpuset.mems").read_text() == "0\n"
    assert (cpuset / "container/cgroup.procs").read_text().strip().isdigit()
    tmp = tmp_path / "tmpmount"
    assert ran == [f"mkdir -p {tmp}/1 {tmp}/2", f"mount -t cgroup -o pids cgroup {tmp}/1",
                   f"mount -t cgroup2 cgroup2 {tmp}/2", f"mkdir -p {tmp}/1/lxcforge/u-1 {tmp}/2/lxcforge/u-1",
                   f"umount {tmp}/1 {tmp}/2", f"rmdir {tmp}/1 {tmp}/2 {tmp}", "unshare --cgroup true"]
    assert (tmp / "1/lxcforge/u-1/cgroup.procs").read_text().strip().isdigit()  # (the fake mount made none)
    assert out == ["exec-init"]


def test_wrapper_moves_into_no_hierarchy_it_could_not_mount(tmp_path: Path) -> None:
    out, ran, _ = run_wrapper(tmp_path, "8:pids:/\n", mount_fails=True)
    tmp = tmp_path / "tmpmount"
    assert ran == [f"mkdir -p {tmp}/1", f"mount -t cgroup -o pids cgroup {tmp}/1", f"umount {tmp}/1",
                   f"rmdir {tmp}/1 {tmp}", "unshare --cgroup true"]
    assert not tmp.exists() and out == ["exec-init"]


def test_wrapper_in_a_user_namespace_mounts_nothing_and_joins_the_group_made_for_it(tmp_path: Path) -> None:
    """Mounting a host hierarchy there fails (EPERM), and lxcforge made the name=systemd group
    (cgroups.unprivileged_start): no tool runs but the namespace's."""
    out, ran, sysfs = run_wrapper(tmp_path, "9:name=systemd:/\n8:pids:/\n0::/\n", dirs=("systemd/lxcforge/u-1",),
                                  uid_map=USER_NAMESPACE)
    assert ran == ["unshare --cgroup true"]
    assert (sysfs / "systemd/lxcforge/u-1/cgroup.procs").read_text().strip().isdigit()
    assert out == ["exec-init", LEGACY]


def test_wrapper_enters_a_cgroup_namespace_where_it_can(tmp_path: Path) -> None:
    out, ran, _ = run_wrapper(tmp_path, f"4:memory:/{LIBVIRT_GROUP}\n", dirs=(f"memory/{LIBVIRT_GROUP}",),
                              unshare=True)
    assert ran[-2] == "unshare --cgroup true"
    assert ran[-1] == f"unshare --cgroup {tmp_path / 'wrapper'}"


def test_wrapper_in_its_namespace_remounts_the_hierarchies_libvirt_bound(tmp_path: Path) -> None:
    out, ran, sysfs = run_wrapper(tmp_path, "9:name=systemd:/\n4:memory:/\n8:pids:/\n",
                                  dirs=("systemd", "memory"), stage="cgroupns")
    fstab = tmp_path / "tmpmount.fstab"
    assert ran == [f"umount {sysfs}/systemd {sysfs}/memory", f"mount -a -T {fstab}",
                   "  ",
                   f"  cgroup {sysfs}/systemd cgroup nosuid,nodev,noexec,none,name=systemd 0 0",
                   f"  cgroup {sysfs}/memory cgroup nosuid,nodev,noexec,memory 0 0",
                   f"rm -f {fstab}"]
    assert out == ["exec-init", LEGACY] and not fstab.exists()


SCOPE = "machine.slice/machine-lxc\\x2d7\\x2dweb1.scope/libvirt"


def test_wrapper_on_cgroup_v2_moves_init_below_libvirts_scope_and_unshares(tmp_path: Path) -> None:
    """libvirt 9 on a systemd host mounts the host's whole cgroup2 tree into the container
    (machine.slice, user.slice, writable) and opens no cgroup namespace."""
    (tmp_path / "cgroup" / SCOPE).mkdir(parents=True)
    out, ran, sysfs = run_wrapper(tmp_path, f"0::/{SCOPE}\n", unshare=True)
    assert (sysfs / SCOPE / "container/cgroup.procs").read_text().strip().isdigit()
    assert ran == [f"mkdir -p {sysfs / SCOPE}/container", "unshare --cgroup true",
                   f"unshare --cgroup {tmp_path / 'wrapper'}"]


def test_wrapper_on_cgroup_v2_in_its_namespace_mounts_its_own_root(tmp_path: Path) -> None:
    out, ran, sysfs = run_wrapper(tmp_path, "0::/\n", stage="cgroupns")
    fstab = tmp_path / "tmpmount.fstab"
    assert ran == [f"umount {sysfs}", f"mount -a -T {fstab}", f"  cgroup2 {sysfs} cgroup2 nosuid,nodev,noexec 0 0",
                   f"rm -f {fstab}"]
    assert out == ["exec-init"]  # no legacy layout on a unified host


def test_wrapper_on_cgroup_v2_outside_a_machine_scope_does_nothing(tmp_path: Path) -> None:
    out, ran, sysfs = run_wrapper(tmp_path, "0::/user.slice/x\n", unshare=True)
    assert out == ["exec-init"] and ran == [] and not sysfs.exists()


def test_namespace_roots_of_a_containers_processes() -> None:
    assert cgroups.namespace_root(f"/{LIBVIRT_GROUP}/container/system.slice/a.service") == f"/{LIBVIRT_GROUP}/container"
    assert cgroups.namespace_root("/lxcforge/u-1/init.scope") == "/lxcforge/u-1"
    assert cgroups.namespace_root(f"/{SCOPE}/container/init.scope") == f"/{SCOPE}/container"  # cgroup v2
    assert cgroups.namespace_root(f"/{LIBVIRT_GROUP}/init.scope") is None  # made before: no namespace
    assert cgroups.namespace_root("/") is None


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


def test_libvirts_groups_of_stopped_containers_are_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen kill leaves libvirt's machine/lxc-PID-NAME.libvirt-lxc groups (their rmdir
    came while the killed processes were exiting): stale once that controller is gone and
    nothing runs in them. libvirt rewrites NAME (my_web -> myweb): found by PID only."""
    for hierarchy in ("memory", "pids"):
        (tmp_path / hierarchy).mkdir()
        (tmp_path / hierarchy / "cgroup.procs").write_text("1\n")
        for group in ("lxc-7-web1.libvirt-lxc", "lxc-8-web-2.libvirt-lxc", "lxc-9-db.libvirt-lxc",
                      "lxc-10-myweb.libvirt-lxc"):
            (tmp_path / hierarchy / "machine" / group / "container/init.scope").mkdir(parents=True)
    # Its controller gone, yet a process left in a group below: not stale, nothing pruned.
    (tmp_path / "pids/machine/lxc-10-myweb.libvirt-lxc/container/cgroup.procs").write_text("4242\n")
    (tmp_path / "memory/machine/lxc-x-odd.libvirt-lxc").mkdir()  # not libvirt's naming: not touched
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(host, "is_libvirt_controller", lambda pid: pid == 7)
    stale = [str(path.relative_to(tmp_path)) for path in cgroups.stale_libvirt_groups()]
    assert stale == ["memory/machine/lxc-10-myweb.libvirt-lxc", "memory/machine/lxc-8-web-2.libvirt-lxc",
                     "memory/machine/lxc-9-db.libvirt-lxc", "pids/machine/lxc-8-web-2.libvirt-lxc",
                     "pids/machine/lxc-9-db.libvirt-lxc"]
    cgroups.remove_libvirt_groups(10)
    assert not (tmp_path / "memory/machine/lxc-10-myweb.libvirt-lxc").exists()
    assert (tmp_path / "pids/machine/lxc-10-myweb.libvirt-lxc/container/init.scope").is_dir()
    assert (tmp_path / "memory/machine/lxc-7-web1.libvirt-lxc").exists()


def test_a_controllers_group_is_named_from_its_proc_cgroup_and_removed_without_listing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 1000 containers running, listing machine/ in each of 11 hierarchies per destroyed
    container cost destroy 20 half a CPU-second: the name is read while the controller runs."""
    (tmp_path / "proc/8").mkdir(parents=True)
    (tmp_path / "proc/8/cgroup").write_text("12:hugetlb:/\n4:memory:/machine/lxc-8-web-2.libvirt-lxc\n"
                                            "1:name=systemd:/\n0::/\n")
    (tmp_path / "proc/9").mkdir()
    (tmp_path / "proc/9/cgroup").write_text("4:memory:/\n0::/\n")
    assert cgroups.libvirt_group_name(8, proc=tmp_path / "proc") == "lxc-8-web-2.libvirt-lxc"
    assert cgroups.libvirt_group_name(9, proc=tmp_path / "proc") is None
    assert cgroups.libvirt_group_name(10, proc=tmp_path / "proc") is None  # exited already
    root = tmp_path / "cgroup"
    for hierarchy in ("memory", "pids"):
        (root / hierarchy).mkdir(parents=True)
        (root / hierarchy / "cgroup.procs").write_text("1\n")
        for group in ("lxc-8-web-2.libvirt-lxc", "lxc-80-other.libvirt-lxc"):
            (root / hierarchy / "machine" / group / "container").mkdir(parents=True)
    (root / "pids/machine/lxc-8-web-2.libvirt-lxc/container/cgroup.procs").write_text("77\n")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)

    def no_listing(*_args: object) -> list[Path]:
        raise AssertionError("machine/ listed")

    monkeypatch.setattr(cgroups, "libvirt_groups", no_listing)
    cgroups.remove_libvirt_groups(8, "lxc-8-web-2.libvirt-lxc")
    assert not (root / "memory/machine/lxc-8-web-2.libvirt-lxc").exists()
    assert (root / "pids/machine/lxc-8-web-2.libvirt-lxc/container").is_dir()  # a process still in it
    assert (root / "memory/machine/lxc-80-other.libvirt-lxc").is_dir()
