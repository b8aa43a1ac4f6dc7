#!/usr/bin/env python3
"""Where a systemd container's boot CPU goes, per process, under lxcforge (its default,
unprivileged, and --privileged) and LXC 5.0, on the same rootfs.

    sudo .venv/bin/python bench/bootcpu.py --count 10 --base debian-bookworm

Each kind: COUNT containers started 4 at a time, then left until `systemctl
is-system-running --wait` returns in every one; then, per container, the CPU (user + system)
of every process in its pid namespace, by command name, with the CPU of the children each
has reaped (for the container's systemd: every unit process that ran and exited: the
one-shot units and their helpers) apart; the container's own cgroup total (cpuacct) and what
the processes do not account for (work the kernel charged to the group outside any of
them); and the host-side process that keeps each container (libvirt_lxc, LXC's monitor).
Figures are milliseconds per container, the mean over COUNT. Not a test: a study, printed,
and --json for the raw figures. Everything it makes is removed at the end, also on failure.
Run nothing else meanwhile (two cores: contention inflates CPU time)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.churn import free_subnet  # noqa: E402
from bench.hostfacts import host_facts, host_line  # noqa: E402
from bench.scale import lxc_template, lxcforge  # noqa: E402
from lxcforge import config, host  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def _stat(pid: int) -> tuple[str, float, float] | None:
    """(command, own CPU ms, reaped children's CPU ms) of a process."""
    try:
        head, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
    except OSError:
        return None
    fields = rest.split()
    own = (int(fields[11]) + int(fields[12])) * 1000 / TICK
    reaped = (int(fields[13]) + int(fields[14])) * 1000 / TICK
    return head.split("(", 1)[1], own, reaped


def _pid_namespace(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def processes_in(init_pid: int) -> dict[str, float]:
    """ms by command name of every process in init's pid namespace; 'reaped by X' for the
    children each has waited for."""
    namespace = _pid_namespace(init_pid)
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _pid_namespace(int(entry.name)) != namespace:
            continue
        stat = _stat(int(entry.name))
        if stat is None:
            continue
        command, own, reaped = stat
        label = "systemd (init)" if int(entry.name) == init_pid else command
        found[label] = found.get(label, 0.0) + own
        if reaped:
            key = f"exited, reaped by {label}"
            found[key] = found.get(key, 0.0) + reaped
    return found


# The whole host sampled while the containers boot (perf, cpu-clock: no hardware counters
# needed), by command name: what each process, exited ones included, and the kernel's own
# threads used, lxcforge's and libvirt's processes on the host among them.
PERF_HZ = 499


@contextlib.contextmanager
def sampled(path: Path) -> Iterator[Callable[[], None]]:
    """perf record of every CPU until the yielded stop() (or the block's end)."""
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-a", "-F", str(PERF_HZ), "-o", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        if perf.poll() is None:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)

    try:
        time.sleep(0.5)  # perf's own start-up, before the first container
        yield stop
    finally:
        stop()


def by_command(path: Path) -> dict[str, float]:
    """ms of CPU by command name from a perf record (idle left out)."""
    report = subprocess.run(["perf", "report", "-i", str(path), "--stdio", "-n", "--sort", "comm"],
                            capture_output=True, text=True).stdout
    return parse_report(report)


def parse_report(report: str) -> dict[str, float]:
    """`perf report -n --sort comm` lines ('  12.50%   25  systemd') to ms by command."""
    found: dict[str, float] = {}
    for line in report.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0].endswith("%") and words[1].isdigit() and words[2] != "swapper":
            command = " ".join(words[2:])
            found[command] = found.get(command, 0.0) + int(words[1]) * 1000.0 / PERF_HZ
    return found


def cgroup_ms(pattern: str) -> float | None:
    """The cpuacct total of the container's group (cgroup v1 hosts without machined; None
    elsewhere: the row is left out)."""
    groups = sorted(CPUACCT.glob(pattern))
    if not groups:
        return None
    return int((groups[0] / "cpuacct.usage").read_text()) / 1e6


def settle(init_pids: list[int | None]) -> None:
    """Wait until systemd has finished booting in each (is-system-running --wait), entered the
    same cheap way for every tool (nsenter into its init's namespaces), so the waiting costs
    neither tool's own command-line start-up."""
    procs = [subprocess.Popen(["nsenter", "-a", "-t", str(pid), "systemctl", "is-system-running", "--wait"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in init_pids if pid]
    for proc in procs:
        proc.wait(timeout=300)


def one_container(init_pid: int | None, keeper_pid: int | None, group: str) -> dict[str, float]:
    if init_pid is None:
        return {}
    figures = processes_in(init_pid)
    total = cgroup_ms(group)
    if total is not None:
        figures["cgroup total"] = total
        # libvirt_lxc puts itself in its container's group; LXC's monitor stays outside.
        figures["cgroup, in none of its processes"] = total - sum(v for k, v in figures.items() if k != "cgroup total")
    keeper = _stat(keeper_pid) if keeper_pid else None
    if keeper is not None:
        figures[f"host: {keeper[0]}"] = keeper[1]
    return figures


def lxcforge_kind(store: Path, base: str, net: str, count: int, privileged: bool,
                  stop: Callable[[], None]) -> list[dict[str, float]]:
    names = [f"bc{'p' if privileged else 'u'}{i}" for i in range(1, count + 1)]
    made = lxcforge("--store", str(store), "new", *names, "--base", base, "--network", net, "-j", "4",
                    *(["--privileged"] if privileged else []), check=False)
    try:
        if made.returncode:
            raise SystemExit(made.stderr)
        inits = {name: host.lxc_init_pid(name) for name in names}
        settle(list(inits.values()))
        stop()
        keepers = {name: host.lxc_controller_pid(name) for name in names}
        # The group of this run's controller: an earlier container of the same name may have
        # left one (libvirt's groups outlived a frozen kill before lxcforge removed them).
        return [one_container(inits[name], keepers[name], f"machine/lxc-{keepers[name]}-{name}.libvirt-lxc")
                for name in names]
    finally:
        lxcforge("--store", str(store), "destroy", *names, "--missing-ok", check=False)


def _lxc_pid(lxcpath: Path, name: str) -> int | None:
    out = subprocess.run(["lxc-info", "-P", str(lxcpath), "-n", name, "-p", "-H"], capture_output=True, text=True)
    return int(out.stdout.strip()) if out.stdout.strip().isdigit() else None


def _lxc_monitor(name: str) -> int | None:
    """LXC's monitor process of a container ('[lxc monitor] LXCPATH NAME')."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                words = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
                if words[:2] == [b"[lxc", b"monitor]"] and words[-1] == name.encode():
                    return int(entry.name)
    return None


def lxc_kind(store: Path, base: str, bridge: str, count: int, stop: Callable[[], None]) -> list[dict[str, float]]:
    lxcpath = store / "lxc-bootcpu"
    with lxc_template(store, base, lxcpath, bridge):
        names = [f"bc-lx-{i}" for i in range(1, count + 1)]
        start = (f"printf '%s\\n' {' '.join(names)} | xargs -P 4 -I{{}} sh -c 'lxc-copy -s -P {lxcpath} "
                 f"-n lxcbase -N {{}} && lxc-start -P {lxcpath} -n {{}} -d'")
        subprocess.run(["bash", "-c", start], check=True)
        inits = {name: _lxc_pid(lxcpath, name) for name in names}
        settle(list(inits.values()))
        stop()
        return [one_container(inits[name], _lxc_monitor(name), f"lxc.payload.{name}") for name in names]


def mean(runs: list[dict[str, float]]) -> dict[str, float]:
    runs = [run for run in runs if run]  # a container whose init was not found says nothing
    keys = sorted({k for run in runs for k in run})
    return {k: round(sum(run.get(k, 0.0) for run in runs) / max(1, len(runs)), 1) for k in keys}


@contextlib.contextmanager
def network(store: Path) -> Iterator[tuple[str, str]]:
    name = f"lxfb-{os.urandom(2).hex()}"
    made = lxcforge("--store", str(store), "network", "create", name, "--subnet", free_subnet(24), "--isolated",
                    check=False)
    if made.returncode:
        raise SystemExit(made.stderr)
    try:
        bridge = subprocess.run(["virsh", "-c", "lxc:///", "net-info", name], capture_output=True,
                                text=True).stdout
        yield name, next(line.split()[-1] for line in bridge.splitlines() if line.startswith("Bridge"))
    finally:
        lxcforge("--store", str(store), "network", "rm", name, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--base", default="debian-bookworm")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    store = config.load().store
    print(host_line(host_facts()), flush=True)
    kinds: dict[str, dict[str, float]] = {}
    with network(store) as (net, bridge):
        measures: dict[str, Callable[[Callable[[], None]], list[dict[str, float]]]] = {
            "lxcforge (default)": lambda stop: lxcforge_kind(store, args.base, net, args.count, False, stop),
            "lxcforge --privileged": lambda stop: lxcforge_kind(store, args.base, net, args.count, True, stop),
            "LXC 5.0": lambda stop: lxc_kind(store, args.base, bridge, args.count, stop),
        }
        for label, measure in measures.items():
            started = time.monotonic()
            record = Path(f"/var/tmp/lxcforge-bootcpu-{os.getpid()}.perf")
            try:
                with sampled(record) as stop:
                    runs = measure(stop)
                host_wide = {f"host-wide: {k}": round(v / args.count, 1) for k, v in by_command(record).items()}
            finally:
                record.unlink(missing_ok=True)
            kinds[label] = mean(runs) | host_wide
            print(f"{label}: measured in {time.monotonic() - started:.0f} s", flush=True)
    rows = sorted({k for figures in kinds.values() for k in figures},
                  key=lambda k: -max(figures.get(k, 0.0) for figures in kinds.values()))
    labels = list(kinds)
    heading = f"ms per container (mean of {args.count})"
    print(f"{heading:44}" + "".join(f"{label[:22]:>24}" for label in labels))
    for row in rows:
        print(f"{row[:44]:44}" + "".join(f"{kinds[label].get(row, 0.0):>24.1f}" for label in labels))
    if args.json:
        Path(args.json).write_text(json.dumps({"count": args.count, "base": args.base, "kinds": kinds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
