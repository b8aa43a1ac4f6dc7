"""Running containers' CPU, memory, tasks and network use, read from the cgroup filesystem and
/proc in one pass: no libvirt (its LXC driver has no bulk statistics), no subprocesses.

Where the figures are. libvirt's LXC driver gives each container a group named after its
machine name, lxc-<controller pid>-<name>: without systemd-machined
<hierarchy>/machine/lxc-<pid>-<name>.libvirt-lxc (cgroup v1: the same path in the memory,
cpuacct... hierarchies; cgroup v2: once, under the unified root), with machined
machine.slice/machine-lxc\\x2d<pid>\\x2d<name>.scope (systemd's unit name escaping). Each
parent directory is listed once (on v1 in the memory hierarchy only: the cpuacct group has the
same path). A container then costs six small reads on v1 (its task list, memory.stat, usage,
peak, cpuacct.usage and its own /proc/<pid>/net/dev), eight or nine on v2 (pids.current,
cgroup.procs here or in a child group, memory.stat, current, max, peak, cpu.stat, net/dev),
plus a readlink and an lstat. All figures are hierarchical totals except the task list, read in child groups
too when the group has any (the link count says so without a listing).

Stale groups. Groups of stopped containers can outlive them (libvirt leaves them when its
clean-up fails); such a group has no tasks and is skipped, so a restarted container's new group
is the one reported.

Memory is the working set, as `docker stats` and the kubelet count it: usage minus inactive
file cache (reclaimable first when the limit is reached). The peak and the limit are the
kernel's own figures (the peak counts cache too).

Network counters are those of the container's network namespace, as the container sees them
(received = what the container received), summed over its interfaces but lo. They come from
any process of the container but its libvirt_lxc controller, which sits in the container's
group but in the host's namespace."""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from lxcforge.units import human_bytes

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")

# Parents of containers' groups: libvirt's own partition (no machined) and machined's slice.
PARENTS = ("machine", "machine.slice")
_LIBVIRT_GROUP = re.compile(r"lxc-(\d+)-(.+)\.libvirt-lxc")
_MACHINED_SCOPE = re.compile(r"machine-lxc\\x2d(\d+)\\x2d(.+)\.scope")
_UNIT_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
# libvirt stops a machine name at 64 characters (virDomainDriverGenerateMachineName).
MACHINE_NAME_MAX = 64
# cgroup v1 reports "no limit" as the page counter's maximum (9223372036854771712 with 4 KiB pages).
_NO_LIMIT = 1 << 60
# Candidates tried for a process in the container's network namespace (the controller's
# threads can come first in a v1 task list).
_NET_TRIES = 8


@dataclass(frozen=True)
class Usage:
    name: str
    controller_pid: int  # libvirt_lxc's pid: a new one means the container restarted
    cpu_seconds: float
    memory_bytes: int  # working set: usage minus inactive file cache
    memory_limit_bytes: int | None
    memory_peak_bytes: int | None  # None: not kept by this kernel (cgroup v2 before 5.19)
    tasks: int  # threads, the libvirt_lxc controller's included
    rx_bytes: int | None  # None: no process found in a namespace of the container's own
    tx_bytes: int | None
    at: float  # time.monotonic() of the read


@dataclass(frozen=True)
class Rate:
    name: str
    cpu_percent: float  # 100 = one core busy
    rx_bytes_per_second: float | None
    tx_bytes_per_second: float | None


class SortKey(StrEnum):
    NAME = "name"
    CPU = "cpu"
    MEMORY = "memory"
    TASKS = "tasks"
    RX = "rx"
    TX = "tx"


@dataclass(frozen=True)
class Layout:
    unified: bool
    groups: Path  # where the containers' parents are: the unified root, or the v1 memory hierarchy
    cpuacct: Path | None  # v1 only: the hierarchy holding cpuacct (alone or joined with cpu)


def detect_layout(root: Path = CGROUP_ROOT) -> Layout | None:
    """The host's cgroup layout, once per read; None without a cgroup filesystem."""
    if (root / "cgroup.controllers").exists():
        return Layout(unified=True, groups=root, cpuacct=None)
    if not (root / "memory").is_dir():
        return None
    # Split hierarchies (this host), or joined ones with or without systemd's cpuacct link.
    cpuacct = next((root / h for h in ("cpuacct", "cpu,cpuacct") if (root / h).is_dir()), None)
    return Layout(unified=False, groups=root / "memory", cpuacct=cpuacct)


