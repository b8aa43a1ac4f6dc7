#!/usr/bin/env python3
"""Time until N containers are running and their addresses answer: lxcforge against LXC 5.0
(--lxc: lxc-copy -s + lxc-start, P at a time) and the 2013 method (btrfs snapshot + virsh
define + virsh start one after another in a shell loop, random MACs, dynamic leases,
addresses read from the lease table), in the same run on the same rootfs.

    sudo .venv/bin/python bench/scale.py --count 300                       # minimal base
    sudo .venv/bin/python bench/scale.py --count 100 --base debian-bookworm  # systemd base
    sudo .venv/bin/python bench/scale.py --count 100 --base debian-bookworm --lxc --skip-2013 \\
        --jobs 4,8,16 --lxc-parallel 2,4,8 --rounds 3 --json scale.json

Figures that travel between hosts: the headline is a ratio measured in this run (LXC's and
the 2013 method's median ready time over lxcforge's, each tool at its best parallelism),
printed with the host's CPU model, cores and kernel and the host's CPU-seconds of each run
(from /proc/stat; steal apart), split by owner: containers' cgroups, libvirtd, libvirt_lxc,
dnsmasq, lxcforge, LXC's tools and monitors, the 2013 loop, this script, the rest (kernel and
other; bench/hostfacts.py says what is and is not counted).

Rounds: --rounds R times over, the tools in alternating order (round 1 lxcforge first,
round 2 LXC first, ...; with three tools each goes first in turn), each tool's settings in
ascending in odd rounds and descending in even ones. Settings: lxcforge's -j from --jobs
(auto = lxcforge's own default, 4 per core within 4-32), LXC's xargs -P from --lxc-parallel;
the best of each is the one with the lowest median ready time among those whose every run
brought all containers up.

Prints a line per run and a summary (min/median/max per tool and setting); --json writes
every raw figure. Not a test. Runs in the store given by --store (default: the configured
store), on isolated networks it creates and removes; the minimal base is built if missing.
Everything it creates is removed at the end, also on Ctrl-C (the runs done so far are still
summarised)."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import hostfacts  # noqa: E402
from lxcforge import config, domain, host, network  # noqa: E402
from lxcforge.ops.bulk import default_jobs  # noqa: E402
from lxcforge.store import exclusive_bytes  # noqa: E402
from lxcforge.virt import Virt  # noqa: E402


def lxcforge(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "lxcforge", *args], capture_output=True, text=True, cwd=REPO)
    if check and result.returncode:
        raise SystemExit(f"lxcforge {' '.join(args)} failed:\n{result.stderr}")
    return result


def free_subnet(prefix: int = 24) -> str:
    subnet = network.free_subnet(host.routed_ipv4_networks(), prefix, random.Random())
    if subnet is None:
        raise SystemExit("no free subnet for a scratch network")
    return subnet


def answering(addresses: list[str], timeout: float) -> int:
    """How many addresses answer a ping (the host sits on the isolated bridge)."""
    def ping(ip: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run(["ping", "-c1", "-W1", "-q", ip], capture_output=True).returncode == 0:
                return True
        return False
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        return sum(pool.map(ping, addresses))


def system_states(names: list[str]) -> dict[str, int]:
    """systemctl is-system-running in each container, once boots have settled: counts."""
    def state(name: str) -> str:
        value = ""
        for _ in range(60):
            value = lxcforge("exec", name, "--", "systemctl", "is-system-running", check=False).stdout.strip()
            if value not in ("starting", "initializing", ""):
                break
            time.sleep(1)
        return value or "unknown"
    counts: dict[str, int] = {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for value in pool.map(state, names):
            counts[value] = counts.get(value, 0) + 1
    return counts


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def destroy_window(owners: bool, owner: str, command: Callable[[], object]) -> tuple[float, dict[str, object]]:
    """A destroy's wall time, and its CPU over a window kept open until libvirt's lease helper
    has worked through the destroy's releases: their CPU is the destroy's, not the next run's."""
    window = hostfacts.Window(owners)
    window.run(owner, command)
    destroyed = window.elapsed()
    hostfacts.wait_lease_helpers()
    return destroyed, window.close()


