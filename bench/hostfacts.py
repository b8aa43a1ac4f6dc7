"""What the bench scripts record so that a figure means something on another host: the host
(CPU model, cores, kernel), the host's CPU-seconds over a measured window from /proc/stat
(busy = user + nice + system + irq + softirq; steal apart: time the hypervisor gave to
others), that CPU split by owner, min/median/max of repeated figures, and the order of
rounds and parallelism sweeps.

CPU by owner over a window, from two samples (before and after):

- containers: the CPU charged to containers' cgroups. libvirt's: the parent groups
  (`machine`, `machine.slice`) in the cpuacct hierarchy (cgroup v1) or their cpu.stat
  (v2); a parent's counter is hierarchical and keeps what removed children used, so
  containers destroyed inside the window count too. LXC's: each `lxc.payload.NAME` group (and
  `lxc/NAME`, older LXC) at the hierarchy's root; those have no common parent, so what a
  group used between the first sample and its removal is lost (counted in `groups_gone`).
  libvirt's per-container controller (libvirt_lxc) moves itself into its container's group
  once it has set it up: what it uses after that is in both `containers` and `libvirt_lxc`.
- libvirtd (also virtlxcd, virtnetworkd), dnsmasq: the processes' own utime + stime, plus
  the children they waited for (cutime + cstime: libvirtd's ip/iptables helpers, dnsmasq's
  lease helper). libvirt_lxc and LXC's monitors (`lxc-start`): own time only (the children
  they reap are the containers' inits, already in `containers`). A process that exits inside
  the window (libvirt_lxc of a destroyed container, an LXC monitor at lxc-stop) loses what it
  used since the first sample: its parent is init, whose children time would also hold the
  containers' own. Such exits are counted in `exited`; their time falls into `rest`.
- the compared tool (lxcforge, lxc, the 2013 loop): what the bench charges to it, the CPU of
  the commands it ran and waited for (their whole process trees, from this process's
  children times).
- bench: this process, and its other children (ping).
- rest: busy minus all the above: the kernel's work outside any container (softirq, btrfs
  workers, cgroup teardown), other processes, and the exits above.

Pure functions take text; the readers around them read /proc and /sys."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

from lxcforge import stats, timeline

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
HZ = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

# Process owners by the process's name (comm, 15 characters at most).
PROCESS_OWNERS = {
    "libvirtd": "libvirtd", "virtlxcd": "libvirtd", "virtnetworkd": "libvirtd",
    "libvirt_lxc": "libvirt_lxc",
    "dnsmasq": "dnsmasq",
    "lxc-start": "lxc", "lxc-monitord": "lxc",
}
# Owners whose waited-for children are counted with them (see above).
WITH_CHILDREN = frozenset({"libvirtd", "dnsmasq"})
OWNERS = ("containers", "libvirtd", "libvirt_lxc", "dnsmasq", "lxc")
# libvirt's parents of containers' groups (no machined, machined), as lxcforge.stats finds them.
LIBVIRT_PARENTS = stats.PARENTS
LXC_PAYLOAD_PREFIX = "lxc.payload."


# -- the host ------------------------------------------------------------------------------------
def compile_sources(package: Path) -> None:
    """Byte-compile lxcforge before it is timed, as an installed copy is: with
    PYTHONDONTWRITEBYTECODE set (or a fresh clone) every command would otherwise compile
    its modules again, ~50-100 ms on each command measured."""
    import compileall

    compileall.compile_dir(str(package), quiet=1)


def host_facts() -> dict[str, object]:
    """CPU model, cores, kernel, memory: printed with every figure."""
    facts = timeline.host_facts()
    return {"cpu_model": facts.cpu_model, "cores": facts.cores, "kernel": os.uname().release,
            "mem_total_bytes": facts.mem_total_bytes, "clock_ticks": HZ}


def cpu_model() -> str:
    return timeline.host_facts().cpu_model


def host_line(facts: Mapping[str, object] | None = None) -> str:
    facts = facts if facts is not None else host_facts()
    memory = int(str(facts.get("mem_total_bytes") or 0)) / 2**30
    return f"host: {facts['cpu_model']}, {facts['cores']} cores, kernel {facts['kernel']}, {memory:.0f} GiB"


def json_to_stdout() -> TextIO:
    """For --json on standard output: a stream on the real standard output for the JSON
    document alone, and file descriptor 1 (this process's prints and every child's output)
    sent to standard error from now on."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return stream


