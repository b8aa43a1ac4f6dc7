#!/usr/bin/env python3
"""Random SIGKILLs: start `new` (one container or a batch) or `destroy`, SIGKILL it at a random
moment, KILLS times; then `lxcforge gc`, and a check that what is left is only whole
containers (domain, subvolume and reservation each), then that destroying them leaves nothing.

    sudo .venv/bin/python bench/kills.py --kills 100

Uses a minimal base in a temporary loop pool on an isolated network it defines; removes all
of it at the end. Exit status 1 if gc left an orphan or anything leaked."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.churn import leaks, lxcforge  # noqa: E402
from bench.scratch import minimal_store  # noqa: E402
from lxcforge import network  # noqa: E402
from lxcforge.virt import Virt  # noqa: E402


def orphans(store: Path, net: str, prefix: str, virt: Virt) -> list[str]:
    """Pieces of containers that are not whole: what gc must have removed."""
    defined = {d.name for d in virt.domains() if d.name.startswith(prefix)}
    on_disk = {p.name for p in (store / "containers").glob(f"{prefix}*")}
    info = virt.network(net)
    assert info is not None
    reserved = {h.name for h in network.parse_network_xml(info.xml).hosts}
    found = [f"domain without subvolume {n}" for n in defined - on_disk]
    found += [f"domain without reservation {n}" for n in defined - reserved]
    found += [f"subvolume without domain {n}" for n in on_disk - defined]
    found += [f"reservation without domain {n}" for n in reserved - defined]
    found += [f"pending {p.name}" for p in (store / "pending").glob("*")]
    found += [f"lock {p.name}" for p in (store / "locks").glob("container-*")]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    prefix = f"kill{os.urandom(2).hex()}-"
    kinds: dict[str, int] = {}
    started = time.monotonic()
    with Virt() as virt, minimal_store("kills") as (store, net):
        base = [sys.executable, "-m", "lxcforge", "--store", str(store)]
        for i in range(args.kills):
            kind = rng.choice(["new", "bulk", "destroy"])
            existing = [d.name for d in virt.domains() if d.name.startswith(prefix)]
            if kind == "destroy" and existing:
                argv = base + ["destroy", *rng.sample(existing, min(len(existing), rng.randint(1, 4)))]
            elif kind == "bulk":
                argv = base + ["new", "--count", "6", "--prefix", f"{prefix}{i}-", "--network", net]
            else:
                kind = "new"
                argv = base + ["new", f"{prefix}{rng.randint(0, 20)}", "--network", net]
            kinds[kind] = kinds.get(kind, 0) + 1
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                                       env={**os.environ, "LXCFORGE_CONFIG": "/nonexistent"})
            time.sleep(rng.uniform(0.05, 1.2))
            process.send_signal(signal.SIGKILL)
            process.wait()
        collected = json.loads(lxcforge(store, "gc", "--json").stdout)
        left = orphans(store, net, prefix, virt)
        kept = len([d for d in virt.domains() if d.name.startswith(prefix)])
        lxcforge(store, "destroy", "--all", "--missing-ok")
        leaked = leaks(store, net, prefix, virt, set())
    by_kind: dict[str, int] = {}
    for item in collected["items"]:
        by_kind[item["kind"]] = by_kind.get(item["kind"], 0) + 1
    print(f"kills: {args.kills} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}) in "
          f"{time.monotonic() - started:.0f} s; gc removed {len(collected['items'])} "
          f"({', '.join(f'{n} {k}' for k, n in sorted(by_kind.items()))}) in {collected['seconds']:.2f} s; "
          f"{kept} whole containers kept; after gc {len(left)} orphans; after destroy {len(leaked)} leaks")
    for item in left + leaked:
        print(f"  left: {item}")
    return 1 if left or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
