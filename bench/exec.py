#!/usr/bin/env python3
"""exec on many against a shell loop of single execs, in the same run, alternating order:
`lxcforge exec 'P*' -- true` on COUNT running containers, and `for n in ...; do lxcforge exec
$n -- true; done`.

    sudo .venv/bin/python bench/exec.py --count 300 --rounds 3

Uses a minimal base in a temporary loop pool on an isolated network it defines; removes all
of it at the end."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.churn import lxcforge  # noqa: E402
from bench.scratch import host_line, minimal_store  # noqa: E402


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU-seconds of the children, exit status."""
    cpu0 = os.times()
    t = time.monotonic()
    status = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            env={**os.environ, "LXCFORGE_CONFIG": "/nonexistent"}).returncode
    wall = time.monotonic() - t
    cpu1 = os.times()
    return wall, (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system), status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(host_line())
    with minimal_store("exec", 22) as (store, net):
        made = json.loads(lxcforge(store, "new", "--count", str(args.count), "--prefix", "e", "--network", net,
                                   "--json", "--timeout", "300").stdout)
        names = [c["name"] for c in made["created"]]
        lxcforge_cmd = [sys.executable, "-m", "lxcforge", "--store", str(store)]
        loop = ["sh", "-c", " ".join(f"{' '.join(lxcforge_cmd)} exec {n} -- true || exit 1;" for n in names)]
        parallel = [*lxcforge_cmd, "exec", "e*", "--", "true"]
        ratios = []
        for round_ in range(1, args.rounds + 1):
            order = [("parallel", parallel), ("loop", loop)]
            if round_ % 2 == 0:
                order.reverse()
            got = {}
            for label, command in order:
                got[label] = timed(command)
            ratio = got["loop"][0] / got["parallel"][0]
            ratios.append(ratio)
            print(f"round {round_} ({' then '.join(label for label, _ in order)}): exec on {len(names)} in "
                  f"{got['parallel'][0]:.2f} s ({got['parallel'][1]:.1f} CPU-s, status {got['parallel'][2]}); "
                  f"serial loop {got['loop'][0]:.2f} s ({got['loop'][1]:.1f} CPU-s, status {got['loop'][2]}); "
                  f"{ratio:.1f}x")
        print(f"exec on many is {min(ratios):.1f}-{max(ratios):.1f}x faster than the loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