def machine_name(name: str, controller_pid: int) -> str:
    """libvirt's machine name for a privileged LXC domain (virDomainMachineNameAppendValid):
    hostname characters only, runs of '.' and '-' kept as their first, at most 64 characters,
    no trailing '.' or '-'."""
    out = f"lxc-{controller_pid}-"
    skip = True
    for char in name:
        if len(out) >= MACHINE_NAME_MAX:
            break
        if char in ".-":
            if not skip:
                out += char
                skip = True
        elif char.isascii() and char.isalnum():
            out += char
            skip = False
    return out.rstrip(".-")


def parse_group(dirname: str) -> tuple[int, str] | None:
    """(controller pid, machine name after lxc-<pid>-) of a container's group directory."""
    match = _LIBVIRT_GROUP.fullmatch(dirname)
    if match:
        return int(match[1]), match[2]
    match = _MACHINED_SCOPE.fullmatch(dirname)
    if match:
        return int(match[1]), _UNIT_ESCAPE.sub(lambda m: chr(int(m[1], 16)), match[2])
    return None


class _Names:
    """Container names by what libvirt leaves of them in a group's name. That depends on the
    controller pid's length (the 64-character cut), so each length gets its own table; a cut
    shared by two names matches neither."""

    def __init__(self, names: Collection[str] | None) -> None:
        self.names = None if names is None else set(names)
        self.tables: dict[int, dict[str, str | None]] = {}

    def lookup(self, controller_pid: int, tail: str) -> str | None:
        if self.names is None:
            return tail
        prefix = len(f"lxc-{controller_pid}-")
        table = self.tables.get(prefix)
        if table is None:
            table = {}
            for name in self.names:
                cut = machine_name(name, controller_pid)[prefix:]
                table[cut] = None if cut in table else name
            self.tables[prefix] = table
        return table.get(tail)


def read_all(names: Collection[str] | None, root: Path = CGROUP_ROOT, proc: Path = PROC) -> dict[str, Usage]:
    """Usage of every running container named in names (None: every libvirt LXC container,
    under its machine name), in one pass over the cgroup filesystem."""
    layout = detect_layout(root)
    if layout is None:
        return {}
    host_net = _readlink(f"{proc}/self/ns/net")
    wanted = _Names(names)
    found: dict[str, Usage] = {}
    for parent in PARENTS:
        try:
            with os.scandir(layout.groups / parent) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            parsed = parse_group(entry.name)
            if parsed is None:
                continue
            controller, tail = parsed
            name = wanted.lookup(controller, tail)
            if name is None or name in found:
                continue
            reader = _read_v2 if layout.unified else _read_v1
            usage = reader(layout, f"{parent}/{entry.name}", entry, name, controller, str(proc), host_net)
            if usage is not None:
                found[name] = usage
    return found


def _read_v1(layout: Layout, relative: str, entry: os.DirEntry[str], name: str, controller: int, proc: str,
             host_net: str | None) -> Usage | None:
    group = f"{layout.groups}/{relative}"
    ids = _ids(group, "tasks", entry)
    if not ids:
        return None
    stat = _read(f"{group}/memory.stat")
    usage = _int(_read(f"{group}/memory.usage_in_bytes")) or 0
    limit = _field(stat, b"hierarchical_memory_limit")
    cpu_ns = _int(_read(f"{layout.cpuacct}/{relative}/cpuacct.usage")) if layout.cpuacct else None
    at = time.monotonic()
    rx_tx = _network(proc, ids, controller, host_net)
    return Usage(
        name=name, controller_pid=controller, cpu_seconds=(cpu_ns or 0) / 1e9,
        memory_bytes=max(0, usage - (_field(stat, b"total_inactive_file") or 0)),
        memory_limit_bytes=limit if limit is not None and limit < _NO_LIMIT else None,
        memory_peak_bytes=_int(_read(f"{group}/memory.max_usage_in_bytes")),
        tasks=len(ids), rx_bytes=rx_tx[0] if rx_tx else None, tx_bytes=rx_tx[1] if rx_tx else None, at=at,
    )