# -- /proc/stat and /proc/PID/stat ---------------------------------------------------------------
@dataclass(frozen=True)
class CpuTimes:
    """The host's CPU time since boot, all CPUs, in seconds."""
    busy: float  # user + nice + system + irq + softirq (guest time is inside user already)
    steal: float
    idle: float  # idle + iowait


def parse_proc_stat(text: str, hz: int = HZ) -> CpuTimes:
    """The aggregate "cpu" line of /proc/stat (proc(5)): user nice system idle iowait irq
    softirq steal guest guest_nice, in clock ticks; older kernels stop earlier."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(v) for v in fields[1:]] + [0] * 10
            user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
            return CpuTimes(busy=(user + nice + system + irq + softirq) / hz, steal=steal / hz,
                            idle=(idle + iowait) / hz)
    raise ValueError("no aggregate cpu line in /proc/stat")


def read_cpu_times(proc: Path = PROC) -> CpuTimes:
    return parse_proc_stat((proc / "stat").read_text())


@dataclass(frozen=True)
class ProcStat:
    """Fields of /proc/PID/stat; times in clock ticks."""
    pid: int
    comm: str
    ppid: int
    utime: int
    stime: int
    cutime: int  # children waited for
    cstime: int
    starttime: int  # ticks after boot: with pid, names the process (pids are reused)


def parse_pid_stat(text: str) -> ProcStat:
    """comm sits in parentheses and may hold spaces and parentheses itself: the fields
    after it start after the last ')'."""
    head, _, tail = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = tail.split()
    if len(fields) < 20:
        raise ValueError(f"short /proc/PID/stat: {text[:80]!r}")
    # fields[0] is field 3 (state) of proc(5): ppid 4, utime 14, stime 15, cutime 16,
    # cstime 17, starttime 22.
    return ProcStat(pid=int(pid), comm=comm, ppid=int(fields[1]), utime=int(fields[11]), stime=int(fields[12]),
                    cutime=int(fields[13]), cstime=int(fields[14]), starttime=int(fields[19]))


def owner_of(comm: str) -> str | None:
    if comm in PROCESS_OWNERS:
        return PROCESS_OWNERS[comm]
    if comm.startswith("[lxc monitor"):  # should LXC's process title ever reach comm
        return "lxc"
    return None


def parse_cpu_stat_usage(text: str) -> float | None:
    """usage_usec of a cgroup v2 cpu.stat, in seconds."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    return None


# -- samples -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    owner: str
    seconds: float  # utime + stime
    children_seconds: float  # cutime + cstime


@dataclass
class Sample:
    at: float  # time.monotonic()
    cpu: CpuTimes
    procs: dict[tuple[int, int], Proc] = field(default_factory=dict)  # by (pid, starttime)
    groups: dict[str, float] = field(default_factory=dict)  # containers' cgroups: CPU-seconds by path
    own: float = 0.0  # this process: user + system
    children: float = 0.0  # its waited-for children: user + system


def read_procs(proc: Path = PROC) -> dict[tuple[int, int], Proc]:
    """The processes of the owners above, one read of /proc/PID/stat each."""
    found: dict[tuple[int, int], Proc] = {}
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:  # gone meanwhile
            continue
        # comm first: most processes are no one's here, and need no further parsing.
        start, end = raw.find(b"("), raw.rfind(b")")
        owner = owner_of(raw[start + 1:end].decode(errors="replace"))
        if owner is None:
            continue
        try:
            parsed = parse_pid_stat(raw.decode(errors="replace"))
        except ValueError:
            continue
        found[(parsed.pid, parsed.starttime)] = Proc(owner, (parsed.utime + parsed.stime) / HZ,
                                                     (parsed.cutime + parsed.cstime) / HZ)
    return found


