from lxcforge import host

HYBRID = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
40 30 0:36 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
50 22 7:0 / /var/lib/lxcforge rw,noatime shared:9 - btrfs /dev/loop0 rw,space_cache=v2
51 22 0:50 / /srv/with\\040space rw - tmpfs none rw
"""


def test_parse_mountinfo_fields_and_escapes() -> None:
    mounts = host.parse_mountinfo(HYBRID)
    assert [m.mount_point for m in mounts][-1] == "/srv/with space"
    store = mounts[4]
    assert (store.fstype, store.source, store.options) == ("btrfs", "/dev/loop0", "rw,noatime")
    assert store.super_options == "rw,space_cache=v2"
    assert host.mounted_cgroup_controllers(mounts) == {"rw", "cpu"}


def test_mount_containing_picks_the_longest_prefix() -> None:
    mounts = host.parse_mountinfo(HYBRID)
    assert host.mount_containing("/var/lib/lxcforge/bases/x", mounts).fstype == "btrfs"  # type: ignore[union-attr]
    assert host.mount_containing("/var/lib/lxcforgeX", mounts).fstype == "ext4"  # type: ignore[union-attr]
    assert host.is_mount_point("/var/lib/lxcforge", mounts)
    assert not host.is_mount_point("/var/lib", mounts)


def test_hybrid_cgroup_detection() -> None:
    mounts = host.parse_mountinfo(HYBRID)
    assert host.has_hybrid_cgroups(mounts)
    without_unified = [m for m in mounts if m.mount_point != "/sys/fs/cgroup/unified"]
    assert not host.has_hybrid_cgroups(without_unified)
    pure_v2 = host.parse_mountinfo("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert not host.has_hybrid_cgroups(pure_v2)


def test_libvirt_daemon_pids_come_from_pid_files(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os
    from pathlib import Path

    own = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    live, stale = tmp_path / "a.pid", tmp_path / "b.pid"
    live.write_text(f"{os.getpid()}\n")
    stale.write_text("1\n")  # pid 1 is not a libvirt daemon: a stale file is not believed
    monkeypatch.setattr(host, "LIBVIRT_DAEMON_PID_FILES", (live, stale))
    monkeypatch.setattr(host, "LIBVIRT_DAEMONS", (own,))
    scanned = []
    monkeypatch.setattr(host, "pids_of", lambda program: scanned.append(program) or [])
    assert host.libvirt_daemon_pids() == [os.getpid()]
    assert scanned == []
    # No pid file names one: the scan is the fallback.
    monkeypatch.setattr(host, "LIBVIRT_DAEMON_PID_FILES", (stale,))
    assert host.libvirt_daemon_pids() == []
    assert scanned == [own]


def test_threads_total_counts_every_thread() -> None:
    from pathlib import Path

    tasks = sum(1 for _ in Path("/proc").glob("[0-9]*/task/[0-9]*"))
    total = host.threads_total()
    assert total is not None and abs(total - tasks) < max(50, tasks // 10)
