"""stats: fake cgroup trees (v1 split and joined, v2 with and without machined) and a fake /proc."""

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest

from lxcforge import stats
from lxcforge.stats import Rate, Usage

HOST_NET = "net:[4026531833]"
MiB = 1 << 20
V1_NO_LIMIT = 9223372036854771712
NET_DEV = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast"
    "|bytes    packets errs drop fifo colls carrier compressed\n"
    "    lo: {lo} 10 0 0 0 0 0 0 {lo} 10 0 0 0 0 0 0\n"
    "  eth0: {rx} 29 0 0 0 0 0 0 {tx} 20 0 0 0 0 0 0\n"
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    (proc / "self/ns").mkdir(parents=True)
    (proc / "self/ns/net").symlink_to(HOST_NET)
    return proc


def process(proc: Path, pid: int, rx: int, tx: int, net: str = "net:[4026532187]") -> None:
    """A process in namespace net whose /proc/PID/net/dev shows rx and tx on eth0."""
    (proc / str(pid) / "ns").mkdir(parents=True)
    (proc / str(pid) / "ns/net").symlink_to(net)
    write(proc / str(pid) / "net/dev", NET_DEV.format(lo=999, rx=rx, tx=tx))


def controller(proc: Path, pid: int, *threads: int) -> None:
    """libvirt_lxc: in the host's namespace (its net/dev shows the host's interfaces)."""
    process(proc, pid, rx=10**9, tx=10**9, net=HOST_NET)
    for thread in threads:
        process(proc, thread, rx=10**9, tx=10**9, net=HOST_NET)
        (proc / str(pid) / "task" / str(thread)).mkdir(parents=True)


def v1_group(root: Path, dirname: str, tasks: str, *, usage: int = 40 * MiB, inactive: int = 16 * MiB,
             limit: int = 512 * MiB, peak: int = 48 * MiB, cpu_ns: int = 2_500_000_000,
             cpuacct: str = "cpuacct", parent: str = "machine") -> Path:
    group = root / "memory" / parent / dirname
    write(group / "tasks", tasks)
    write(group / "memory.usage_in_bytes", f"{usage}\n")
    write(group / "memory.max_usage_in_bytes", f"{peak}\n")
    write(group / "memory.stat", f"cache 1\nrss 2\nhierarchical_memory_limit {limit}\n"
                                 f"hierarchical_memsw_limit {V1_NO_LIMIT}\ntotal_cache 3\n"
                                 f"total_inactive_anon 5\ntotal_inactive_file {inactive}\ntotal_active_file 7\n")
    write(root / cpuacct / parent / dirname / "cpuacct.usage", f"{cpu_ns}\n")
    return group