def _read_v2(layout: Layout, relative: str, entry: os.DirEntry[str], name: str, controller: int, proc: str,
             host_net: str | None) -> Usage | None:
    group = f"{layout.groups}/{relative}"
    tasks = _int(_read(f"{group}/pids.current"))
    candidates: Iterable[int]
    if tasks is None:  # no pids controller here (libvirt's own groups, without machined)
        threads = _ids(group, "cgroup.threads", entry)
        tasks, candidates = len(threads), threads
    else:
        candidates = _procs_v2(group, entry)
    if not tasks:
        return None
    limit = _read(f"{group}/memory.max")
    usage = _int(_read(f"{group}/memory.current")) or 0
    cpu_us = _field(_read(f"{group}/cpu.stat"), b"usage_usec")
    at = time.monotonic()
    rx_tx = _network(proc, candidates, controller, host_net)
    return Usage(
        name=name, controller_pid=controller, cpu_seconds=(cpu_us or 0) / 1e6,
        memory_bytes=max(0, usage - (_field(_read(f"{group}/memory.stat"), b"inactive_file") or 0)),
        memory_limit_bytes=None if limit is None or limit.strip() == b"max" else _int(limit),
        memory_peak_bytes=_int(_read(f"{group}/memory.peak")),
        tasks=tasks, rx_bytes=rx_tx[0] if rx_tx else None, tx_bytes=rx_tx[1] if rx_tx else None, at=at,
    )


def _ids(group: str, filename: str, entry: os.DirEntry[str]) -> list[int]:
    """The ids listed in filename in group and, where it has child groups, in theirs."""
    found = _numbers(_read(f"{group}/{filename}"))
    if _may_have_children(entry):
        for dirpath, _dirnames, _files in os.walk(group):
            if dirpath != group:
                found += _numbers(_read(f"{dirpath}/{filename}"))
    return found


def _procs_v2(group: str, entry: os.DirEntry[str]) -> Iterator[int]:
    """Processes of a v2 group, its own first; child groups are read only if needed."""
    yield from _numbers(_read(f"{group}/cgroup.procs"))
    if _may_have_children(entry):
        for dirpath, _dirnames, _files in os.walk(group):
            if dirpath != group:
                yield from _numbers(_read(f"{dirpath}/cgroup.procs"))


def _may_have_children(entry: os.DirEntry[str]) -> bool:
    # A directory's link count is 2 plus its subdirectories on cgroupfs (kernfs), tmpfs and
    # ext4; btrfs and some others always say 1, so only exactly 2 means none.
    try:
        return entry.stat(follow_symlinks=False).st_nlink != 2
    except OSError:
        return False


def _network(proc: str, candidates: Iterable[int], controller: int, host_net: str | None) -> tuple[int, int] | None:
    """(received, transmitted) bytes in the container's network namespace: that of the first
    candidate not in the host's. Without the right to compare namespaces (not root), the
    controller's threads (lxc-fuse...) are at least told apart by their thread directory."""
    tried = 0
    for pid in candidates:
        if pid == controller:
            continue
        tried += 1
        if tried > _NET_TRIES:
            break
        try:
            link: str | None = os.readlink(f"{proc}/{pid}/ns/net")
        except PermissionError:
            link = None
        except OSError:  # gone meanwhile
            continue
        if link is not None and host_net is not None:
            if link == host_net:
                continue
        elif os.path.exists(f"{proc}/{controller}/task/{pid}"):
            continue
        counters = _read(f"{proc}/{pid}/net/dev")
        if counters is not None:
            return parse_net_dev(counters)
    return None