def run_lxcforge(store: Path, base: str, count: int, nets: list[str], jobs: int | None,
                 static_ip: bool, systemd: bool, unprivileged: bool = False, owners: bool = True) -> dict[str, object]:
    prefix = "lxb-"
    args = ["--store", str(store), "new", "--count", str(count), "--prefix", prefix, "--base", base,
            "--network", ",".join(nets), "--json", "--timeout", "180", "--tune-host"]
    if jobs:
        args += ["-j", str(jobs)]
    if static_ip:
        args += ["--static-ip", "--no-wait"]
    if unprivileged:
        args += ["--unprivileged"]
    before = mem_available()
    cpu: dict[str, object] = {}
    window = hostfacts.Window(owners)
    # User and system apart (reported below), so not window.run().
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        made = lxcforge(*args, check=False)
        created = window.elapsed()
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_user, own_system = cpu_after.ru_utime - cpu_before.ru_utime, cpu_after.ru_stime - cpu_before.ru_stime
        window.charge("lxcforge", own_user + own_system)
        summary: dict[str, Any] = (json.loads(made.stdout) if made.stdout.strip()
                                   else {"created": [], "failed": [made.stderr]})
        addresses = [c["ipv4"] for c in summary["created"]]
        answered = answering(addresses, timeout=120)
        ready = window.elapsed()
        cpu["ready"] = window.close()
        states = system_states([c["name"] for c in summary["created"]]) if systemd else {}
        time.sleep(2)
        per_container_mem = (before - mem_available()) / max(1, len(addresses))
        sizes = [exclusive_bytes(Path(c["path"])) for c in summary["created"][:5]]
        exclusive = [size for size in sizes if size is not None]
    finally:
        destroyed, cpu["destroy"] = destroy_window(
            owners, "lxcforge", lambda: lxcforge("--store", str(store), "destroy", f"{prefix}*", check=False))
    phases = summary.get("phase_p50_ms", {})
    own = sum(v for k, v in phases.items() if k in ("check", "snapshot", "fixups", "address", "define"))
    return {
        "created_s": round(created, 1), "ready_s": round(ready, 1), "addressed": len(addresses),
        "answering": answered, "failed": len(summary.get("failed", [])), "phases_p50_ms": phases,
        "own_overhead_p50_ms": round(own, 1),
        # CPU of the lxcforge process itself (user; system includes the kernel's btrfs snapshot).
        "own_cpu_ms_per_container": {
            "user": round(1000 * own_user / max(1, count), 1),
            "system": round(1000 * own_system / max(1, count), 1)},
        "mem_per_container_mib": round(per_container_mem / 2**20, 1),
        "exclusive_disk_kib": round(sum(exclusive) / max(1, len(exclusive)) / 1024, 1),
        "destroy_s": round(destroyed, 1), "system_states": states,
        "complete": answered == count and not summary.get("failed"), "cpu": cpu,
    }


