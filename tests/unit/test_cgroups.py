"""The init wrapper, run by a real shell against fake /proc and /sys trees."""

import subprocess
from pathlib import Path

from lxcforge import cgroups


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


def test_wrapper_moves_init_into_its_own_group_without_machined(tmp_path: Path) -> None:
    out, made = run_wrapper(tmp_path, "9:name=systemd:/\n4:memory:/machine/lxc-1-x.libvirt-lxc\n")
    assert out.strip() == "exec-init"
    assert made == ["lxcforge", "lxcforge/u-1", "lxcforge/u-1/cgroup.procs"]


def test_wrapper_does_nothing_under_machined_or_cgroup_v2(tmp_path: Path) -> None:
    out, made = run_wrapper(tmp_path, "9:name=systemd:/machine.slice/machine-lxc-1.scope\n")
    assert out.strip() == "exec-init" and made == []
    out, made = run_wrapper(tmp_path / "v2", "0::/machine.slice/x\n")
    assert out.strip() == "exec-init" and made == []
