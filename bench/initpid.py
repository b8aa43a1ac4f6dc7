#!/usr/bin/env python3
"""libvirt's lost init pid at scale: ROUNDS bulk `new` of COUNT containers; after each, how
many containers libvirt does not fully manage (checked independently of lxcforge, through
libvirt's LXC API against each real init), how many lxcforge repaired, what the check cost,
and whether a `stop` of all of them had to force any off.

    sudo .venv/bin/python bench/initpid.py --count 500 --rounds 3

Uses a minimal base in a temporary loop pool on an isolated /22 network it defines; removes
all of it at the end."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.churn import lxcforge  # noqa: E402
from bench.scratch import host_line, minimal_store  # noqa: E402
from lxcforge.ops import repair  # noqa: E402
from lxcforge.virt import Virt  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    bad = 0
    print(host_line())
    with Virt() as virt, minimal_store("initpid", 22) as (store, net):
        for round_ in range(1, args.rounds + 1):
            prefix = f"p{round_}-"
            cpu0 = os.times()
            made = lxcforge(store, "new", "--count", str(args.count), "--prefix", prefix, "--network", net,
                            "--json", "--timeout", "120")
            summary = json.loads(made.stdout)
            names = [c["name"] for c in summary["created"]]
            unmanaged = [n for n in names if repair.is_managed(virt, n) is not True]
            t = time.monotonic()
            stopped = lxcforge(store, "stop", "--all", "--json")
            stop_seconds = time.monotonic() - t
            forced = stopped.stderr.count("forcing it off")
            cpu1 = os.times()
            host_cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
            print(f"round {round_}: new {summary['succeeded']}/{summary['total']} in {summary['seconds']:.1f} s, "
                  f"repaired {summary['repaired']}, failed {len(summary['failed'])}; "
                  f"not fully managed afterwards: {len(unmanaged)}; "
                  f"check p50 {summary['phase_p50_ms'].get('managed')} ms; "
                  f"stop --all {stop_seconds:.1f} s, forced off {forced}; lxcforge CPU {host_cpu:.1f} s")
            bad += len(unmanaged) + forced + len(summary["failed"])
            lxcforge(store, "destroy", "--all")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
