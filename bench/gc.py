#!/usr/bin/env python3
"""`lxcforge gc` with nothing to do on a host with COUNT running containers: the time a boot,
a doctor or an operator pays for the reconciler.

    sudo .venv/bin/python bench/gc.py --count 1000

Uses a minimal base in a temporary loop pool on an isolated network it defines (a /21, so
COUNT may exceed a bridge's 1024 ports only with --networks 2); removes all of it at the end."""

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(host_line())
    with minimal_store("gc", 21) as (store, net):
        made = lxcforge(store, "new", "--count", str(args.count), "--prefix", "g", "--network", net, "--json",
                        "--timeout", "300", "--tune-host")
        print(f"made {json.loads(made.stdout)['succeeded']} containers")
        for _ in range(args.runs):
            for mode in (["--dry-run"], []):
                cpu0 = os.times()
                t = time.monotonic()
                result = json.loads(lxcforge(store, "gc", "--json", *mode).stdout)
                wall = time.monotonic() - t
                cpu1 = os.times()
                cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
                print(f"gc {' '.join(mode) or '(real)'}: {wall:.2f} s wall (inside: {result['seconds']:.2f} s), "
                      f"{cpu:.2f} CPU-s, found {len(result['items'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