def parse_net_dev(text: bytes) -> tuple[int, int]:
    """(received, transmitted) bytes of /proc/net/dev, summed over every interface but lo."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        interface, _, counters = line.partition(b":")
        fields = counters.split()
        if interface.strip() == b"lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # Read to the end: kernfs hands out a task list a page at a time.
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _int(data: bytes | None) -> int | None:
    try:
        return int(data) if data is not None else None
    except ValueError:
        return None


def _numbers(data: bytes | None) -> list[int]:
    return [int(word) for word in data.split()] if data else []


def _field(data: bytes | None, key: bytes) -> int | None:
    """The value of 'key value' in a flat-keyed file (memory.stat, cpu.stat)."""
    if data is None:
        return None
    needle = b"\n" + key + b" "
    at = (b"\n" + data).find(needle)
    if at < 0:
        return None
    start = at + len(needle) - 1
    end = data.find(b"\n", start)
    return _int(data[start:end if end >= 0 else None])


def rates(before: Mapping[str, Usage], after: Mapping[str, Usage]) -> dict[str, Rate]:
    """CPU and network rates of containers read twice, over each one's own interval; none for
    a container that restarted in between."""
    found: dict[str, Rate] = {}
    for name, now in after.items():
        then = before.get(name)
        if then is None or then.controller_pid != now.controller_pid or now.at <= then.at:
            continue
        seconds = now.at - then.at
        found[name] = Rate(
            name=name, cpu_percent=max(0.0, now.cpu_seconds - then.cpu_seconds) / seconds * 100,
            rx_bytes_per_second=_per_second(then.rx_bytes, now.rx_bytes, seconds),
            tx_bytes_per_second=_per_second(then.tx_bytes, now.tx_bytes, seconds),
        )
    return found


def _per_second(then: int | None, now: int | None, seconds: float) -> float | None:
    if then is None or now is None or now < then:
        return None
    return (now - then) / seconds


# Formatting: pure functions of what was read.

def ordered(usages: Mapping[str, Usage], rates: Mapping[str, Rate] | None = None,
            sort_by: str = SortKey.NAME) -> list[Usage]:
    """By name, or busiest first by the key (a rate where rates are given, else a total)."""
    key = SortKey(sort_by)
    by_name = sorted(usages.values(), key=lambda u: u.name)
    if key is SortKey.NAME:
        return by_name

    def value(usage: Usage) -> float:
        rate = rates.get(usage.name) if rates is not None else None
        figure: float | None
        if key is SortKey.CPU:
            figure = usage.cpu_seconds if rates is None else rate.cpu_percent if rate else None
        elif key is SortKey.MEMORY:
            figure = usage.memory_bytes
        elif key is SortKey.TASKS:
            figure = usage.tasks
        elif key is SortKey.RX:
            figure = usage.rx_bytes if rates is None else rate.rx_bytes_per_second if rate else None
        else:
            figure = usage.tx_bytes if rates is None else rate.tx_bytes_per_second if rate else None
        return -1.0 if figure is None else float(figure)

    return sorted(by_name, key=value, reverse=True)


def as_table(usages: Mapping[str, Usage], rates: Mapping[str, Rate] | None = None,
             sort_by: str = SortKey.NAME) -> str:
    """Aligned columns with a TOTAL row: CPU %, network per second where rates are given
    (two reads), else CPU time and bytes since start."""
    rows = ordered(usages, rates, sort_by)
    header = ["NAME", "CPU%" if rates is not None else "CPU TIME", "MEMORY", "LIMIT", "PEAK", "TASKS",
              "RX/s" if rates is not None else "RX", "TX/s" if rates is not None else "TX"]
    table = [header]
    for usage in rows:
        table.append(_cells(usage, rates))
    if rows:
        table.append(_total(rows, rates))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in table
    ) + "\n"


def _cells(usage: Usage, rates: Mapping[str, Rate] | None) -> list[str]:
    common = [_size(usage.memory_bytes), _size(usage.memory_limit_bytes), _size(usage.memory_peak_bytes),
              str(usage.tasks)]
    if rates is None:
        return [usage.name, _duration(usage.cpu_seconds), *common, _size(usage.rx_bytes), _size(usage.tx_bytes)]
    rate = rates.get(usage.name)
    return [usage.name, _percent(rate.cpu_percent if rate else None), *common,
            _speed(rate.rx_bytes_per_second if rate else None), _speed(rate.tx_bytes_per_second if rate else None)]


def _total(rows: list[Usage], rates: Mapping[str, Rate] | None) -> list[str]:
    limits = [u.memory_limit_bytes for u in rows]
    # Peaks came at different times: their sum means nothing.
    common = [_size(sum(u.memory_bytes for u in rows)), _size(None if None in limits else _sum(limits)), "-",
              str(sum(u.tasks for u in rows))]
    if rates is None:
        return ["TOTAL", _duration(sum(u.cpu_seconds for u in rows)), *common,
                _size(_sum(u.rx_bytes for u in rows)), _size(_sum(u.tx_bytes for u in rows))]
    known = [rates[u.name] for u in rows if u.name in rates]
    return ["TOTAL", _percent(sum(r.cpu_percent for r in known)), *common,
            _speed(_sum(r.rx_bytes_per_second for r in known)), _speed(_sum(r.tx_bytes_per_second for r in known))]


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _size(value: float | None) -> str:
    return human_bytes(value, missing="-")


def _speed(value: float | None) -> str:
    return "-" if value is None else f"{_size(value)}/s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


FIELDS = ("name", "cpu_seconds", "memory_bytes", "memory_limit_bytes", "memory_peak_bytes", "tasks",
          "rx_bytes", "tx_bytes")
RATE_FIELDS = ("cpu_percent", "rx_bytes_per_second", "tx_bytes_per_second")


def as_json(usages: Mapping[str, Usage], rates: Mapping[str, Rate] | None = None,
            sort_by: str = SortKey.NAME) -> list[dict[str, object]]:
    """One object per container (for json.dumps), with its rates where rates are given."""
    records = []
    for usage in ordered(usages, rates, sort_by):
        record: dict[str, object] = {field: getattr(usage, field) for field in FIELDS}
        record["cpu_seconds"] = round(usage.cpu_seconds, 6)
        if rates is not None:
            rate = rates.get(usage.name)
            record["cpu_percent"] = round(rate.cpu_percent, 3) if rate else None
            record["rx_bytes_per_second"] = _rounded(rate.rx_bytes_per_second if rate else None)
            record["tx_bytes_per_second"] = _rounded(rate.tx_bytes_per_second if rate else None)
        records.append(record)
    return records


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def as_csv(usages: Mapping[str, Usage], rates: Mapping[str, Rate] | None = None,
           sort_by: str = SortKey.NAME) -> str:
    """The JSON records as CSV with a header row; an unknown figure is an empty field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS + (RATE_FIELDS if rates is not None else ()))
    for record in as_json(usages, rates, sort_by):
        writer.writerow(["" if value is None else value for value in record.values()])
    return out.getvalue()