def run_2013(store: Path, base: str, count: int, net: str, work: Path, systemd: bool,
             owners: bool = True) -> dict[str, object]:
    """The manual method: a shell loop of snapshot, define, start; random MACs; leases."""
    rootfs_dir = work / "manual"
    rootfs_dir.mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", str(store), str(rootfs_dir)], check=True)
    xml_dir = work / "xml"
    xml_dir.mkdir(exist_ok=True)
    macs = {}
    for i in range(1, count + 1):
        name = f"man-{i}"
        mac = "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))
        macs[name] = mac
        spec = domain.ContainerSpec(name=name, uuid=str(uuid.uuid4()), rootfs=store / "containers" / name,
                                    network=net, mac=mac, memory_bytes=512 * 2**20)
        (xml_dir / f"{name}.xml").write_text(domain.domain_xml(spec))
    # No `set -e`: a start that fails is counted as missing, and the loop goes on.
    script = f"""
for i in $(seq 1 {count}); do
    btrfs -q subvolume snapshot {shlex.quote(str(store))}/bases/{base} {shlex.quote(str(store))}/containers/man-$i
    virsh -q -c lxc:/// define {xml_dir}/man-$i.xml >/dev/null
    virsh -q -c lxc:/// start man-$i >/dev/null || echo "man-$i did not start" >&2
done
"""
    destroy = f"""
for i in $(seq 1 {count}); do
    virsh -q -c lxc:/// destroy man-$i >/dev/null 2>&1
    virsh -q -c lxc:/// undefine man-$i >/dev/null 2>&1
    btrfs -q subvolume delete {shlex.quote(str(store))}/containers/man-$i >/dev/null 2>&1
done
"""
    cpu: dict[str, object] = {}
    leased: dict[str, str] = {}
    running: list[str] = []
    try:
        window = hostfacts.Window(owners)
        window.run("2013 loop", lambda: subprocess.run(["bash", "-c", script], check=False))
        launched = window.elapsed()
        wanted = {m.lower() for m in macs.values()}
        deadline = time.monotonic() + 120
        with Virt() as virt:
            while time.monotonic() < deadline:
                leased = {lease.mac: lease.ip for lease in virt.leases(net) if lease.mac in wanted}
                if len(leased) == len(wanted):
                    break
                time.sleep(0.5)
            running = [d.name for d in virt.domains() if d.name in macs and d.state == "running"]
        answered = answering(list(leased.values()), timeout=30)
        ready = window.elapsed()
        cpu["ready"] = window.close()
        states = system_states(running) if systemd else {}
    finally:
        destroyed, cpu["destroy"] = destroy_window(
            owners, "2013 loop", lambda: subprocess.run(["bash", "-c", destroy], check=False))
        subprocess.run(["umount", str(rootfs_dir)], check=False)
    return {"launched_s": round(launched, 1), "ready_s": round(ready, 1), "addressed": len(leased),
            "answering": answered, "missing": count - len(leased), "running": len(running),
            "destroy_s": round(destroyed, 1), "system_states": states, "complete": answered == count, "cpu": cpu}


def _remove_lxc_path(lxcpath: Path) -> None:
    """Every LXC container under lxcpath stopped and destroyed, then the directory: what a run,
    or an earlier one that was interrupted, left there."""
    if not lxcpath.is_dir():
        return
    for entry in sorted(lxcpath.iterdir()):
        if (entry / "config").exists():
            subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", entry.name, "-k"], capture_output=True)
            subprocess.run(["lxc-destroy", "-P", str(lxcpath), "-n", entry.name], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(lxcpath)])


@contextlib.contextmanager
def lxc_template(store: Path, base: str, lxcpath: Path, bridge: str) -> Iterator[None]:
    """LXCPATH/lxcbase: an LXC container on a btrfs snapshot of the base, on bridge, for
    lxc-copy -s to clone; LXCPATH and every container in it removed at the end."""
    _remove_lxc_path(lxcpath)
    template = lxcpath / "lxcbase"
    template.mkdir(parents=True)
    try:
        subprocess.run(["btrfs", "-q", "subvolume", "snapshot", str(store / "bases" / base),
                        str(template / "rootfs")], check=True)
        (template / "config").write_text(
            "lxc.include = /usr/share/lxc/config/common.conf\nlxc.arch = linux64\n"
            f"lxc.rootfs.path = btrfs:{template}/rootfs\nlxc.uts.name = lxcbase\n"
            f"lxc.net.0.type = veth\nlxc.net.0.link = {bridge}\nlxc.net.0.flags = up\n"
            "lxc.net.0.hwaddr = 00:16:3e:xx:xx:xx\nlxc.apparmor.profile = unconfined\n")
        yield
    finally:
        _remove_lxc_path(lxcpath)


