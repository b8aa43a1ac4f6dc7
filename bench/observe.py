#!/usr/bin/env python3
"""What seeing a scaling test costs: `stats` of COUNT running containers (one read, and
--watch's CPU use over a minute), --report's cost on a bulk `new` (with and without,
alternating, several rounds) and `report`'s drawing time.

    sudo .venv/bin/python bench/observe.py --count 1000 --new 300 --rounds 3

Uses a minimal base in a temporary loop pool on an isolated network it defines; removes all
of it at the end."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.churn import lxcforge  # noqa: E402
from bench.scratch import host_line, minimal_store  # noqa: E402


def timed(store: Path, *args: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall seconds, CPU seconds of the command, result)."""
    cpu0 = os.times()
    t = time.monotonic()
    result = lxcforge(store, *args)
    wall = time.monotonic() - t
    cpu1 = os.times()
    return wall, (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system), result


def watch_cpu(store: Path, seconds: float) -> float:
    """Percent of one core `stats --watch` (its default interval) uses over seconds."""
    proc = subprocess.Popen([sys.executable, "-m", "lxcforge", "--store", str(store), "stats", "--watch"],
                            stdout=subprocess.DEVNULL)
    time.sleep(seconds)
    ticks = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
    proc.terminate()
    proc.wait()
    return 100 * used / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="running containers for stats")
    parser.add_argument("--new", type=int, default=300, help="containers per bulk new for --report's cost")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--picture", type=Path, default=None, help="also draw the rounds overlaid to this file")
    parser.add_argument("--stats-only", action="store_true", help="only the stats figures")
    args = parser.parse_args(argv)
    print(host_line())
    work = Path(tempfile.mkdtemp(prefix="lxcforge-observe-"))
    work.chmod(0o711)  # unprivileged containers' roots must pass through to their stores
    with minimal_store("observe", 21) as (store, net):
        # --report's cost: the same bulk new with and without, alternating.
        walls: dict[str, list[float]] = {"without": [], "with": []}
        for round_ in range(0 if args.stats_only else args.rounds):
            order = ["without", "with"] if round_ % 2 == 0 else ["with", "without"]
            for mode in order:
                extra = ["--report", str(work / f"new-{round_}.jsonl")] if mode == "with" else []
                wall, _cpu, made = timed(store, "new", "--count", str(args.new), "--prefix", "n", "--network", net,
                                         "--json", "--timeout", "300", "--tune-host", *extra)
                document = json.loads(made.stdout)
                walls[mode].append(wall)
                print(f"round {round_ + 1} new {args.new} {mode} --report: {wall:.2f} s "
                      f"({document['succeeded']} made)", flush=True)
                lxcforge(store, "destroy", "n*")
        if not args.stats_only:
            median = {mode: statistics.median(values) for mode, values in walls.items()}
            print(f"--report on new {args.new}: median {median['with']:.2f} s with, {median['without']:.2f} s "
                  f"without ({100 * (median['with'] / median['without'] - 1):+.1f} %)")

        # report's drawing of the biggest run, and of all rounds overlaid.
        for files in ([] if args.stats_only else ([work / "new-0.jsonl"], sorted(work.glob("new-*.jsonl")))):
            out = args.picture if args.picture is not None and len(files) > 1 else work / "run.png"
            wall, cpu, drawn = timed(store, "report", *map(str, files), "-o", str(out.resolve()))
            print(f"report of {len(files)} run(s) of {args.new}: {wall:.2f} s wall, {cpu:.2f} CPU-s "
                  f"(exit {drawn.returncode})")

        made = lxcforge(store, "new", "--count", str(args.count), "--prefix", "s", "--network", net, "--json",
                        "--timeout", "300", "--tune-host", "--report", str(work / "big.jsonl"))
        print(f"made {json.loads(made.stdout)['succeeded']} running containers")
        wall, cpu, drawn = timed(store, "report", str(work / "big.jsonl"), "-o", str(work / "big.png"))
        print(f"report of a run of {args.count}: {wall:.2f} s wall, {cpu:.2f} CPU-s (exit {drawn.returncode})")
        for _ in range(args.rounds):
            wall, cpu, shown = timed(store, "stats", "--format", "json")
            print(f"stats of {len(json.loads(shown.stdout))}: {wall:.3f} s wall, {cpu:.3f} CPU-s")
        for _ in range(args.rounds):
            wall, cpu, listed = timed(store, "list", "--json")
            print(f"list of {len(json.loads(listed.stdout))}: {wall:.3f} s wall, {cpu:.3f} CPU-s")
            wall, cpu, _shown = timed(store, "info", "s500", "--json")
            print(f"info of one of them: {wall:.3f} s wall, {cpu:.3f} CPU-s")
        print(f"stats --watch (default 3 s interval) over 60 s: {watch_cpu(store, 60):.1f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
