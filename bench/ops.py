#!/usr/bin/env python3
"""What a host full of containers costs the everyday commands: with N = 0, 500 and 1000
other containers running (--others), the time of `new --count 20` (wall, and the lease p50
and per-container p50 of its --json summary), `destroy` of those 20 (wall, and the command's
own summary seconds), `list` (of all) and `info NAME`, each --rounds times (min/median/max),
and each against the N = 0 figure. With the host (CPU model, cores, kernel) and the host's
CPU-seconds over each command (from /proc/stat; steal apart), split by owner
(bench/hostfacts.py).

    sudo .venv/bin/python bench/ops.py --others 0,500,1000 --rounds 3
    sudo .venv/bin/python bench/ops.py --others 0,1000 --rounds 5 --json ops.json
    sudo .venv/bin/python bench/ops.py --others 0,1000 --rounds 3 --libvirt-alone

Targets: new 20 and destroy 20 within 1.3x of the empty host at N = 1000; list of 1000 under
1 s; info under 0.3 s.

Each round runs new, list, info NAME (the first of the 20), destroy, in that order; list
lists the N others and the 20. The others are made once, level by level in ascending N,
and after the largest N destroyed again, then N = 0 is measured a second time ("0 again"):
how far the host drifted during the run (--no-recheck skips it).

Uses a minimal base (busybox: DHCP and nothing else) in a temporary loop pool, on isolated
networks it defines, under a name prefix of its own (printed at the start). Everything it
made (containers, networks, pool) is removed at the end, also on failure, Ctrl-C or
SIGTERM; Ctrl-C is ignored while that clean-up runs. Only a SIGKILL leaves them: then
`lxcforge --store STORE destroy --all`, `lxcforge network rm NET` and `lxcforge --store STORE
store detach` with the names printed at the start."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import hostfacts, libvirt_alone  # noqa: E402
from bench.churn import free_subnet, lxcforge  # noqa: E402
from bench.scratch import minimal_store  # noqa: E402
from lxcforge.ops.bulk import default_jobs, destroy_jobs  # noqa: E402

PER_NETWORK = 1000  # containers per network: a Linux bridge takes 1024 ports
OPS = ("new", "list", "info", "alone", "destroy")
# (operation, figure) of the summary; wall_s is the whole command as this script waited for it.
FIGURES = (("new", "wall_s"), ("new", "seconds"), ("new", "lease_p50_ms"), ("new", "p50_s"),
           ("list", "wall_s"), ("info", "wall_s"), ("destroy", "wall_s"), ("destroy", "seconds"),
           ("alone", "started_s"), ("alone", "leased_s"), ("alone", "destroyed_s"))
AGAIN = "0 again"


def parse_levels(text: str) -> list[int]:
    """--others: counts of other running containers, ascending, 0 always among them (the
    figures are compared with it)."""
    levels = {0}
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        if not word.isdigit():
            raise ValueError(f"{word!r}: expected a count of containers (0 or more)")
        levels.add(int(word))
    return sorted(levels)


def networks_needed(largest: int, count: int) -> int:
    return max(1, -(-(largest + count) // PER_NETWORK))


def measured(store: Path, owners: bool, *args: str) -> tuple[float, dict[str, object], Any]:
    """Run one lxcforge command: (wall seconds, the host's CPU over it by owner, result)."""
    window = hostfacts.Window(owners)
    result = window.run("lxcforge", lambda: lxcforge(store, *args))
    figures = window.close()
    return float(str(figures["seconds"])), figures, result


def _document(stdout: str) -> Any:
    try:
        return json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        return None


def _quiet() -> tuple[float, float, float]:
    """Wait for dnsmasq's lease events to be done, then for the host to go quiet: the
    kernel's teardown of containers gone before (their network namespaces) runs on for a
    while after the command that removed them. (seconds settled, idle wait, busy share)"""
    settled = hostfacts.wait_lease_helpers()
    idle_wait, idle_share = hostfacts.wait_idle()
    return settled, idle_wait, idle_share


def alone_round(store: Path, prefix: str, count: int, owners: bool) -> dict[str, Any]:
    """The COUNT just made, stopped, then started by libvirt alone (bench/libvirt_alone.py)
    as many at a time as `new` runs: the floor under new's start and lease phases."""
    stopped = lxcforge(store, "stop", f"{prefix}*", "--timeout", "10")
    if stopped.returncode:
        return {"exit": stopped.returncode, "error": stopped.stderr.strip()[-500:]}
    names = [f"{prefix}{i}" for i in range(1, count + 1)]
    try:
        _quiet()
        window = hostfacts.Window(owners)
        figures: dict[str, Any] = {"exit": 0, **libvirt_alone.start_and_lease(names, default_jobs())}
        figures["cpu"] = window.close()
        # And frozen and forced off by libvirt alone, as many at a time as destroy runs; then started
        # again for the round's destroy (of running containers, as in every round).
        _quiet()
        figures["destroyed_s"] = libvirt_alone.force_off(names, destroy_jobs())["destroyed_s"]
        libvirt_alone.start_and_lease(names, default_jobs())
        _quiet()
    except Exception as exc:  # a bench round's failure, recorded: the rounds before it stand
        figures = {"exit": 1, "error": f"{type(exc).__name__}: {exc}"}
    return figures


def one_round(store: Path, nets: Sequence[str], prefix: str, count: int, owners: bool,
              alone: bool = False) -> dict[str, dict[str, Any]]:
    """new COUNT, list, info of the first, (with alone: libvirt alone's start of the COUNT,)
    destroy of the COUNT: each command's figures."""
    record: dict[str, dict[str, Any]] = {}
    settled, idle_wait, idle_share = _quiet()
    wall, cpu, made = measured(store, owners, "new", "--count", str(count), "--prefix", prefix,
                               "--network", ",".join(nets), "--json", "--timeout", "300")
    summary = _document(made.stdout)
    summary = summary if isinstance(summary, dict) else {}
    phases = summary.get("phase_p50_ms") or {}
    record["new"] = {"settled_s": round(settled, 2), "idle_wait_s": idle_wait, "idle_busy": round(idle_share, 3),
                     "wall_s": wall, "exit": made.returncode,
                     "seconds": summary.get("seconds"),
                     "succeeded": summary.get("succeeded"), "failed": len(summary.get("failed") or []),
                     "p50_s": summary.get("p50_seconds"), "lease_p50_ms": phases.get("lease"),
                     "phase_p50_ms": phases, "before_first_s": summary.get("before_first_seconds"),
                     "after_last_s": summary.get("after_last_seconds"), "cpu": cpu,
                     **({"error": made.stderr.strip()[-500:]} if made.returncode else {})}
    try:
        wall, cpu, listed = measured(store, owners, "list", "--json")
        shown = _document(listed.stdout)
        record["list"] = {"wall_s": wall, "exit": listed.returncode,
                          "listed": len(shown) if isinstance(shown, list) else None, "cpu": cpu}
        wall, cpu, info = measured(store, owners, "info", f"{prefix}1", "--json")
        record["info"] = {"wall_s": wall, "exit": info.returncode, "cpu": cpu}
        if alone:
            record["alone"] = alone_round(store, prefix, count, owners)
    finally:
        wall, cpu, gone = measured(store, owners, "destroy", f"{prefix}*", "--missing-ok", "--json")
        summary = _document(gone.stdout)
        summary = summary if isinstance(summary, dict) else {}
        record["destroy"] = {"wall_s": wall, "exit": gone.returncode, "seconds": summary.get("seconds"),
                             "parallel_seconds": summary.get("parallel_seconds"),
                             "before_first_s": summary.get("before_first_seconds"),
                             "after_last_s": summary.get("after_last_seconds"),
                             "succeeded": summary.get("succeeded"), "cpu": cpu}
    return record


def round_line(level: str, round_: int, record: Mapping[str, Mapping[str, Any]]) -> str:
    new, destroy = record["new"], record["destroy"]
    listed, info = record.get("list", {}), record.get("info", {})
    lease = new.get("lease_p50_ms")
    line = (f"N={level} round {round_}: lease helper done {new.get('settled_s', 0):.1f} s before, host quiet "
            f"after {new.get('idle_wait_s', 0):.0f} s ({100 * new.get('idle_busy', 0):.0f} % busy); "
            f"new {new.get('succeeded')} in {new['wall_s']:.2f} s "
            f"(lease p50 {'-' if lease is None else f'{lease:.0f} ms'}), "
            f"list {listed.get('wall_s', float('nan')):.2f} s ({listed.get('listed')}), "
            f"info {info.get('wall_s', float('nan')):.3f} s, destroy {destroy['wall_s']:.2f} s "
            f"(summary {destroy.get('seconds')} s)")
    alone = record.get("alone")
    if alone and not alone.get("exit"):
        line += (f"; libvirt alone: started {alone['started_s']:.2f} s, leased {alone['leased_s']:.2f} s, "
                 f"forced off {alone['destroyed_s']:.2f} s")
    failed = [op for op in OPS if record.get(op, {}).get("exit")]
    if failed:
        line += f" FAILED: {', '.join(failed)}"
    return line


def _figure(records: Sequence[Mapping[str, Any]], op: str, key: str) -> list[float]:
    values = []
    for record in records:
        if op == "destroy" and record.get("alone", {}).get("exit"):
            continue  # libvirt alone failed half way: this destroy met containers in another state
        value = record.get(op, {}).get(key)
        if isinstance(value, int | float):
            values.append(float(value))
    return values


def _cpu(records: Sequence[Mapping[str, Any]], op: str) -> dict[str, float | None]:
    """Median CPU-seconds of the command's window: the host's, steal, and each owner's."""
    windows = [r[op]["cpu"] for r in records if isinstance(r.get(op, {}).get("cpu"), Mapping)]
    names: list[str] = []
    for window in windows:
        names += [n for n in window.get("owners", {}) if n not in names]
    result = {"host_cpu_s": hostfacts.median([float(w["host_cpu_s"]) for w in windows]),
              "steal_s": hostfacts.median([float(w["steal_s"]) for w in windows])}
    for name in names:
        result[name] = hostfacts.median([float(w["owners"][name]) for w in windows if name in w.get("owners", {})])
    return {k: None if v is None else round(v, 4) for k, v in result.items()}


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per level (in the order met) and figure: min/median/max, and the median's ratio to the
    first N = 0's; per level and operation: the median CPU by owner. Pure."""
    levels: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        levels.setdefault(str(record["level"]), []).append(record)
    empty = levels.get("0", [])
    summary: dict[str, Any] = {}
    for level, done in levels.items():
        figures: dict[str, Any] = {}
        for op, key in FIGURES:
            values = _figure(done, op, key)
            spread = hostfacts.spread(values)
            versus = hostfacts.ratio(hostfacts.median(values), hostfacts.median(_figure(empty, op, key)))
            figures[f"{op}.{key}"] = {**{k: round(v, 4) if isinstance(v, float) else v for k, v in spread.items()},
                                      "vs_0": None if versus is None else round(versus, 3)}
        listed = _figure(done, "list", "listed")
        failed = sum(1 for r in done if any(r.get(op, {}).get("exit") for op in OPS))
        summary[level] = {"rounds": len(done), "failed_rounds": failed, "listed": hostfacts.median(listed),
                          "figures": figures, "cpu": {op: _cpu(done, op) for op in OPS}}
    return summary


def targets(summary: Mapping[str, Any], at: str = "1000") -> list[dict[str, Any]]:
    """The targets, judged at the level given (1000 where measured, else the largest)."""
    if at not in summary:
        numeric = [level for level in summary if level.isdigit()]
        if not numeric:
            return []
        at = max(numeric, key=int)
    figures = summary[at]["figures"]
    rows = []
    # "within 1.3x": at most; "under 1 s": less than.
    for name, key, kind, limit, strict in (("new vs empty host", "new.wall_s", "vs_0", 1.3, False),
                                           ("destroy vs empty host", "destroy.wall_s", "vs_0", 1.3, False),
                                           ("destroy vs empty host (its summary)", "destroy.seconds", "vs_0", 1.3,
                                            False),
                                           (f"list of {at} others and the new", "list.wall_s", "median", 1.0, True),
                                           ("info NAME", "info.wall_s", "median", 0.3, True)):
        value = figures.get(key, {}).get(kind)
        met = None if value is None else value < limit if strict else value <= limit
        rows.append({"target": name, "at": at, "figure": key, "value": value, "limit": limit,
                     "unit": "x" if kind == "vs_0" else "s", "met": met})
    return rows


def table_lines(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], facts: Mapping[str, object],
                count: int) -> list[str]:
    lines = [hostfacts.host_line(facts),
             f"{'N':>8}  {'command':22} {'median [min-max]':26} {'vs N=0':>7}  host CPU-s (median) by owner"]
    labels = {"new.wall_s": f"new {count} (wall)", "new.seconds": f"new {count} (its summary)",
              "new.lease_p50_ms": "new: lease p50", "new.p50_s": "new: per container p50",
              "list.wall_s": "list", "info.wall_s": "info NAME", "destroy.wall_s": f"destroy {count} (wall)",
              "destroy.seconds": f"destroy {count} (summary)",
              "alone.started_s": "libvirt alone: started", "alone.leased_s": "libvirt alone: leased",
              "alone.destroyed_s": "libvirt alone: forced off"}
    for level, entry in summary.items():
        for key, figures in entry["figures"].items():
            if not figures.get("n"):
                continue  # not measured in this run (libvirt alone without --libvirt-alone)
            unit, digits = ("ms", 0) if key.endswith("_ms") else ("s", 3 if key.startswith("info") else 2)
            versus = "-" if figures.get("vs_0") is None else f"{figures['vs_0']:.2f}x"
            cpu = ""
            op = key.split(".")[0]
            if key.endswith("wall_s") or key == "alone.leased_s":
                owners = dict(entry["cpu"].get(op, {}))
                busy, steal = owners.pop("host_cpu_s", None), owners.pop("steal_s", None)
                if busy is not None:
                    cpu = f"{busy:.2f} (steal {steal or 0:.2f}): " + ", ".join(
                        f"{name} {value:.2f}" for name, value in owners.items()
                        if value is not None and (name == "rest" or abs(value) >= 0.005))
            lines.append(f"{level:>8}  {labels.get(key, key):22} {hostfacts.fmt_figures(figures, unit, digits):26} "
                         f"{versus:>7}  {cpu}")
        if entry.get("listed") is not None:
            lines.append(f"{level:>8}  (list showed {entry['listed']:.0f} containers)")
        if entry.get("failed_rounds"):
            lines.append(f"{level:>8}  {entry['failed_rounds']} of {entry['rounds']} rounds had a command fail")
    lines += floor_lines(summary)
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.2f}{'x' if row['unit'] == 'x' else ' s'}"
        verdict = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        lines.append(f"target at N={row['at']}: {row['target']}: {value} (limit {row['limit']}"
                     f"{'x' if row['unit'] == 'x' else ' s'}): {verdict}")
    return lines