def run_lxc(store: Path, base: str, count: int, net: str, bridge: str, systemd: bool,
            jobs: int = 4, owners: bool = True) -> dict[str, object]:
    """LXC 5.0 on the same rootfs: lxc-copy -s (a btrfs snapshot) + lxc-start, JOBS at a time;
    dynamic leases on an lxcforge network with STP off; lxc-stop -k + lxc-destroy."""
    lxcpath = store / "lxc-bench"
    cpu: dict[str, object] = {}
    with lxc_template(store, base, lxcpath, bridge):
        names = [f"lx-{i}" for i in range(1, count + 1)]
        start = (f"seq 1 {count} | xargs -P {jobs} -I{{}} sh -c 'lxc-copy -s -P {lxcpath} -n lxcbase -N lx-{{}} "
                 f"&& lxc-start -P {lxcpath} -n lx-{{}} -d'")
        window = hostfacts.Window(owners)
        window.run("lxc", lambda: subprocess.run(["bash", "-c", start], check=False))
        launched = window.elapsed()
        macs = set()
        for name in names:
            config_file = lxcpath / name / "config"
            if config_file.exists():
                for line in config_file.read_text().splitlines():
                    if line.startswith("lxc.net.0.hwaddr"):
                        macs.add(line.split("=", 1)[1].strip().lower())
        deadline = time.monotonic() + 120
        leased: dict[str, str] = {}
        with Virt() as virt:
            while time.monotonic() < deadline:
                leased = {lease.mac: lease.ip for lease in virt.leases(net) if lease.mac in macs}
                if len(leased) == count:
                    break
                time.sleep(0.5)
        answered = answering(list(leased.values()), timeout=30)
        ready = window.elapsed()
        cpu["ready"] = window.close()
        states: dict[str, int] = {}
        if systemd:
            for name in names:
                out = subprocess.run(["lxc-attach", "-P", str(lxcpath), "-n", name, "--", "systemctl",
                                      "is-system-running"], capture_output=True, text=True).stdout.strip() or "unknown"
                states[out] = states.get(out, 0) + 1
        stop = (f"seq 1 {count} | xargs -P {jobs} -I{{}} sh -c 'lxc-stop -P {lxcpath} -n lx-{{}} -k; "
                f"lxc-destroy -P {lxcpath} -n lx-{{}}' >/dev/null 2>&1")
        destroyed, cpu["destroy"] = destroy_window(
            owners, "lxc", lambda: subprocess.run(["bash", "-c", stop], check=False))
    return {"launched_s": round(launched, 1), "ready_s": round(ready, 1), "addressed": len(leased),
            "answering": answered, "missing": count - len(leased), "destroy_s": round(destroyed, 1),
            "system_states": states, "jobs": jobs, "complete": answered == count, "cpu": cpu}


# -- settings, runs and the summary ---------------------------------------------------------------
TOOL_NAMES = {"lxcforge": "lxcforge", "lxc": "LXC", "2013": "2013 method"}
SERIAL = "serial"  # the 2013 method's only setting: one container after another


def tool_label(tool: str, setting: str) -> str:
    flag = {"lxcforge": "-j", "lxc": "-P"}.get(tool)
    return f"{TOOL_NAMES.get(tool, tool)} {flag} {setting}" if flag else TOOL_NAMES.get(tool, tool)


def lxcforge_settings(text: str, default: int) -> list[str]:
    """--jobs: 'auto' is lxcforge's own default on this host; ascending, without repeats."""
    values = {default if word == "auto" else int(word) for word in hostfacts.parse_settings(text)}
    return [str(v) for v in sorted(values)]


def lxc_settings(text: str) -> list[str]:
    return [str(v) for v in sorted({int(word) for word in hostfacts.parse_settings(text, allow_auto=False)})]


def _window_figure(run: Mapping[str, Any], window: str, key: str) -> float | None:
    figures = run.get("cpu", {}).get(window)
    if not isinstance(figures, Mapping) or key not in figures:
        return None
    return float(figures[key])


def _rounded(figures: Mapping[str, Any], digits: int = 3) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in figures.items()}


def _grouped(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[Mapping[str, Any]]]]:
    """Runs by tool, then setting, in the order first met."""
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for run in runs:
        grouped.setdefault(run["tool"], {}).setdefault(run["setting"], []).append(run)
    return grouped


