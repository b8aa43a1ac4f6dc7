#!/usr/bin/env python3
"""Create/destroy churn: CYCLES rounds of creating and destroying BATCH containers, then a
check that nothing leaked: subvolume, domain, DHCP reservation, dnsmasq lease, hosts-dir
file, veth, lock file, cgroup, mount.

    sudo .venv/bin/python bench/churn.py --cycles 100 --batch 4

Uses a minimal base in a temporary loop pool on an isolated network it defines; removes all
of it at the end. Exit status 1 if anything leaked or a cycle failed."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lxcforge import cgroups, dhcp, host, network  # noqa: E402
from lxcforge.virt import Virt  # noqa: E402


def lxcforge(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxcforge", "--store", str(store), *args],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "LXCFORGE_CONFIG": "/nonexistent"})


def free_subnet(prefix: int = 24) -> str:
    subnet = network.free_subnet(host.routed_ipv4_networks(), prefix, random.Random())
    if subnet is None:
        raise SystemExit("no free subnet for a scratch network")
    return subnet


def leaks(store: Path, net: str, prefix: str, virt: Virt, macs: set[str]) -> list[str]:
    found = []
    found += [f"subvolume {p.name}" for p in (store / "containers").glob(f"{prefix}*")]
    found += [f"domain {d.name}" for d in virt.domains() if d.name.startswith(prefix)]
    info = virt.network(net)
    assert info is not None
    plan = network.parse_network_xml(info.xml)
    found += [f"DHCP reservation {h.name} {h.ip}" for h in plan.hosts]
    # dnsmasq runs libvirt's lease helper for a release asynchronously: allow it a moment.
    deadline = time.monotonic() + 5
    while any(lease.mac in macs for lease in virt.leases(net)) and time.monotonic() < deadline:
        time.sleep(0.2)
    found += [f"lease {lease.ip} ({lease.mac})" for lease in virt.leases(net) if lease.mac in macs]
    if plan.hostsdir:
        found += [f"hosts-dir file {mac} ({name})" for mac, name in dhcp.published(plan.hostsdir)]
        # Notes of what dnsmasq still holds (dhcp.withdraw) are not leaks while bounded: the
        # same names come back each cycle and take their own entries back.
        held = dhcp.held(plan.hostsdir, net)
        if len(held) > len(macs):
            found += [f"held entry {h.mac} {h.ip} ({h.name})" for h in held]
    brif = Path("/sys/class/net") / str(info.bridge) / "brif"
    if brif.is_dir():
        found += [f"veth {p.name}" for p in brif.iterdir()]
    found += [f"lock {p.name}" for p in (store / "locks").glob("container-*")]
    found += [f"tmp {p.name}" for p in (store / "tmp").iterdir()]
    found += [f"cgroup {p}" for p in cgroups.groups() if p.name in _uuids]
    state = Path("/run/libvirt/lxc")
    if state.is_dir():
        found += [f"libvirt state {p.name}" for p in state.glob(f"{prefix}*")]
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if f"/containers/{prefix}" in line]
    return found


_uuids: set[str] = set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4, help="containers per cycle")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="lxcforge-churn-"))

    work.chmod(0o711)  # unprivileged containers' roots must pass through to their stores
    store = work / "store"
    net = f"lxfc-{os.urandom(2).hex()}"
    prefix = f"churn{os.urandom(2).hex()}-"
    failures = 0
    macs: set[str] = set()
    started = time.monotonic()
    with Virt() as virt:
        created = lxcforge(store, "network", "create", net, "--subnet", free_subnet(), "--isolated")
        if created.returncode:
            print(created.stderr, file=sys.stderr)
            return 1
        try:
            built = lxcforge(store, "base", "--distro", "minimal", "--release", "1")
            if built.returncode:
                print(built.stderr, file=sys.stderr)
                return 1
            for cycle in range(1, args.cycles + 1):
                made = lxcforge(store, "new", "--count", str(args.batch), "--prefix", prefix, "--network", net,
                                "--timeout", "30", "--json")
                if made.returncode:
                    failures += 1
                    print(f"cycle {cycle}: new failed: {made.stderr.strip()[-300:]}", file=sys.stderr)
                else:
                    for c in json.loads(made.stdout)["created"]:
                        macs.add(c["mac"])
                        _uuids.update(d.uuid for d in virt.domains() if d.name == c["name"])
                gone = lxcforge(store, "destroy", f"{prefix}*")
                if gone.returncode:
                    failures += 1
                    print(f"cycle {cycle}: destroy failed: {gone.stderr.strip()[-300:]}", file=sys.stderr)
            leaked = leaks(store, net, prefix, virt, macs)
        finally:
            lxcforge(store, "destroy", "--missing-ok", f"{prefix}*")
            lxcforge(store, "network", "rm", net)
            lxcforge(store, "store", "detach")
            (work / "store.img").unlink(missing_ok=True)
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)])
    seconds = time.monotonic() - started
    print(f"churn: {args.cycles} cycles of {args.batch} in {seconds:.1f} s, {failures} failed cycles, "
          f"{len(leaked)} leaks")
    for item in leaked:
        print(f"  leaked: {item}")
    return 1 if failures or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