def v1_split(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    for hierarchy in ("memory", "cpu", "cpuacct", "pids"):
        (root / hierarchy / "machine").mkdir(parents=True)
    return root


def v2_root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    return root


def v2_group(root: Path, relative: str, *, procs: str = "", pids_current: int | None = 9,
             memory_max: str = "max", peak: int | None = None, usage: int = 30 * MiB,
             inactive: int = 10 * MiB, usage_usec: int = 1_500_000) -> Path:
    group = root / relative
    write(group / "cgroup.procs", procs)
    if pids_current is not None:
        write(group / "pids.current", f"{pids_current}\n")
    write(group / "memory.current", f"{usage}\n")
    write(group / "memory.max", f"{memory_max}\n")
    if peak is not None:
        write(group / "memory.peak", f"{peak}\n")
    write(group / "memory.stat", f"anon 1\nfile 2\nactive_file 3\ninactive_file {inactive}\nslab 4\n")
    write(group / "cpu.stat", f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    return group


# (a) cgroup v1, cpu and cpuacct apart (this host)

def test_v1_split_hierarchies(tmp_path: Path) -> None:
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    v1_group(root, "lxc-100-web1.libvirt-lxc", "100\n101\n104\n")
    controller(proc, 100)
    process(proc, 101, rx=5000, tx=700)
    usage = stats.read_all({"web1"}, root, proc)["web1"]
    assert usage.controller_pid == 100
    assert usage.cpu_seconds == 2.5
    assert usage.memory_bytes == 24 * MiB  # usage minus inactive file cache
    assert usage.memory_limit_bytes == 512 * MiB
    assert usage.memory_peak_bytes == 48 * MiB
    assert usage.tasks == 3
    # The container's own eth0 (the controller's namespace is the host's: not that one).
    assert (usage.rx_bytes, usage.tx_bytes) == (5000, 700)


def test_v1_controller_threads_come_first_and_are_skipped(tmp_path: Path) -> None:
    """The controller's threads (lxc-fuse) sit in the container's task list, in the host's
    namespace; the pid can wrap so that they sort before the container's init."""
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    v1_group(root, "lxc-900-web1.libvirt-lxc", "12\n13\n900\n")
    controller(proc, 900, 12)
    process(proc, 13, rx=42, tx=24)
    usage = stats.read_all(None, root, proc)["web1"]
    assert (usage.rx_bytes, usage.tx_bytes, usage.tasks) == (42, 24, 3)


def test_without_access_to_namespaces_controller_threads_are_still_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root: /proc/PID/ns/net of root's processes cannot be read."""
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    v1_group(root, "lxc-900-web1.libvirt-lxc", "12\n13\n900\n")
    controller(proc, 900, 12)
    process(proc, 13, rx=42, tx=24)
    readlink = os.readlink

    def refused(path: str) -> str:
        if "/self/" in path:
            return readlink(path)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "readlink", refused)
    usage = stats.read_all(None, root, proc)["web1"]
    assert (usage.rx_bytes, usage.tx_bytes) == (42, 24)


def test_v1_no_limit_and_only_the_controller_left(tmp_path: Path) -> None:
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    v1_group(root, "lxc-100-web1.libvirt-lxc", "100\n101\n", limit=V1_NO_LIMIT)
    controller(proc, 100, 101)  # the container's init is gone; only lxc-fuse is left
    usage = stats.read_all(None, root, proc)["web1"]
    assert usage.memory_limit_bytes is None
    assert (usage.rx_bytes, usage.tx_bytes) == (None, None)


# (b) cgroup v1, cpu and cpuacct joined

@pytest.mark.parametrize("links", [True, False], ids=["with-links", "without-links"])
def test_v1_joined_cpu_cpuacct(tmp_path: Path, links: bool) -> None:
    root, proc = tmp_path / "cgroup", fake_proc(tmp_path)
    (root / "memory/machine").mkdir(parents=True)
    (root / "cpu,cpuacct/machine").mkdir(parents=True)
    if links:
        (root / "cpu").symlink_to("cpu,cpuacct")
        (root / "cpuacct").symlink_to("cpu,cpuacct")
    v1_group(root, "lxc-100-web1.libvirt-lxc", "100\n101\n", cpu_ns=7_000_000_000, cpuacct="cpu,cpuacct")
    process(proc, 101, rx=1, tx=2)
    assert stats.read_all(None, root, proc)["web1"].cpu_seconds == 7.0


# (c) cgroup v2 with systemd-machined

def test_v2_machined_scope_with_escaped_name(tmp_path: Path) -> None:
    root, proc = v2_root(tmp_path), fake_proc(tmp_path)
    scope = v2_group(root, r"machine.slice/machine-lxc\x2d200\x2dweb\x2d2.scope", procs="200\n", peak=33 * MiB)
    # The container's systemd runs in child groups; the scope itself holds only the controller.
    write(scope / "init.scope/cgroup.procs", "201\n")
    write(scope / "system.slice/cgroup.procs", "")
    controller(proc, 200)
    process(proc, 201, rx=300, tx=400)
    usage = stats.read_all({"web-2"}, root, proc)["web-2"]
    assert usage.controller_pid == 200
    assert usage.cpu_seconds == 1.5
    assert usage.memory_bytes == 20 * MiB
    assert usage.memory_limit_bytes is None  # "max"
    assert usage.memory_peak_bytes == 33 * MiB
    assert usage.tasks == 9  # pids.current: hierarchical
    assert (usage.rx_bytes, usage.tx_bytes) == (300, 400)


def test_v2_limit_and_missing_peak(tmp_path: Path) -> None:
    """memory.peak is new in 5.19."""
    root, proc = v2_root(tmp_path), fake_proc(tmp_path)
    v2_group(root, r"machine.slice/machine-lxc\x2d200\x2dweb2.scope", procs="201\n", memory_max=str(256 * MiB))
    usage = stats.read_all(None, root, proc)["web2"]
    assert usage.memory_limit_bytes == 256 * MiB
    assert usage.memory_peak_bytes is None


# (d) cgroup v2 without machined: libvirt's own groups, no pids controller

def test_v2_without_machined(tmp_path: Path) -> None:
    root, proc = v2_root(tmp_path), fake_proc(tmp_path)
    group = v2_group(root, "machine/lxc-300-db.libvirt-lxc", procs="300\n", pids_current=None)
    write(group / "cgroup.threads", "300\n302\n")
    write(group / "payload/cgroup.threads", "301\n303\n304\n")
    controller(proc, 300, 302)
    process(proc, 301, rx=11, tx=22)
    usage = stats.read_all({"db"}, root, proc)["db"]
    assert usage.tasks == 5  # threads here and in the child group
    assert (usage.rx_bytes, usage.tx_bytes) == (11, 22)


# Which groups are reported

def test_only_the_names_asked_for(tmp_path: Path) -> None:
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    v1_group(root, "lxc-100-web1.libvirt-lxc", "100\n101\n")
    v1_group(root, "lxc-123-other.libvirt-lxc", "123\n124\n")  # another tool's domain
    assert set(stats.read_all({"web1", "absent"}, root, proc)) == {"web1"}
    assert set(stats.read_all(None, root, proc)) == {"web1", "other"}


def test_stale_group_of_a_stopped_container_is_skipped(tmp_path: Path) -> None:
    """libvirt can leave a stopped container's group behind; the restarted one is reported."""
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    v1_group(root, "lxc-50-web1.libvirt-lxc", "", usage=4096)
    v1_group(root, "lxc-100-web1.libvirt-lxc", "100\n101\n")
    v1_group(root, "lxc-60-gone.libvirt-lxc", "", usage=4096)
    found = stats.read_all(None, root, proc)
    assert set(found) == {"web1"} and found["web1"].controller_pid == 100


def test_processes_only_in_a_child_group(tmp_path: Path) -> None:
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    group = v1_group(root, "lxc-100-web1.libvirt-lxc", "")
    write(group / "lxcforge/u-1/tasks", "101\n102\n")
    write(group / "system.slice/tasks", "103\n")
    process(proc, 101, rx=7, tx=8)
    usage = stats.read_all(None, root, proc)["web1"]
    assert usage.tasks == 3
    assert (usage.rx_bytes, usage.tx_bytes) == (7, 8)


def test_v1_with_machined_scopes(tmp_path: Path) -> None:
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    (root / "memory/machine.slice").mkdir()
    v1_group(root, r"machine-lxc\x2d100\x2dweb\x2d1.scope", "100\n101\n", parent="machine.slice")
    assert stats.read_all({"web-1"}, root, proc)["web-1"].cpu_seconds == 2.5


def test_names_libvirt_cut_or_collapsed_are_still_found(tmp_path: Path) -> None:
    """libvirt's machine name keeps one of each run of '-' and stops at 64 characters."""
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    long_name = "a" * 63
    dashes = "web--1"
    assert stats.machine_name(long_name, 100) == "lxc-100-" + "a" * 56
    assert stats.machine_name(dashes, 7) == "lxc-7-web-1"
    v1_group(root, f"{stats.machine_name(long_name, 100)}.libvirt-lxc", "100\n")
    v1_group(root, f"{stats.machine_name(dashes, 7)}.libvirt-lxc", "7\n")
    assert set(stats.read_all({long_name, dashes}, root, proc)) == {long_name, dashes}


def test_two_names_cut_alike_match_neither(tmp_path: Path) -> None:
    root, proc = v1_split(tmp_path), fake_proc(tmp_path)
    first, second = "a" * 60 + "x", "a" * 60 + "y"
    v1_group(root, f"{stats.machine_name(first, 100)}.libvirt-lxc", "100\n")
    assert stats.read_all({first, second}, root, proc) == {}


def test_no_cgroup_filesystem(tmp_path: Path) -> None:
    assert stats.read_all(None, tmp_path, fake_proc(tmp_path)) == {}


def test_net_dev_sums_every_interface_but_lo() -> None:
    text = NET_DEV.format(lo=999, rx=100, tx=200) + "  eth1: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n"
    assert stats.parse_net_dev(text.encode()) == (105, 206)


# Rates

def fake_usage(name: str, at: float, cpu: float, rx: int | None = 0, tx: int | None = 0, pid: int = 100,
          memory: int = 10 * MiB, tasks: int = 5, limit: int | None = 512 * MiB) -> Usage:
    return Usage(name=name, controller_pid=pid, cpu_seconds=cpu, memory_bytes=memory, memory_limit_bytes=limit,
                 memory_peak_bytes=memory * 2, tasks=tasks, rx_bytes=rx, tx_bytes=tx, at=at)


def test_rates_over_two_reads() -> None:
    before = {"a": fake_usage("a", 10.0, 1.0, rx=1000, tx=0), "b": fake_usage("b", 10.0, 5.0),
              "c": fake_usage("c", 10.0, 9.0), "d": fake_usage("d", 10.0, 0.0, rx=5000)}
    after = {"a": fake_usage("a", 10.5, 1.5, rx=3048, tx=512), "b": fake_usage("b", 11.0, 7.0, rx=None, tx=None),
             "c": fake_usage("c", 11.0, 0.1, pid=555), "d": fake_usage("d", 11.0, 0.0, rx=10),
             "new": fake_usage("new", 11.0, 1.0)}
    found = stats.rates(before, after)
    assert found["a"] == Rate("a", 100.0, 4096.0, 1024.0)  # one core over half a second
    assert found["b"] == Rate("b", 200.0, None, None)
    assert found["d"].rx_bytes_per_second is None  # counters went back: its namespace was remade
    assert "c" not in found  # restarted in between: a new controller
    assert "new" not in found


# Formatting

def sample() -> tuple[dict[str, Usage], dict[str, Rate]]:
    usages = {"web1": fake_usage("web1", 1.0, 12.0, rx=2048, tx=1024, memory=100 * MiB, tasks=20),
              "db": fake_usage("db", 1.0, 300.0, rx=None, tx=None, memory=300 * MiB, tasks=5, limit=None),
              "cache": fake_usage("cache", 1.0, 50.0, rx=10 * MiB, tx=MiB, memory=50 * MiB, tasks=50)}
    return usages, {"web1": Rate("web1", 150.0, 3 * 1024.0, 512.0), "db": Rate("db", 20.0, None, None),
                    "cache": Rate("cache", 5.0, 100 * 1024.0, 0.0)}


def names_in(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:]]