def summarise(runs: Sequence[Mapping[str, Any]], count: int) -> dict[str, Any]:
    """min/median/max per tool and setting, each tool's best setting, the ratios of the other
    tools to lxcforge at their best settings (of the medians, and per round), and the host's
    CPU-seconds per container by owner at those settings. Pure: runs are the raw records."""
    grouped = _grouped(runs)
    per = max(1, count)
    sweep: dict[str, dict[str, Any]] = {}
    best: dict[str, str | None] = {}
    for tool, settings in grouped.items():
        sweep[tool] = {}
        for setting, done in settings.items():
            host_cpu = [_window_figure(r, "ready", "host_cpu_s") for r in done]
            steal = [_window_figure(r, "ready", "steal_s") for r in done]
            sweep[tool][setting] = {
                "runs": len(done), "complete": sum(1 for r in done if r.get("complete")),
                "ready_s": _rounded(hostfacts.spread([r["ready_s"] for r in done])),
                "destroy_s": _rounded(hostfacts.spread([r["destroy_s"] for r in done])),
                "host_cpu_s_per_container": _rounded(hostfacts.spread([v / per for v in host_cpu if v is not None])),
                "steal_s_per_container": _rounded(hostfacts.spread([v / per for v in steal if v is not None])),
            }
        best[tool] = hostfacts.best_setting({s: [r["ready_s"] for r in done] for s, done in settings.items()},
                                            {s: all(r.get("complete") for r in done) for s, done in settings.items()})
    ratios: dict[str, Any] = {}
    ours = best.get("lxcforge")
    for tool, theirs in best.items():
        if tool == "lxcforge" or ours is None or theirs is None:
            continue
        entry: dict[str, Any] = {"lxcforge": ours, tool: theirs}
        for figure in ("ready_s", "destroy_s"):
            mine = [r[figure] for r in grouped["lxcforge"][ours]]
            other = [r[figure] for r in grouped[tool][theirs]]
            value = hostfacts.ratio(hostfacts.median(other), hostfacts.median(mine))
            entry[figure.replace("_s", "")] = None if value is None else round(value, 3)
            by_round = {r["round"]: r[figure] for r in grouped["lxcforge"][ours]}
            paired = [hostfacts.ratio(r[figure], by_round.get(r["round"])) for r in grouped[tool][theirs]]
            entry[figure.replace("_s", "_per_round")] = _rounded(hostfacts.spread([v for v in paired if v is not None]))
        ratios[tool] = entry
    owners: dict[str, dict[str, float | None]] = {}
    for tool, chosen in best.items():
        if chosen is None:
            continue
        done = grouped[tool][chosen]
        names: list[str] = []
        for run in done:
            names += [n for n in run.get("cpu", {}).get("ready", {}).get("owners", {}) if n not in names]
        owners[tool] = {}
        for name in ["host_cpu_s", "steal_s", *names]:
            values = []
            for run in done:
                window = run.get("cpu", {}).get("ready", {})
                value = window.get(name) if name in ("host_cpu_s", "steal_s") else window.get("owners", {}).get(name)
                if value is not None:
                    values.append(float(value) / per)
            middle = hostfacts.median(values)
            owners[tool][name] = None if middle is None else round(middle, 4)
    summary: dict[str, Any] = {"sweep": sweep, "best": best, "ratios": ratios,
                               "cpu_per_container_at_best": owners}
    # The keys of the single-run document this script printed before rounds and sweeps.
    for tool, suffix in (("2013", ""), ("lxc", "_vs_lxc")):
        if tool in ratios:
            summary[f"ratio_ready{suffix}"] = ratios[tool]["ready"]
            summary[f"ratio_destroy{suffix}"] = ratios[tool]["destroy"]
    return summary


def run_line(run: Mapping[str, Any], count: int) -> str:
    line = (f"round {run['round']}.{run['position']} {tool_label(run['tool'], run['setting'])}: "
            f"ready {run['ready_s']:.1f} s ({run['answering']}/{count} answering), destroy {run['destroy_s']:.1f} s")
    if not run.get("complete"):
        line += " INCOMPLETE"
    for window in ("ready", "destroy"):
        figures = run.get("cpu", {}).get(window)
        if figures:
            line += f"\n    {window + ':':8} {hostfacts.format_split(figures, per=count)}"
    return line