def read_container_groups(root: Path = CGROUP_ROOT) -> dict[str, float]:
    """CPU-seconds of libvirt's parent groups of containers and of each LXC container's group,
    by path; empty without a cgroup filesystem or cpuacct."""
    layout = stats.detect_layout(root)
    if layout is None:
        return {}
    hierarchy = layout.groups if layout.unified else layout.cpuacct
    if hierarchy is None:
        return {}
    found: dict[str, float] = {}
    candidates = [hierarchy / parent for parent in LIBVIRT_PARENTS]
    try:
        with os.scandir(hierarchy) as listing:
            top = [Path(e.path) for e in listing if e.is_dir(follow_symlinks=False)]
    except OSError:
        top = []
    candidates += [p for p in top if p.name.startswith(LXC_PAYLOAD_PREFIX)]
    older = hierarchy / "lxc"  # LXC 1-3: lxc/NAME
    if older.is_dir():
        candidates += sorted(p for p in older.iterdir() if p.is_dir())
    for group in candidates:
        seconds = _group_seconds(group, layout.unified)
        if seconds is not None:
            found[str(group)] = seconds
    return found


def _group_seconds(group: Path, unified: bool) -> float | None:
    try:
        if unified:
            return parse_cpu_stat_usage((group / "cpu.stat").read_text())
        return int((group / "cpuacct.usage").read_text()) / 1e9
    except (OSError, ValueError):
        return None


def _self_times() -> tuple[float, float]:
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def children_seconds() -> float:
    """CPU of this process's children it has waited for, so far (user + system)."""
    return _self_times()[1]


# libvirt's lease helper as its comm shows it (cut to 15 characters).
LEASE_HELPER = "libvirt_leasesh"


def lease_helper_running(proc: Path = PROC) -> bool:
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == LEASE_HELPER:
                    return True
            except OSError:
                continue
    return False


def wait_lease_helpers(timeout: float = 120.0, quiet: float = 0.5, proc: Path = PROC) -> float:
    """Wait until dnsmasq has run libvirt's lease helper for every lease event it queued (none
    running for `quiet` seconds); the seconds waited. dnsmasq runs it once per event, one at a
    time, and each run parses the network's whole lease file: a destroy's releases (or a
    thousand new leases) keep it busy after the command has returned, CPU that would otherwise
    be charged to whatever is measured next."""
    started = time.monotonic()
    quiet_since = started
    while time.monotonic() - started < timeout:
        if lease_helper_running(proc):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            break
        time.sleep(0.05)
    return time.monotonic() - started


def busy_fraction(before: CpuTimes, after: CpuTimes) -> float:
    """The share of the host's CPU time (all cores) that was busy between two readings."""
    busy = after.busy - before.busy
    total = busy + (after.idle - before.idle) + (after.steal - before.steal)
    return busy / total if total > 0 else 0.0


def wait_idle(max_busy: float = 0.2, window: float = 1.0, timeout: float = 120.0,
              read: Callable[[], CpuTimes] = read_cpu_times, sleep: Callable[[float], None] = time.sleep
              ) -> tuple[float, float]:
    """Wait until the host's CPU was busy at most max_busy of a whole window (all cores):
    after a thousand containers go, the kernel tears their network namespaces down in its
    workers for tens of seconds, CPU that would slow whatever is measured next. Returns the
    seconds waited and the last window's busy share."""
    waited = 0.0
    before = read()
    while True:
        sleep(window)
        waited += window
        after = read()
        share = busy_fraction(before, after)
        if share <= max_busy or waited >= timeout:
            return waited, share
        before = after


