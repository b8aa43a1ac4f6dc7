#!/usr/bin/env python3
"""Time until N containers are running and their addresses answer: lxcforge against the
2013 method (btrfs snapshot + virsh define + virsh start one after another in a shell loop,
random MACs, dynamic leases, addresses read from the lease table), in the same run.

    sudo .venv/bin/python bench/scale.py --count 300                       # minimal base
    sudo .venv/bin/python bench/scale.py --count 100 --base debian-bookworm  # systemd base

Prints figures and ratios; not a test. Runs in the store given by --store (default: the
configured store), on isolated networks it creates and removes; the minimal base is built
if missing. Everything it creates is removed at the end."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lxcforge import config, domain, host, network  # noqa: E402
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


def run_lxcforge(store: Path, base: str, count: int, nets: list[str], jobs: int | None,
                 static_ip: bool, systemd: bool, unprivileged: bool = False) -> dict[str, object]:
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
    started = time.monotonic()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        made = lxcforge(*args, check=False)
        created = time.monotonic() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = json.loads(made.stdout) if made.stdout.strip() else {"created": [], "failed": [made.stderr]}
        addresses = [c["ipv4"] for c in summary["created"]]
        answered = answering(addresses, timeout=120)
        ready = time.monotonic() - started
        states = system_states([c["name"] for c in summary["created"]]) if systemd else {}
        time.sleep(2)
        per_container_mem = (before - mem_available()) / max(1, len(addresses))
        sizes = [exclusive_bytes(Path(c["path"])) for c in summary["created"][:5]]
        exclusive = [size for size in sizes if size is not None]
    finally:
        started = time.monotonic()
        lxcforge("--store", str(store), "destroy", f"{prefix}*", check=False)
        destroyed = time.monotonic() - started
    phases = summary.get("phase_p50_ms", {})
    own = sum(v for k, v in phases.items() if k in ("check", "snapshot", "fixups", "address", "define"))
    return {
        "created_s": round(created, 1), "ready_s": round(ready, 1), "addressed": len(addresses),
        "answering": answered, "failed": len(summary.get("failed", [])), "phases_p50_ms": phases,
        "own_overhead_p50_ms": round(own, 1),
        # CPU of the lxcforge process itself (user; system includes the kernel's btrfs snapshot).
        "own_cpu_ms_per_container": {
            "user": round(1000 * (cpu_after.ru_utime - cpu_before.ru_utime) / max(1, count), 1),
            "system": round(1000 * (cpu_after.ru_stime - cpu_before.ru_stime) / max(1, count), 1)},
        "mem_per_container_mib": round(per_container_mem / 2**20, 1),
        "exclusive_disk_kib": round(sum(exclusive) / max(1, len(exclusive)) / 1024, 1),
        "destroy_s": round(destroyed, 1), "system_states": states,
    }


def run_2013(store: Path, base: str, count: int, net: str, work: Path, systemd: bool) -> dict[str, object]:
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
    try:
        started = time.monotonic()
        subprocess.run(["bash", "-c", script], check=False)
        launched = time.monotonic() - started
        wanted = {m.lower() for m in macs.values()}
        deadline = time.monotonic() + 120
        leased: dict[str, str] = {}
        with Virt() as virt:
            while time.monotonic() < deadline:
                leased = {lease.mac: lease.ip for lease in virt.leases(net) if lease.mac in wanted}
                if len(leased) == len(wanted):
                    break
                time.sleep(0.5)
            running = [d.name for d in virt.domains() if d.name in macs and d.state == "running"]
        answered = answering(list(leased.values()), timeout=30)
        ready = time.monotonic() - started
        states = system_states(running) if systemd else {}
    finally:
        started = time.monotonic()
        subprocess.run(["bash", "-c", destroy], check=False)
        destroyed = time.monotonic() - started
        subprocess.run(["umount", str(rootfs_dir)], check=False)
    return {"launched_s": round(launched, 1), "ready_s": round(ready, 1), "addressed": len(leased),
            "answering": answered, "missing": count - len(leased), "running": len(running),
            "destroy_s": round(destroyed, 1), "system_states": states}


def run_lxc(store: Path, base: str, count: int, net: str, bridge: str, systemd: bool,
            jobs: int = 4) -> dict[str, object]:
    """LXC 5.0 on the same rootfs: lxc-copy -s (a btrfs snapshot) + lxc-start, JOBS at a time;
    dynamic leases on an lxcforge network with STP off; lxc-stop -k + lxc-destroy."""
    lxcpath = store / "lxc-bench"
    template = lxcpath / "lxcbase"
    template.mkdir(parents=True)
    subprocess.run(["btrfs", "-q", "subvolume", "snapshot", str(store / "bases" / base), str(template / "rootfs")],
                   check=True)
    (template / "config").write_text(
        "lxc.include = /usr/share/lxc/config/common.conf\nlxc.arch = linux64\n"
        f"lxc.rootfs.path = btrfs:{template}/rootfs\nlxc.uts.name = lxcbase\n"
        f"lxc.net.0.type = veth\nlxc.net.0.link = {bridge}\nlxc.net.0.flags = up\n"
        "lxc.net.0.hwaddr = 00:16:3e:xx:xx:xx\nlxc.apparmor.profile = unconfined\n")
    names = [f"lx-{i}" for i in range(1, count + 1)]
    start = (f"seq 1 {count} | xargs -P {jobs} -I{{}} sh -c 'lxc-copy -s -P {lxcpath} -n lxcbase -N lx-{{}} "
             f"&& lxc-start -P {lxcpath} -n lx-{{}} -d'")
    started = time.monotonic()
    subprocess.run(["bash", "-c", start], check=False)
    launched = time.monotonic() - started
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
    ready = time.monotonic() - started
    states: dict[str, int] = {}
    if systemd:
        for name in names:
            out = subprocess.run(["lxc-attach", "-P", str(lxcpath), "-n", name, "--", "systemctl",
                                  "is-system-running"], capture_output=True, text=True).stdout.strip() or "unknown"
            states[out] = states.get(out, 0) + 1
    stop = (f"seq 1 {count} | xargs -P {jobs} -I{{}} sh -c 'lxc-stop -P {lxcpath} -n lx-{{}} -k; "
            f"lxc-destroy -P {lxcpath} -n lx-{{}}' >/dev/null 2>&1")
    started = time.monotonic()
    subprocess.run(["bash", "-c", stop], check=False)
    destroyed = time.monotonic() - started
    subprocess.run(["lxc-destroy", "-P", str(lxcpath), "-n", "lxcbase"], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(lxcpath)])
    return {"launched_s": round(launched, 1), "ready_s": round(ready, 1), "addressed": len(leased),
            "answering": answered, "missing": count - len(leased), "destroy_s": round(destroyed, 1),
            "system_states": states, "jobs": jobs}


def main() -> int:
    # kill / timeout: unwind through the finally blocks, which remove what the run made.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--base", default="minimal-1", help="base in the store (minimal-1 is built if missing)")
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--jobs", "-j", type=int, default=None)
    parser.add_argument("--static-ip", action="store_true", help="lxcforge with --static-ip (no DHCP at boot)")
    parser.add_argument("--skip-2013", action="store_true")
    parser.add_argument("--lxc", action="store_true", help="also LXC 5.0 (lxc-copy -s + lxc-start, 4 at a time)")
    parser.add_argument("--unprivileged", action="store_true", help="lxcforge's containers in a user namespace")
    args = parser.parse_args()

    store = args.store or config.load().store
    systemd = not args.base.startswith("minimal")
    lxcforge("--store", str(store), "store", "attach")
    if args.base == "minimal-1" and not (store / "bases" / "minimal-1").exists():
        lxcforge("--store", str(store), "base", "--distro", "minimal", "--release", "1")
    per_network = 1000
    nets = [f"lxbench{i}" for i in range((args.count + per_network - 1) // per_network)]
    for net in nets:
        lxcforge("--store", str(store), "network", "create", net, "--subnet", free_subnet(21), "--isolated")
    manual_net = "lxbench-man"
    work = Path(tempfile.mkdtemp(prefix="lxcforge-bench-"))
    try:
        result: dict[str, object] = {"count": args.count, "base": args.base, "cores": os.cpu_count(),
                                     "lxcforge": run_lxcforge(store, args.base, args.count, nets, args.jobs,
                                                              args.static_ip, systemd, args.unprivileged)}
        if not args.skip_2013:
            # Dynamic leases only, like the 2013 guide's network; the default range is /24-sized
            # there, here a /21 so that the method is not limited by the range.
            with Virt() as virt:
                virt.define_network(network.network_xml(manual_net, free_subnet(21), isolated=True).replace(
                    '<dnsmasq:options>', '<!--').replace('</dnsmasq:options>', '-->').replace(
                    'stp="off"', 'stp="on"'))
            try:
                result["manual_2013"] = run_2013(store, args.base, args.count, manual_net, work, systemd)
            finally:
                with Virt() as virt:
                    virt.remove_network(manual_net)
            ours, theirs = result["lxcforge"], result["manual_2013"]
            assert isinstance(ours, dict) and isinstance(theirs, dict)
            result["ratio_ready"] = round(float(theirs["ready_s"]) / max(0.1, float(ours["ready_s"])), 2)
            result["ratio_destroy"] = round(float(theirs["destroy_s"]) / max(0.1, float(ours["destroy_s"])), 2)
        if args.lxc:
            lxc_net = "lxbench-lxc"
            lxcforge("--store", str(store), "network", "create", lxc_net, "--subnet", free_subnet(21), "--isolated")
            try:
                result["lxc"] = run_lxc(store, args.base, args.count, lxc_net, f"lxf-{lxc_net}"[:15], systemd)
            finally:
                lxcforge("--store", str(store), "network", "rm", lxc_net, check=False)
            lxc = result["lxc"]
            ours = result["lxcforge"]
            assert isinstance(lxc, dict) and isinstance(ours, dict)
            result["ratio_ready_vs_lxc"] = round(float(lxc["ready_s"]) / max(0.1, float(ours["ready_s"])), 2)
            result["ratio_destroy_vs_lxc"] = round(float(lxc["destroy_s"]) / max(0.1, float(ours["destroy_s"])), 2)
    finally:
        for net in nets:
            lxcforge("--store", str(store), "network", "rm", net, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