def summary_lines(document: Mapping[str, Any]) -> list[str]:
    summary, count = document["summary"], document["count"]
    facts = document["host"]
    host = f"{facts['cpu_model']}, {facts['cores']} cores, kernel {facts['kernel']}"
    lines = [f"== {count} containers, base {document['base']}, {document['rounds']} round(s), "
             f"{len(document['runs'])} runs{' (interrupted)' if document.get('interrupted') else ''} ==",
             hostfacts.host_line(facts),
             "sweep: ready and destroy median [min-max]; host CPU-s per container in the ready window:"]
    for tool, settings in summary["sweep"].items():
        for setting, figures in settings.items():
            mark = "  <- best" if summary["best"].get(tool) == setting else ""
            ready = hostfacts.fmt_figures(figures["ready_s"])
            destroy = hostfacts.fmt_figures(figures["destroy_s"])
            cpu = hostfacts.fmt_figures(figures["host_cpu_s_per_container"], "", 3)
            lines.append(f"  {tool_label(tool, setting):22} ready {ready:22} destroy {destroy:20} cpu {cpu:20}"
                         f"  {figures['complete']}/{figures['runs']} complete{mark}")
    if summary["ratios"]:
        lines.append(f"headline, measured in this run on {host}:")
    for tool, entry in summary["ratios"].items():
        for figure in ("ready", "destroy"):
            rounds = entry[f"{figure}_per_round"]
            per_round = f"; per round {hostfacts.fmt_figures(rounds, 'x', 2)}" if rounds["n"] else ""
            value = "-" if entry[figure] is None else f"{entry[figure]:.2f}x"
            lines.append(f"  {figure:7} {tool_label(tool, entry[tool])} / {tool_label('lxcforge', entry['lxcforge'])}"
                         f" = {value}{per_round}")
    if summary["cpu_per_container_at_best"]:
        lines.append("host CPU-s per container in the ready window, median at the best settings, by owner:")
    for tool, owners in summary["cpu_per_container_at_best"].items():
        figures = dict(owners)
        busy, steal = figures.pop("host_cpu_s", None), figures.pop("steal_s", None)
        parts = ", ".join(f"{name} {value:.4f}" for name, value in figures.items()
                          if value is not None and (name == "rest" or abs(value) >= 0.0005))
        total = "-" if busy is None else f"{busy:.4f}"
        lines.append(f"  {tool_label(tool, summary['best'][tool])}: host {total} (steal "
                     f"{'-' if steal is None else f'{steal:.4f}'}): {parts}")
    return lines


@contextlib.contextmanager
def lxcforge_network(store: Path, name: str) -> Iterator[str]:
    """An isolated lxcforge network (STP off) for one run, removed after it."""
    lxcforge("--store", str(store), "network", "create", name, "--subnet", free_subnet(21), "--isolated")
    try:
        yield name
    finally:
        lxcforge("--store", str(store), "network", "rm", name, check=False)


@contextlib.contextmanager
def manual_network(name: str) -> Iterator[str]:
    """A network shaped like the 2013 guide's for one run: dynamic leases only, STP on; the
    default range is /24-sized there, here a /21 so that the method is not limited by it."""
    with Virt() as virt:
        virt.define_network(network.network_xml(name, free_subnet(21), isolated=True).replace(
            '<dnsmasq:options>', '<!--').replace('</dnsmasq:options>', '-->').replace('stp="off"', 'stp="on"'))
    try:
        yield name
    finally:
        with Virt() as virt:
            virt.remove_network(name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--base", default="minimal-1", help="base in the store (minimal-1 is built if missing)")
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--jobs", "-j", default="4,auto,16", metavar="J[,J...]",
                        help="lxcforge's -j values to sweep; auto = lxcforge's default here "
                        f"({default_jobs()}) (default: %(default)s)")
    parser.add_argument("--lxc-parallel", default="2,4,8", metavar="P[,P...]",
                        help="LXC's xargs -P values to sweep (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="times over every tool and setting, the order "
                        "alternating (default: %(default)s)")
    parser.add_argument("--static-ip", action="store_true", help="lxcforge with --static-ip (no DHCP at boot)")
    parser.add_argument("--skip-2013", action="store_true")
    parser.add_argument("--lxc", action="store_true", help="also LXC 5.0 (lxc-copy -s + lxc-start, P at a time)")
    parser.add_argument("--unprivileged", action="store_true", help="lxcforge's containers in a user namespace")
    hostfacts.add_output_options(parser, "run")
    return parser