# (name, type, help, figure) of each metric family: Prometheus computes rates itself.
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("lxcforge_container_cpu_seconds_total", "counter", "CPU time used by the container's tasks.", "cpu_seconds"),
    ("lxcforge_container_memory_bytes", "gauge", "Memory in use: usage minus inactive file cache.",
     "memory_bytes"),
    ("lxcforge_container_memory_limit_bytes", "gauge", "Memory limit of the container.", "memory_limit_bytes"),
    ("lxcforge_container_memory_peak_bytes", "gauge", "Highest memory usage, file cache included.",
     "memory_peak_bytes"),
    ("lxcforge_container_tasks", "gauge", "Threads in the container's cgroup.", "tasks"),
    ("lxcforge_container_network_receive_bytes_total", "counter", "Bytes received by the container.",
     "rx_bytes"),
    ("lxcforge_container_network_transmit_bytes_total", "counter", "Bytes sent by the container.", "tx_bytes"),
)


def as_prometheus(usages: Mapping[str, Usage]) -> str:
    """Prometheus text exposition format 0.0.4, for node_exporter's textfile collector: no
    timestamps, and a family only where some container has a figure for it."""
    rows = ordered(usages)
    lines: list[str] = []
    for metric, kind, help_text, field in METRICS:
        samples = [(u.name, getattr(u, field)) for u in rows if getattr(u, field) is not None]
        if not samples:
            continue
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{name="{label_value(name)}"}} {value!r}' for name, value in samples]
    return "".join(line + "\n" for line in lines)


def label_value(value: str) -> str:
    """A label value escaped as the text format wants: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