def floor_lines(summary: Mapping[str, Any], at: str = "1000", limit: float = 1.3) -> list[str]:
    """With --libvirt-alone: how much of new's allowed growth libvirt alone already takes."""
    if at not in summary or "0" not in summary:
        return []
    lines = []
    for floor, command, what in (("alone.leased_s", "new", "start and lease"),
                                 ("alone.destroyed_s", "destroy", "forcing off")):
        alone_0 = summary["0"]["figures"].get(floor, {}).get("median")
        alone_n = summary[at]["figures"].get(floor, {}).get("median")
        own_0 = summary["0"]["figures"].get(f"{command}.wall_s", {}).get("median")
        own_n = summary[at]["figures"].get(f"{command}.wall_s", {}).get("median")
        if None in (alone_0, alone_n, own_0) or not alone_0:
            continue
        line = (f"floor at N={at}: libvirt alone's {what} of the same containers took "
                f"{alone_n - alone_0:+.2f} s more than at N=0 ({alone_n / alone_0:.2f}x); {command} within "
                f"{limit}x of the empty host may grow by {(limit - 1) * own_0:.2f} s in all")
        if own_n is not None:
            # What the command's own steps add to libvirt's growth: the part lxcforge can change.
            grew = own_n - own_0
            line += f"; it grew by {grew:+.2f} s, {grew - (alone_n - alone_0):+.2f} s beyond libvirt alone's"
        lines.append(line)
    return lines