def main(argv: list[str] | None = None) -> int:
    # kill / timeout: unwind through the finally blocks, which remove what the run made.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        jobs = lxcforge_settings(args.jobs, default_jobs())
        lxc_parallel = lxc_settings(args.lxc_parallel)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds < 1 or args.count < 1:
        parser.error("--rounds and --count must be at least 1")
    json_stream = hostfacts.json_to_stdout() if args.json == "-" else None
    out = sys.stderr if json_stream is not None else sys.stdout
    hostfacts.compile_sources(REPO / "lxcforge")
    facts = hostfacts.host_facts()
    print(hostfacts.host_line(facts), file=out, flush=True)
    owners = not args.no_owner_split

    store = args.store or config.load().store
    systemd = not args.base.startswith("minimal")
    lxcforge("--store", str(store), "store", "attach")
    if args.base == "minimal-1" and not (store / "bases" / "minimal-1").exists():
        lxcforge("--store", str(store), "base", "--distro", "minimal", "--release", "1")
    if not (store / "bases" / args.base).exists():
        raise SystemExit(f"error: no base {args.base} in {store}\n"
                         f"hint: build it first (lxcforge --store {store} base --distro debian --release bookworm), "
                         "or pick one from 'lxcforge base list'")
    if args.lxc and shutil.which("lxc-start") is None:
        raise SystemExit("error: --lxc needs LXC 5.0 (lxc-copy, lxc-start)\nhint: apt-get install lxc (Debian) or "
                         "dnf install lxc (Fedora)")
    sweeps: list[tuple[str, Sequence[str]]] = [("lxcforge", jobs)]
    if args.lxc:
        sweeps.append(("lxc", lxc_parallel))
    if not args.skip_2013:
        sweeps.append(("2013", [SERIAL]))
    plan = hostfacts.schedule(sweeps, args.rounds)

    per_network = 1000
    wanted_nets = [f"lxbench{i}" for i in range((args.count + per_network - 1) // per_network)]
    nets: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="lxcforge-bench-"))
    work.chmod(0o711)  # unprivileged containers' roots must pass through to their stores
    runs: list[dict[str, Any]] = []
    interrupted = False
    try:
        for net in wanted_nets:
            lxcforge("--store", str(store), "network", "create", net, "--subnet", free_subnet(21), "--isolated")
            nets.append(net)
        try:
            for round_index, order in enumerate(plan):
                for position, (tool, setting) in enumerate(order, start=1):
                    # The kernel tears the last run's network namespaces down for seconds after
                    # its destroy returned: that CPU would slow whichever tool runs next.
                    idle_wait, idle_busy = hostfacts.wait_idle()
                    # LXC and the 2013 method take dynamic leases that nothing releases: a
                    # network of their own for each run, as before rounds, so the range never
                    # runs out.
                    if tool == "lxcforge":
                        record = run_lxcforge(store, args.base, args.count, nets, int(setting), args.static_ip,
                                              systemd, args.unprivileged, owners)
                    elif tool == "lxc":
                        with lxcforge_network(store, "lxbench-lxc") as lxc_net:
                            record = run_lxc(store, args.base, args.count, lxc_net, f"lxf-{lxc_net}"[:15],
                                             systemd, int(setting), owners)
                    else:
                        with manual_network("lxbench-man") as manual_net:
                            record = run_2013(store, args.base, args.count, manual_net, work, systemd, owners)
                    runs.append({"round": round_index + 1, "position": position, "tool": tool, "setting": setting,
                                 "idle_wait_s": idle_wait, "idle_busy": round(idle_busy, 3), **record})
                    print(run_line(runs[-1], args.count), file=out, flush=True)
        except KeyboardInterrupt:
            interrupted = True
            print("interrupted: removed what the run made; the runs done so far follow", file=out, flush=True)
    finally:
        for net in nets:
            lxcforge("--store", str(store), "network", "rm", net, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)])
    document: dict[str, Any] = {
        "host": facts, "count": args.count, "base": args.base, "rounds": args.rounds,
        "settings": {tool: list(values) for tool, values in sweeps}, "lxcforge_default_jobs": default_jobs(),
        "static_ip": args.static_ip, "unprivileged": args.unprivileged, "interrupted": interrupted,
        "plan": [[list(step) for step in order] for order in plan], "runs": runs,
    }
    document["summary"] = summarise(runs, args.count)
    print("\n".join(summary_lines(document)), file=out, flush=True)
    if json_stream is not None:
        json_stream.write(json.dumps(document, indent=2) + "\n")
        json_stream.flush()
    elif args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"raw figures: {args.json}", file=out)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