def take_sample(owners: bool = True, cpu_first: bool = False) -> Sample:
    """A window's edge. The host's counters are read last at its start and first at its end,
    so that reading processes and groups (tens of ms with thousands of containers) stays
    outside the window."""
    def counters() -> Sample:
        at, cpu, (own, children) = time.monotonic(), read_cpu_times(), _self_times()
        return Sample(at=at, cpu=cpu, own=own, children=children)

    sample = counters() if cpu_first else None
    procs = read_procs() if owners else {}
    groups = read_container_groups() if owners else {}
    sample = sample or counters()
    sample.procs, sample.groups = procs, groups
    return sample


def split(before: Sample, after: Sample, charged: Mapping[str, float] | None = None) -> dict[str, object]:
    """The host's CPU-seconds between two samples, by owner (module docstring); charged:
    CPU-seconds of waited-for commands by owner, already inside this process's children."""
    charged = dict(charged or {})
    owners: dict[str, float] = {name: 0.0 for name in OWNERS}
    for key, now in after.procs.items():
        then = before.procs.get(key)
        used = now.seconds - (then.seconds if then is not None else 0.0)
        if now.owner in WITH_CHILDREN:
            used += now.children_seconds - (then.children_seconds if then is not None else 0.0)
        owners[now.owner] = owners.get(now.owner, 0.0) + max(0.0, used)
    exited: dict[str, int] = {}
    for key, then in before.procs.items():
        if key not in after.procs:
            exited[then.owner] = exited.get(then.owner, 0) + 1
    groups_gone = sum(1 for group in before.groups if group not in after.groups)
    for group, now_seconds in after.groups.items():
        then_seconds = before.groups.get(group, 0.0)
        # Less than before: the same name, a new group (a container made again).
        owners["containers"] += now_seconds - then_seconds if now_seconds >= then_seconds else now_seconds
    for name, seconds in charged.items():
        owners[name] = owners.get(name, 0.0) + seconds
    children = after.children - before.children
    owners["bench"] = (after.own - before.own) + max(0.0, children - sum(charged.values()))
    busy = after.cpu.busy - before.cpu.busy
    owners["rest"] = busy - sum(owners.values())
    return {
        "seconds": round(after.at - before.at, 3),
        "host_cpu_s": round(busy, 3),
        "steal_s": round(after.cpu.steal - before.cpu.steal, 3),
        "idle_s": round(after.cpu.idle - before.cpu.idle, 3),
        "owners": {name: round(value, 3) for name, value in owners.items()},
        "exited": exited,
        "groups_gone": groups_gone,
    }


class Window:
    """A measured window: opened at construction, closed by close(); run() a command of an
    owner in it (or charge() its CPU) so that its exited processes count as that owner's."""

    def __init__(self, owners: bool = True) -> None:
        self.owners = owners
        self.charged: dict[str, float] = {}
        self.before = take_sample(owners)

    def charge(self, owner: str, seconds: float) -> None:
        self.charged[owner] = self.charged.get(owner, 0.0) + seconds

    def run(self, owner: str, command: Callable[[], T]) -> T:
        """command(), the CPU of the children it waited for charged to owner."""
        before = children_seconds()
        try:
            return command()
        finally:
            self.charge(owner, children_seconds() - before)

    def elapsed(self) -> float:
        """Wall seconds since the window opened."""
        return time.monotonic() - self.before.at

    def close(self) -> dict[str, object]:
        return split(self.before, take_sample(self.owners, cpu_first=True), self.charged)


def add_output_options(parser: argparse.ArgumentParser, measured: str) -> None:
    """--json [FILE] and --no-owner-split, as every bench script takes them."""
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                        help="write every raw figure as JSON to FILE (no FILE or '-': standard output, and "
                        "everything else to standard error)")
    parser.add_argument("--no-owner-split", action="store_true",
                        help=f"host CPU-s only: do not read /proc and the containers' cgroups around each {measured}")