def test_table_sorted_with_total() -> None:
    usages, rates = sample()
    table = stats.as_table(usages, rates, "cpu")
    assert names_in(table) == ["web1", "db", "cache", "TOTAL"]
    header, web1, *_, total = table.splitlines()
    assert header.split() == ["NAME", "CPU%", "MEMORY", "LIMIT", "PEAK", "TASKS", "RX/s", "TX/s"]
    assert web1.split() == ["web1", "150.0%", "100.0", "MiB", "512.0", "MiB", "200.0", "MiB", "20",
                            "3.0", "KiB/s", "512", "B/s"]
    # A limit unknown for one means no total limit; peaks do not add up.
    assert total.split() == ["TOTAL", "175.0%", "450.0", "MiB", "-", "-", "75", "103.0", "KiB/s", "512", "B/s"]
    assert names_in(stats.as_table(usages, rates, "memory"))[:3] == ["db", "web1", "cache"]
    assert names_in(stats.as_table(usages, rates, "rx"))[:3] == ["cache", "web1", "db"]
    assert names_in(stats.as_table(usages, None, "tasks"))[:3] == ["cache", "web1", "db"]
    assert names_in(stats.as_table(usages))[:3] == ["cache", "db", "web1"]


def test_table_of_one_read_shows_totals_since_start() -> None:
    usages, _ = sample()
    header, cache, db, *_ = stats.as_table(usages).splitlines()
    assert header.split() == ["NAME", "CPU", "TIME", "MEMORY", "LIMIT", "PEAK", "TASKS", "RX", "TX"]
    assert db.split()[1] == "5m00s" and db.split()[-2:] == ["-", "-"]
    assert stats.as_table({}).count("\n") == 1  # the header alone


