#!/usr/bin/env python3
"""One bulk `new` of COUNT systemd containers, timed to every container addressed (new's own
wait) and to every container's systemd `running`; the same command on two hosts gives a
ratio (scripts/vagrant-test's VM against the host it runs on: emulation makes absolute
times meaningless there).

    sudo .venv/bin/python bench/bulk.py --store STORE --base BASE --count 20 --rounds 3

Runs on an isolated network it defines, with names it picks; removes both at the end."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import hostfacts  # noqa: E402
from bench.churn import free_subnet, lxcforge  # noqa: E402


def one_round(store: Path, base: str, count: int, net: str, prefix: str) -> dict[str, object]:
    cpu0 = hostfacts.read_cpu_times()
    started = time.monotonic()
    made = lxcforge(store, "new", "--count", str(count), "--prefix", prefix, "--base", base, "--network", net,
                    "--json", "--timeout", "900")
    addressed = time.monotonic() - started
    try:
        summary = json.loads(made.stdout) if made.stdout.strip() else {"created": []}
        created = [c for c in summary.get("created", []) if c.get("ipv4")]
        # exec on many: every container's `systemctl is-system-running --wait`, in parallel.
        states = lxcforge(store, "exec", f"{prefix}*", "-j", str(count), "--json", "--",
                          "systemctl", "is-system-running", "--wait")
        running_at = time.monotonic() - started
        cpu1 = hostfacts.read_cpu_times()
        results = json.loads(states.stdout).get("results", []) if states.stdout.strip() else []
        running = sum(1 for r in results if r.get("stdout", "").strip() == "running")
        return {"addressed": len(created), "running": running, "addressed_s": round(addressed, 2),
                "running_s": round(running_at, 2), "host_cpu_s": round(cpu1.busy - cpu0.busy, 1),
                "steal_s": round(cpu1.steal - cpu0.steal, 1), "error": made.stderr.strip()[-300:] or None}
    finally:
        lxcforge(store, "destroy", f"{prefix}*", "--missing-ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    hostfacts.compile_sources(REPO / "lxcforge")  # before the rounds it is meant for
    tag = os.urandom(2).hex()
    net, prefix = f"lxbulk-{tag}", f"bk{tag}-"
    made = lxcforge(args.store, "network", "create", net, "--subnet", free_subnet(), "--isolated")
    if made.returncode != 0:
        raise SystemExit(f"network create failed: {made.stderr.strip()}")
    rounds = []
    try:
        for number in range(1, args.rounds + 1):
            result = one_round(args.store, args.base, args.count, net, prefix)
            rounds.append(result)
            print(f"round {number}: {result}", file=sys.stderr, flush=True)
    finally:
        lxcforge(args.store, "network", "rm", net)
    facts = hostfacts.host_facts()
    report = {"host": facts, "count": args.count, "rounds": rounds,
              "addressed_s": hostfacts.spread([float(r["addressed_s"]) for r in rounds]),  # type: ignore[arg-type]
              "running_s": hostfacts.spread([float(r["running_s"]) for r in rounds])}  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(hostfacts.host_line(facts))
        print(f"{args.count} systemd containers, {args.rounds} rounds: all addressed "
              f"{hostfacts.fmt_spread([float(r['addressed_s']) for r in rounds])}, "  # type: ignore[arg-type]
              f"all running {hostfacts.fmt_spread([float(r['running_s']) for r in rounds])}; "  # type: ignore[arg-type]
              f"running {[r['running'] for r in rounds]} of {args.count}")


if __name__ == "__main__":
    main()