def format_split(window: Mapping[str, object], per: int = 1) -> str:
    """'host 30.5 CPU-s (steal 0.2) in 16.2 s; per container 0.305: containers 0.25, ...'."""
    owners = window.get("owners")
    busy = float(str(window["host_cpu_s"]))
    line = (f"host {busy:.2f} CPU-s (steal {float(str(window['steal_s'])):.2f}) in "
            f"{float(str(window['seconds'])):.1f} s")
    if not isinstance(owners, Mapping):
        return line
    label = f"per container ({per})" if per > 1 else "by owner"
    parts = [f"{name} {float(value) / max(1, per):.3f}" for name, value in owners.items()
             if name == "rest" or abs(float(value)) >= 0.0005]
    line += f"; {label}: " + ", ".join(parts)
    exited = window.get("exited")
    if isinstance(exited, Mapping) and exited:
        line += " [exited in window, partly in rest: " + ", ".join(f"{n} {k}" for k, n in exited.items()) + "]"
    return line


# -- repeated figures ----------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, min, median, max (median as lxcforge's summaries compute percentiles)."""
    known = [v for v in values if v is not None]
    return {"n": len(known), "min": min(known) if known else None,
            "median": timeline.percentile(known, 50), "max": max(known) if known else None}


def median(values: Sequence[float]) -> float | None:
    return timeline.percentile([v for v in values if v is not None], 50)


def fmt_spread(values: Sequence[float], unit: str = "s", digits: int = 1) -> str:
    """'16.2 s [15.3-17.9]': median, then min-max; one value alone; '-' for none."""
    return fmt_figures(spread(values), unit, digits)


def fmt_figures(figures: Mapping[str, float | int | None], unit: str = "s", digits: int = 1) -> str:
    """fmt_spread of figures spread() already made."""
    if not figures.get("n"):
        return "-"
    med, low, high = (float(str(figures[k])) for k in ("median", "min", "max"))
    text = f"{med:.{digits}f}{unit if unit == 'x' else ' ' + unit if unit else ''}"
    if figures["n"] == 1:
        return text
    return f"{text} [{low:.{digits}f}-{high:.{digits}f}]"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


# -- rounds and sweeps ---------------------------------------------------------------------------


def parse_settings(text: str, allow_auto: bool = True) -> list[str]:
    """'auto,4,16' -> ['auto', '4', '16']: positive integers (and 'auto': the tool's own
    default), in the order given, without repeats."""
    found: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        if word == "auto" and allow_auto:
            pass
        elif not word.isdigit() or int(word) < 1:
            raise ValueError(f"{word!r}: expected a positive integer{' or auto' if allow_auto else ''}")
        else:
            word = str(int(word))
        if word not in found:
            found.append(word)
    if not found:
        raise ValueError("no values given")
    return found


def round_order(items: Sequence[T], round_index: int) -> list[T]:
    """The items rotated by the round (0-based): each goes first in turn; for two, the order
    alternates (a b, b a, a b...)."""
    if not items:
        return []
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def schedule(sweeps: Sequence[tuple[str, Sequence[str]]], rounds: int) -> list[list[tuple[str, str]]]:
    """Per round, the (tool, setting) runs in order: tools in round_order, each tool's
    settings as given in even rounds and reversed in odd ones, so that no tool and no setting
    always runs first or last while the host drifts."""
    plan: list[list[tuple[str, str]]] = []
    for index in range(rounds):
        runs: list[tuple[str, str]] = []
        for tool, settings in round_order(list(sweeps), index):
            ordered = list(settings) if index % 2 == 0 else list(reversed(settings))
            runs += [(tool, setting) for setting in ordered]
        plan.append(runs)
    return plan


def best_setting(figures: Mapping[str, Sequence[float]], complete: Mapping[str, bool] | None = None) -> str | None:
    """The setting with the lowest median; settings whose every run was complete (all
    containers up) come first when there are any; a tie goes to the one listed first."""
    complete = complete or {}
    candidates = [s for s, values in figures.items() if values and complete.get(s, True)]
    if not candidates:
        candidates = [s for s, values in figures.items() if values]
    best: str | None = None
    best_median = float("inf")
    for setting in candidates:
        value = median(figures[setting])
        if value is not None and value < best_median:
            best, best_median = setting, value
    return best