def test_unknown_sort_key() -> None:
    with pytest.raises(ValueError):
        stats.as_table({}, None, "bogus")


def test_json_and_csv_agree() -> None:
    usages, rates = sample()
    records = stats.as_json(usages, rates, "name")
    assert json.loads(json.dumps(records)) == records
    assert records[1] == {"name": "db", "cpu_seconds": 300.0, "memory_bytes": 300 * MiB, "memory_limit_bytes": None,
                          "memory_peak_bytes": 600 * MiB, "tasks": 5, "rx_bytes": None, "tx_bytes": None,
                          "cpu_percent": 20.0, "rx_bytes_per_second": None, "tx_bytes_per_second": None}
    rows = list(csv.DictReader(io.StringIO(stats.as_csv(usages, rates, "name"))))
    assert [row["name"] for row in rows] == ["cache", "db", "web1"]
    assert rows[1]["memory_limit_bytes"] == "" and rows[1]["memory_bytes"] == str(300 * MiB)
    assert "cpu_percent" not in stats.as_csv(usages)


SAMPLE_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{name="((?:[^"\\\n]|\\[\\"n])*)"\} (\S+)$')


def parse_prometheus(text: str) -> dict[tuple[str, str], float]:
    """Samples of a text exposition, checking that each metric has HELP then TYPE first."""
    helped: set[str] = set()
    typed: dict[str, str] = {}
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            metric, kind = line.split()[2:4]
            assert metric in helped and kind in ("counter", "gauge")
            typed[metric] = kind
        else:
            match = SAMPLE_LINE.match(line)
            assert match, line
            metric, label, value = match.groups()
            assert metric in typed, f"{metric} has no TYPE before it"
            assert (typed[metric] == "counter") == metric.endswith("_total")
            name = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), label)
            samples[(metric, name)] = float(value)
    return samples


def test_prometheus_parses_back() -> None:
    usages, _ = sample()
    odd = 'we"b\\1\nx'
    usages[odd] = fake_usage(odd, 1.0, 0.25, rx=1, tx=2)
    text = stats.as_prometheus(usages)
    assert text.endswith("\n")
    samples = parse_prometheus(text)
    assert samples[("lxcforge_container_cpu_seconds_total", "web1")] == 12.0
    assert samples[("lxcforge_container_cpu_seconds_total", odd)] == 0.25
    assert samples[("lxcforge_container_memory_bytes", "db")] == 300 * MiB
    assert samples[("lxcforge_container_network_receive_bytes_total", "cache")] == 10 * MiB
    assert samples[("lxcforge_container_network_transmit_bytes_total", odd)] == 2
    assert ("lxcforge_container_network_receive_bytes_total", "db") not in samples  # unknown: no sample
    assert ("lxcforge_container_memory_limit_bytes", "db") not in samples
    assert r'name="we\"b\\1\nx"' in text
    assert {metric for metric, _ in samples} == {metric for metric, *_ in stats.METRICS}


def test_prometheus_of_nothing_is_empty() -> None:
    assert stats.as_prometheus({}) == ""