def grow(store: Path, nets: Sequence[str], prefix: str, have: int, want: int) -> int:
    """Others prefix1..prefixWANT running, given prefix1..prefixHAVE: how many run now."""
    if want <= have:
        return have
    names = [f"{prefix}{i}" for i in range(have + 1, want + 1)]
    made = lxcforge(store, "new", *names, "--network", ",".join(nets), "--json", "--timeout", "300", "--tune-host")
    summary = _document(made.stdout)
    succeeded = summary.get("succeeded", 0) if isinstance(summary, dict) else 0
    if made.returncode or succeeded != len(names):
        raise SystemExit(f"could not make the others ({succeeded} of {len(names)}): {made.stderr.strip()[-500:]}")
    return want


def _ignore_interrupts() -> None:
    """For the clean-up: a second Ctrl-C (or a SIGTERM) must not leave half of it undone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--others", default="0,500,1000", metavar="N[,N...]",
                        help="other running containers to measure with (0 is always added; default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the four commands per N (default: %(default)s)")
    parser.add_argument("--count", type=int, default=20, help="containers per new and destroy (default: %(default)s)")
    parser.add_argument("--no-recheck", action="store_true", help="do not measure N = 0 again at the end")
    parser.add_argument("--libvirt-alone", action="store_true",
                        help="also stop the new containers in each round, start them with libvirt's API alone until "
                        "leased, and force them off with it alone: the floors under new and destroy "
                        "(bench/libvirt_alone.py)")
    hostfacts.add_output_options(parser, "command")
    return parser


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        levels = parse_levels(args.others)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds < 1 or args.count < 1:
        parser.error("--rounds and --count must be at least 1")
    json_stream = hostfacts.json_to_stdout() if args.json == "-" else None
    out = sys.stderr if json_stream is not None else sys.stdout
    owners = not args.no_owner_split
    hostfacts.compile_sources(REPO / "lxcforge")
    facts = hostfacts.host_facts()
    print(hostfacts.host_line(facts), file=out, flush=True)
    prefix = f"ops{os.urandom(2).hex()}-"
    others, fresh = f"{prefix}o", f"{prefix}n"
    records: list[dict[str, Any]] = []
    teardowns: list[dict[str, Any]] = []  # the others destroyed before N = 0 again
    interrupted = False
    nets: list[str] = []
    try:
        with minimal_store("ops", 21) as (store, net):
            nets = [net]
            try:
                for i in range(1, networks_needed(levels[-1], args.count)):
                    extra = f"lxo{i}-{os.urandom(2).hex()}"
                    made = lxcforge(store, "network", "create", extra, "--subnet", free_subnet(21), "--isolated")
                    if made.returncode:
                        raise SystemExit(made.stderr)
                    nets.append(extra)
                print(f"store {store}, networks {', '.join(nets)}, prefix {prefix}", file=out, flush=True)
                have = 0
                plan = [(str(level), level) for level in levels]
                if not args.no_recheck and levels[-1] > 0:
                    plan.append((AGAIN, 0))
                for label, level in plan:
                    if level < have:  # only the recheck goes down: all the others go
                        wall, cpu, gone = measured(store, owners, "destroy", f"{others}*", "--json")
                        teardowns.append({"others": have, "wall_s": wall, "exit": gone.returncode, "cpu": cpu})
                        print(f"destroyed the {have} others in {wall:.1f} s (exit {gone.returncode}); "
                              f"{hostfacts.format_split(cpu, per=have)}", file=out, flush=True)
                        have = 0
                    have = grow(store, nets, others, have, level)
                    for round_ in range(1, args.rounds + 1):
                        record = one_round(store, nets, fresh, args.count, owners, args.libvirt_alone)
                        records.append({"level": label, "others": level, "round": round_, **record})
                        print(round_line(label, round_, record), file=out, flush=True)
            except KeyboardInterrupt:
                interrupted = True
                print("interrupted: removing everything this run made", file=out, flush=True)
            finally:
                _ignore_interrupts()
                print("cleaning up (Ctrl-C is ignored until done)", file=out, flush=True)
                lxcforge(store, "destroy", "--all", "--missing-ok")
                lxcforge(store, "gc")
                for extra in nets[1:]:
                    lxcforge(store, "network", "rm", extra)
            # minimal_store removes the rest: its network, the pool, the files.
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    summary = summarise(records)
    rows = targets(summary)
    print("\n".join(table_lines(summary, rows, facts, args.count)), file=out, flush=True)
    document = {"host": facts, "others": levels, "count": args.count, "rounds": args.rounds, "prefix": prefix,
                "networks": nets, "interrupted": interrupted, "records": records, "others_destroyed": teardowns,
                "summary": summary, "targets": rows}
    if json_stream is not None:
        json_stream.write(json.dumps(document, indent=2) + "\n")
        json_stream.flush()
    elif args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"raw figures: {args.json}", file=out)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
