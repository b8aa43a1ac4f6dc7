"""The bench scripts' pure parts: /proc/stat and /proc/PID/stat parsing, CPU by owner between
two samples, min/median/max, the order of rounds and sweeps, the choice of the best setting,
the summaries of bench/scale.py and bench/ops.py, and the commands the docs quote."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench import hostfacts, libvirt_alone, ops, scale
from bench.hostfacts import CpuTimes, Proc, Sample
from lxcforge import domain

REPO = Path(__file__).resolve().parents[2]

PROC_STAT = """cpu  668044 12 309750 2248052 21467 100 9258 274 5000 0
cpu0 316381 6 146347 1155346 6457 50 3316 131 2500 0
cpu1 351663 6 163403 1092706 15010 50 5942 143 2500 0
intr 123 0 0
ctxt 456
"""


def test_proc_stat_busy_is_user_nice_system_irq_softirq_and_steal_apart() -> None:
    times = hostfacts.parse_proc_stat(PROC_STAT, hz=100)
    assert times.busy == pytest.approx((668044 + 12 + 309750 + 100 + 9258) / 100)
    assert times.steal == pytest.approx(274 / 100)
    assert times.idle == pytest.approx((2248052 + 21467) / 100)


def test_proc_stat_of_an_old_kernel_without_steal() -> None:
    times = hostfacts.parse_proc_stat("cpu  10 20 30 40\n", hz=10)
    assert (times.busy, times.steal, times.idle) == (6.0, 0.0, 4.0)


def test_proc_stat_takes_the_aggregate_line_not_a_cpu_of_its_own() -> None:
    times = hostfacts.parse_proc_stat("cpu0 1 0 0 0\ncpu  5 0 0 0\n", hz=1)
    assert times.busy == 5.0
    with pytest.raises(ValueError):
        hostfacts.parse_proc_stat("cpu0 1 0 0 0\nintr 1\n")


def pid_stat(pid: int, comm: str, ppid: int = 1, utime: int = 0, stime: int = 0, cutime: int = 0, cstime: int = 0,
             starttime: int = 1000) -> str:
    """A /proc/PID/stat line: the fields of proc(5) in order, zeros where unused."""
    fields = ["S", ppid, 0, 0, 0, -1, 4194560, 0, 0, 0, 0, utime, stime, cutime, cstime, 20, 0, 1, 0, starttime,
              3133440, 392]
    return f"{pid} ({comm}) " + " ".join(map(str, fields)) + "\n"


def test_pid_stat_fields() -> None:
    parsed = hostfacts.parse_pid_stat(pid_stat(4242, "libvirt_lxc", ppid=1, utime=11, stime=7, cutime=300,
                                               cstime=200, starttime=98765))
    assert parsed == hostfacts.ProcStat(pid=4242, comm="libvirt_lxc", ppid=1, utime=11, stime=7, cutime=300,
                                        cstime=200, starttime=98765)


def test_pid_stat_of_a_real_line() -> None:
    line = ("1 (process_api) S 0 0 0 0 -1 4194560 105303 405239747 0 304049 2030 18095 628700 225327 10 -10 15 0 "
            "25 45395968 2757 18446744073709551615 1 1 0 0 0 0 0 4096 1256 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0")
    parsed = hostfacts.parse_pid_stat(line)
    assert (parsed.utime, parsed.stime, parsed.cutime, parsed.cstime, parsed.starttime) == (2030, 18095, 628700,
                                                                                           225327, 25)


def test_pid_stat_comm_with_spaces_and_parentheses() -> None:
    parsed = hostfacts.parse_pid_stat(pid_stat(7, "a) b (c", ppid=3, utime=5))
    assert (parsed.comm, parsed.ppid, parsed.utime) == ("a) b (c", 3, 5)
    with pytest.raises(ValueError):
        hostfacts.parse_pid_stat("7 (x) S 1 2 3")


def test_owners_by_process_name() -> None:
    assert hostfacts.owner_of("libvirtd") == "libvirtd"
    assert hostfacts.owner_of("virtlxcd") == "libvirtd"
    assert hostfacts.owner_of("libvirt_lxc") == "libvirt_lxc"
    assert hostfacts.owner_of("dnsmasq") == "dnsmasq"
    assert hostfacts.owner_of("lxc-start") == "lxc"
    assert hostfacts.owner_of("[lxc monitor] /") == "lxc"
    assert hostfacts.owner_of("systemd") is None
    assert hostfacts.owner_of("python3") is None


def test_read_procs_keeps_the_owners_processes_only(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, comm, utime in ((10, "libvirtd", 250), (11, "bash", 900), (12, "libvirt_lxc", 30)):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(pid_stat(pid, comm, utime=utime, cutime=hostfacts.HZ,
                                                       starttime=pid * 100))
    (proc / "self").mkdir()
    (proc / "13").mkdir()  # gone before its stat was read
    found = hostfacts.read_procs(proc)
    assert found == {(10, 1000): Proc("libvirtd", 250 / hostfacts.HZ, 1.0),
                     (12, 1200): Proc("libvirt_lxc", 30 / hostfacts.HZ, 1.0)}


def test_cpu_stat_usage() -> None:
    assert hostfacts.parse_cpu_stat_usage("usage_usec 2500000\nuser_usec 1\nsystem_usec 2\n") == 2.5
    assert hostfacts.parse_cpu_stat_usage("user_usec 1\n") is None


def test_container_groups_on_cgroup_v1(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "memory" / "machine").mkdir(parents=True)
    (root / "cpuacct" / "machine").mkdir(parents=True)
    (root / "cpuacct" / "machine" / "cpuacct.usage").write_text("2744840942279\n")
    (root / "cpuacct" / "lxc.payload.lx-1").mkdir()
    (root / "cpuacct" / "lxc.payload.lx-1" / "cpuacct.usage").write_text("500000000\n")
    (root / "cpuacct" / "lxc.monitor.lx-1").mkdir()  # the monitor: counted as a process, not here
    (root / "cpuacct" / "lxc.monitor.lx-1" / "cpuacct.usage").write_text("7\n")
    found = hostfacts.read_container_groups(root)
    assert found == {str(root / "cpuacct" / "machine"): pytest.approx(2744.840942279),
                     str(root / "cpuacct" / "lxc.payload.lx-1"): 0.5}


def test_container_groups_on_cgroup_v2(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "machine.slice").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "machine.slice" / "cpu.stat").write_text("usage_usec 3000000\nuser_usec 2000000\n")
    assert hostfacts.read_container_groups(root) == {str(root / "machine.slice"): 3.0}
    assert hostfacts.read_container_groups(tmp_path / "none") == {}


def sample(busy: float, steal: float = 0.0, procs: dict[tuple[int, int], Proc] | None = None,
           groups: dict[str, float] | None = None, own: float = 0.0, children: float = 0.0, at: float = 0.0) -> Sample:
    return Sample(at=at, cpu=CpuTimes(busy=busy, steal=steal, idle=0.0), procs=procs or {}, groups=groups or {},
                  own=own, children=children)


def test_split_by_owner() -> None:
    before = sample(100.0, steal=1.0, at=10.0, own=2.0, children=5.0, procs={
        (1, 1): Proc("libvirtd", 10.0, 4.0),       # alive throughout: own and children deltas
        (2, 1): Proc("libvirt_lxc", 1.0, 50.0),    # alive throughout: children (a container's init) not counted
        (3, 1): Proc("libvirt_lxc", 2.0, 0.0),     # exits in the window: lost, counted as exited
        (4, 9): Proc("lxc", 0.5, 0.0),             # pid 4 exits, and a new pid 4 starts (another starttime)
    }, groups={"/cg/machine": 1000.0, "/cg/lxc.payload.a": 3.0, "/cg/lxc.payload.gone": 1.0,
               "/cg/lxc.payload.again": 9.0})
    after = sample(130.0, steal=1.5, at=26.5, own=2.25, children=9.0, procs={
        (1, 1): Proc("libvirtd", 11.0, 4.5),
        (2, 1): Proc("libvirt_lxc", 1.25, 80.0),
        (4, 77): Proc("lxc", 0.25, 0.0),           # new: all of it
        (5, 80): Proc("dnsmasq", 0.5, 0.25),       # new, with its children
    }, groups={"/cg/machine": 1020.0, "/cg/lxc.payload.a": 4.0, "/cg/lxc.payload.new": 2.0,
               "/cg/lxc.payload.again": 0.5})
    figures = hostfacts.split(before, after, {"lxcforge": 3.0})
    owners = figures["owners"]
    assert isinstance(owners, dict)
    assert owners["libvirtd"] == pytest.approx(1.5)
    assert owners["libvirt_lxc"] == pytest.approx(0.25)
    assert owners["lxc"] == pytest.approx(0.25)
    assert owners["dnsmasq"] == pytest.approx(0.75)
    # machine +20, a +1, new +2, again made anew +0.5; gone: lost.
    assert owners["containers"] == pytest.approx(23.5)
    assert owners["lxcforge"] == 3.0
    # own 0.25, children 4.0 of which 3.0 charged to lxcforge.
    assert owners["bench"] == pytest.approx(1.25)
    assert owners["rest"] == pytest.approx(30.0 - (1.5 + 0.25 + 0.25 + 0.75 + 23.5 + 3.0 + 1.25))
    assert figures["host_cpu_s"] == 30.0
    assert figures["steal_s"] == 0.5
    assert figures["seconds"] == 16.5
    assert figures["exited"] == {"libvirt_lxc": 1, "lxc": 1}
    assert figures["groups_gone"] == 1
    assert sum(owners.values()) == pytest.approx(30.0)


def test_split_without_owners_is_all_rest_but_this_process() -> None:
    figures = hostfacts.split(sample(10.0, own=1.0), sample(12.0, own=1.5))
    assert figures["owners"] == {"containers": 0.0, "libvirtd": 0.0, "libvirt_lxc": 0.0, "dnsmasq": 0.0, "lxc": 0.0,
                                 "bench": 0.5, "rest": 1.5}


def test_format_split_per_container() -> None:
    window = {"seconds": 16.5, "host_cpu_s": 30.0, "steal_s": 0.5,
              "owners": {"containers": 25.0, "libvirtd": 2.0, "lxc": 0.0, "rest": 3.0}, "exited": {"libvirt_lxc": 4}}
    text = hostfacts.format_split(window, per=100)
    assert text.startswith("host 30.00 CPU-s (steal 0.50) in 16.5 s; per container (100): ")
    assert "containers 0.250, libvirtd 0.020, rest 0.030" in text
    assert "lxc" not in text.split("[")[0].replace("libvirt_lxc", "")  # a zero owner is left out
    assert "4 libvirt_lxc" in text


def test_spread_and_its_text() -> None:
    assert hostfacts.spread([3.0, 1.0, 2.0]) == {"n": 3, "min": 1.0, "median": 2.0, "max": 3.0}
    assert hostfacts.spread([4.0, 1.0, 2.0, 3.0])["median"] == 2.5
    assert hostfacts.spread([]) == {"n": 0, "min": None, "median": None, "max": None}
    assert hostfacts.fmt_spread([16.25, 15.31, 17.92]) == "16.2 s [15.3-17.9]"
    assert hostfacts.fmt_spread([0.2234], "s", 3) == "0.223 s"
    assert hostfacts.fmt_spread([1.5, 1.25], "x", 2) == "1.38x [1.25-1.50]"
    assert hostfacts.fmt_spread([]) == "-"
    assert hostfacts.ratio(3.0, 2.0) == 1.5
    assert hostfacts.ratio(3.0, 0.0) is None
    assert hostfacts.ratio(None, 2.0) is None


def test_parse_settings() -> None:
    assert hostfacts.parse_settings("auto,4,16") == ["auto", "4", "16"]
    assert hostfacts.parse_settings(" 8, 08,,4 ") == ["8", "4"]
    for bad in ("0", "-1", "x", "", "4,two"):
        with pytest.raises(ValueError):
            hostfacts.parse_settings(bad)
    with pytest.raises(ValueError):
        hostfacts.parse_settings("auto", allow_auto=False)


def test_round_order_alternates_two_and_rotates_three() -> None:
    assert [hostfacts.round_order(["lxcforge", "lxc"], i) for i in range(4)] == [
        ["lxcforge", "lxc"], ["lxc", "lxcforge"], ["lxcforge", "lxc"], ["lxc", "lxcforge"]]
    firsts = [hostfacts.round_order(["lxcforge", "lxc", "2013"], i)[0] for i in range(4)]
    assert firsts == ["lxcforge", "lxc", "2013", "lxcforge"]
    assert hostfacts.round_order([], 3) == []


def test_schedule_alternates_tools_and_reverses_settings_every_other_round() -> None:
    plan = hostfacts.schedule([("lxcforge", ["4", "8"]), ("lxc", ["2", "4"])], 3)
    assert plan == [
        [("lxcforge", "4"), ("lxcforge", "8"), ("lxc", "2"), ("lxc", "4")],
        [("lxc", "4"), ("lxc", "2"), ("lxcforge", "8"), ("lxcforge", "4")],
        [("lxcforge", "4"), ("lxcforge", "8"), ("lxc", "2"), ("lxc", "4")],
    ]
    # Every setting runs once per round.
    assert all(sorted(r) == sorted(plan[0]) for r in plan)
    assert hostfacts.schedule([("lxcforge", ["8"])], 0) == []


def test_best_setting_by_median_complete_first() -> None:
    figures = {"4": [20.0, 21.0, 30.0], "8": [19.0, 25.0, 26.0], "16": [18.0, 18.5, 40.0]}
    assert hostfacts.best_setting(figures) == "16"  # medians 21, 25, 18.5
    assert hostfacts.best_setting(figures, {"4": True, "8": True, "16": False}) == "4"
    assert hostfacts.best_setting(figures, {"4": False, "8": False, "16": False}) == "16"
    assert hostfacts.best_setting({"2": [5.0], "4": [5.0]}) == "2"  # a tie: the first listed
    assert hostfacts.best_setting({"2": []}) is None


def test_scale_settings_resolve_auto_and_sort() -> None:
    assert scale.lxcforge_settings("4,auto,16", default=8) == ["4", "8", "16"]
    assert scale.lxcforge_settings("4,auto,16", default=4) == ["4", "16"]
    assert scale.lxcforge_settings("1", default=8) == ["1"]
    assert scale.lxc_settings("8,2,4") == ["2", "4", "8"]
    with pytest.raises(ValueError):
        scale.lxc_settings("auto")


def scale_run(tool: str, setting: str, round_: int, ready: float, destroy: float = 3.0, complete: bool = True,
              host_cpu: float = 30.0) -> dict[str, object]:
    return {"round": round_, "position": 1, "tool": tool, "setting": setting, "ready_s": ready, "destroy_s": destroy,
            "answering": 100, "complete": complete,
            "cpu": {"ready": {"seconds": ready, "host_cpu_s": host_cpu, "steal_s": 0.5,
                              "owners": {"containers": 20.0, "libvirtd": 2.0, tool: 1.0, "rest": 7.0}}}}


def test_scale_summary_best_settings_and_ratios() -> None:
    runs = [
        scale_run("lxcforge", "4", 1, 18.0), scale_run("lxcforge", "8", 1, 16.0), scale_run("lxc", "4", 1, 24.0),
        scale_run("lxc", "2", 1, 30.0, complete=False), scale_run("2013", "serial", 1, 140.0, destroy=180.0),
        scale_run("lxc", "4", 2, 26.0), scale_run("lxc", "2", 2, 20.0), scale_run("lxcforge", "8", 2, 20.0),
        scale_run("lxcforge", "4", 2, 19.0), scale_run("2013", "serial", 2, 150.0, destroy=170.0),
    ]
    summary = scale.summarise(runs, 100)
    # lxcforge: medians 18.5 (-j 4) and 18.0 (-j 8); LXC -P 2 is faster (25.0) but one run was incomplete.
    assert summary["best"] == {"lxcforge": "8", "lxc": "4", "2013": "serial"}
    assert summary["sweep"]["lxcforge"]["8"]["ready_s"] == {"n": 2, "min": 16.0, "median": 18.0, "max": 20.0}
    assert summary["sweep"]["lxc"]["2"]["complete"] == 1
    assert summary["sweep"]["lxcforge"]["4"]["host_cpu_s_per_container"]["median"] == 0.3
    lxc = summary["ratios"]["lxc"]
    assert lxc["ready"] == pytest.approx(25.0 / 18.0, abs=1e-3)
    # Per round: 24/16 and 26/20.
    assert lxc["ready_per_round"] == {"n": 2, "min": 1.3, "median": 1.4, "max": 1.5}
    assert lxc["destroy"] == 1.0
    assert summary["ratios"]["2013"]["ready"] == pytest.approx(145.0 / 18.0, abs=1e-3)
    assert summary["ratio_ready_vs_lxc"] == lxc["ready"]
    assert summary["ratio_destroy"] == pytest.approx(175.0 / 3.0, abs=1e-3)
    assert summary["cpu_per_container_at_best"]["lxcforge"]["containers"] == 0.2
    assert summary["cpu_per_container_at_best"]["lxc"]["lxc"] == 0.01


def test_scale_summary_without_lxcforge_runs_has_no_ratios() -> None:
    summary = scale.summarise([scale_run("lxc", "4", 1, 24.0)], 100)
    assert summary["ratios"] == {} and "ratio_ready_vs_lxc" not in summary


def quoted_commands(script: str) -> list[list[str]]:
    """The arguments of every `bench/SCRIPT` command the README and BENCHMARKS.md quote."""
    found = []
    for doc in ("README.md", "BENCHMARKS.md"):
        for match in re.finditer(rf"bench/{script}((?: [^`#\n]*)?)", (REPO / doc).read_text()):
            found.append(shlex.split(match.group(1)))
    return found


def test_scale_accepts_every_command_the_docs_quote() -> None:
    commands = quoted_commands("scale.py")
    assert len(commands) >= 8
    for argv in commands:
        args = scale.build_parser().parse_args(argv)
        assert args.rounds >= 1
    args = scale.build_parser().parse_args(["--count", "50", "-j", "1", "--skip-2013"])
    assert (args.count, args.jobs, args.skip_2013, args.lxc) == (50, "1", True, False)
    args = scale.build_parser().parse_args(["--lxc", "--json"])
    assert args.json == "-" and args.lxc_parallel == "2,4,8"


def test_ops_levels_and_networks() -> None:
    assert ops.parse_levels("1000,500") == [0, 500, 1000]
    assert ops.parse_levels("0,0,10") == [0, 10]
    with pytest.raises(ValueError):
        ops.parse_levels("-5")
    assert ops.networks_needed(0, 20) == 1
    assert ops.networks_needed(980, 20) == 1
    assert ops.networks_needed(1000, 20) == 2
    args = ops.build_parser().parse_args([])
    assert (args.others, args.rounds, args.count, args.json) == ("0,500,1000", 3, 20, None)


def ops_record(level: str, round_: int, new: float, destroy: float, listed: float, info: float) -> dict[str, object]:
    cpu = {"seconds": new, "host_cpu_s": 2 * new, "steal_s": 0.0, "owners": {"libvirtd": new, "rest": new}}
    return {"level": level, "others": int(level.split()[0]), "round": round_,
            "new": {"wall_s": new, "exit": 0, "seconds": new - 0.1, "lease_p50_ms": 800.0, "p50_s": 1.0, "cpu": cpu},
            "list": {"wall_s": listed, "exit": 0, "listed": int(level.split()[0]) + 20, "cpu": cpu},
            "info": {"wall_s": info, "exit": 0, "cpu": cpu},
            "destroy": {"wall_s": destroy, "exit": 0, "seconds": destroy - 0.1, "cpu": cpu}}


def test_ops_summary_against_the_empty_host_and_targets() -> None:
    records = [ops_record("0", 1, 2.0, 1.0, 0.2, 0.15), ops_record("0", 2, 2.2, 1.2, 0.3, 0.17),
               ops_record("1000", 1, 2.6, 1.4, 0.9, 0.29), ops_record("1000", 2, 2.8, 1.8, 1.1, 0.25),
               ops_record("0 again", 1, 2.1, 1.1, 0.2, 0.16)]
    summary = ops.summarise(records)
    assert list(summary) == ["0", "1000", "0 again"]
    new = summary["1000"]["figures"]["new.wall_s"]
    assert (new["n"], new["min"], new["median"], new["max"]) == (2, 2.6, 2.7, 2.8)
    assert new["vs_0"] == pytest.approx(2.7 / 2.1, abs=1e-3)
    assert summary["0"]["figures"]["new.wall_s"]["vs_0"] == 1.0
    assert summary["1000"]["listed"] == 1020
    assert summary["1000"]["failed_rounds"] == 0
    assert summary["1000"]["cpu"]["new"]["libvirtd"] == 2.7
    rows = {row["figure"]: row for row in ops.targets(summary)}
    assert rows["new.wall_s"]["met"] is True            # 1.29x
    assert rows["destroy.wall_s"]["met"] is False       # 1.6 / 1.1 = 1.45x
    assert rows["list.wall_s"]["met"] is False          # 1.0 s: not under 1 s
    assert rows["info.wall_s"]["met"] is True           # 0.27 s
    assert {row["at"] for row in rows.values()} == {"1000"}


def test_ops_summary_counts_rounds_with_a_failed_command() -> None:
    failed = ops_record("0", 2, 2.0, 1.0, 0.2, 0.15)
    failed["info"]["exit"] = 1  # type: ignore[index]
    summary = ops.summarise([ops_record("0", 1, 2.0, 1.0, 0.2, 0.15), failed])
    assert summary["0"]["failed_rounds"] == 1
    assert any("1 of 2 rounds had a command fail" in line
               for line in ops.table_lines(summary, [], {"cpu_model": "x", "cores": 2, "kernel": "k"}, 20))


def test_json_to_stdout_leaves_standard_output_to_the_document() -> None:
    code = ("import json, subprocess, sys; from bench import hostfacts; stream = hostfacts.json_to_stdout(); "
            "print('noise'); subprocess.run(['echo', 'child noise']); "
            "stream.write(json.dumps({'a': 1})); stream.flush()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(done.stdout) == {"a": 1}
    assert "noise" in done.stderr and "child noise" in done.stderr


def test_ops_floor_line_compares_libvirt_alone_with_the_growth_new_is_allowed() -> None:
    records = [ops_record("0", 1, 2.0, 1.0, 0.2, 0.15), ops_record("1000", 1, 3.0, 1.0, 0.2, 0.15)]
    records[0]["alone"] = {"exit": 0, "started_s": 0.5, "leased_s": 1.0, "cpu": records[0]["new"]["cpu"]}
    records[1]["alone"] = {"exit": 0, "started_s": 1.0, "leased_s": 1.8, "cpu": records[1]["new"]["cpu"]}
    summary = ops.summarise(records)
    assert summary["1000"]["figures"]["alone.leased_s"]["vs_0"] == pytest.approx(1.8)
    lines = ops.table_lines(summary, [], {"cpu_model": "x", "cores": 2, "kernel": "k"}, 20)
    floor = [line for line in lines if line.startswith("floor at N=1000")]
    assert floor and "+0.80 s" in floor[0] and "1.80x" in floor[0] and "grow by 0.60 s" in floor[0]
    assert "it grew by +1.00 s, +0.20 s beyond libvirt alone's" in floor[0]  # new: 2.0 -> 3.0 s
    # Without --libvirt-alone: neither its rows nor the floor line.
    plain = ops.table_lines(ops.summarise([ops_record("0", 1, 2.0, 1.0, 0.2, 0.15),
                                           ops_record("1000", 1, 3.0, 1.0, 0.2, 0.15)]),
                            [], {"cpu_model": "x", "cores": 2, "kernel": "k"}, 20)
    assert not [line for line in plain if "libvirt alone" in line or line.startswith("floor")]


def test_libvirt_alone_reads_the_interface_and_counts_only_renewed_leases() -> None:
    xml = domain.domain_xml(domain.ContainerSpec("c1", "0" * 32, Path("/x"), "lxnet", "52:54:00:AB:cd:01",
                                                 idmap_offset=100000))
    assert libvirt_alone.interface_of("c1", xml) == libvirt_alone.Interface("c1", "lxnet", "52:54:00:ab:cd:01",
                                                                            100000)
    with pytest.raises(ValueError, match="c1: no network interface"):
        libvirt_alone.interface_of("c1", "<domain/>")
    before = {"a": 100, "b": 100}
    assert libvirt_alone.renewed(before, {"a": 100, "b": 160, "c": 50}) == {"b", "c"}


def test_ops_targets_at_the_largest_level_when_1000_was_not_measured() -> None:
    summary = ops.summarise([ops_record("0", 1, 2.0, 1.0, 0.2, 0.15), ops_record("300", 1, 2.0, 1.0, 0.2, 0.15)])
    assert {row["at"] for row in ops.targets(summary)} == {"300"}
    assert ops.targets({}) == []


@pytest.fixture(autouse=True)
def _signal_handlers() -> object:
    """The scripts' main() sets SIGINT and SIGTERM handlers: give the test run its own back."""
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class FakeResult:
    def __init__(self, stdout: str = "", returncode: int = 0, stderr: str = "") -> None:
        self.stdout, self.returncode, self.stderr = stdout, returncode, stderr


def test_scale_main_alternates_sweeps_writes_json_and_removes_its_networks(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    calls: list[tuple[str, ...]] = []
    runs: list[tuple[str, int | None]] = []

    def fake_lxcforge(*args: str, check: bool = True) -> FakeResult:
        calls.append(args)
        return FakeResult()

    def record(ready: float) -> dict[str, object]:
        return {"ready_s": ready, "destroy_s": 3.0, "answering": 10, "complete": True, "cpu": {}}

    def fake_lxcforge_run(store: Path, base: str, count: int, nets: list[str], jobs: int | None, *rest: object) -> dict:
        runs.append(("lxcforge", jobs))
        return record(10.0 + (jobs or 0))

    def fake_lxc_run(store: Path, base: str, count: int, net: str, bridge: str, systemd: bool, jobs: int,
                     owners: bool) -> dict:
        runs.append(("lxc", jobs))
        return record(20.0)

    monkeypatch.setattr(scale, "lxcforge", fake_lxcforge)
    monkeypatch.setattr(scale, "free_subnet", lambda prefix=24: "10.99.0.0/21")
    monkeypatch.setattr(scale.shutil, "which", lambda program: f"/usr/bin/{program}")  # LXC "installed"
    (tmp_path / "bases" / "b").mkdir(parents=True)
    monkeypatch.setattr(scale, "run_lxcforge", fake_lxcforge_run)
    monkeypatch.setattr(scale, "run_lxc", fake_lxc_run)
    output = tmp_path / "scale.json"
    status = scale.main(["--store", str(tmp_path), "--base", "b", "--count", "10", "--lxc", "--skip-2013",
                         "--jobs", "8,4", "--lxc-parallel", "2", "--rounds", "2", "--json", str(output),
                         "--no-owner-split"])
    assert status == 0
    assert runs == [("lxcforge", 4), ("lxcforge", 8), ("lxc", 2), ("lxc", 2), ("lxcforge", 8), ("lxcforge", 4)]
    document = json.loads(output.read_text())
    assert [(r["round"], r["position"], r["tool"], r["setting"]) for r in document["runs"]] == [
        (1, 1, "lxcforge", "4"), (1, 2, "lxcforge", "8"), (1, 3, "lxc", "2"),
        (2, 1, "lxc", "2"), (2, 2, "lxcforge", "8"), (2, 3, "lxcforge", "4")]
    assert document["summary"]["best"] == {"lxcforge": "4", "lxc": "2"}
    assert document["summary"]["ratio_ready_vs_lxc"] == pytest.approx(20.0 / 14.0, abs=1e-3)
    assert document["host"]["cores"] >= 1 and document["host"]["kernel"]
    created = [c for c in calls if "network" in c and "create" in c]
    removed = [c for c in calls if "network" in c and "rm" in c]
    assert len(created) == len(removed) == 3  # lxbench0 once, an LXC network per LXC run


def test_scale_main_interrupted_summarises_what_ran_and_cleans_up(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, ...]] = []
    done = 0

    def fake_run(*args: object) -> dict:
        nonlocal done
        done += 1
        if done == 2:
            raise KeyboardInterrupt
        return {"ready_s": 5.0, "destroy_s": 1.0, "answering": 10, "complete": True, "cpu": {}}

    monkeypatch.setattr(scale, "lxcforge", lambda *args, check=True: calls.append(args) or FakeResult())
    monkeypatch.setattr(scale, "free_subnet", lambda prefix=24: "10.99.0.0/21")
    (tmp_path / "bases" / "b").mkdir(parents=True)
    monkeypatch.setattr(scale, "run_lxcforge", fake_run)
    status = scale.main(["--store", str(tmp_path), "--base", "b", "--count", "10", "--skip-2013", "--jobs", "4,8",
                         "--json", "--no-owner-split"])
    assert status == 130
    assert ("--store", str(tmp_path), "network", "rm", "lxbench0") in calls
    out = capfd.readouterr()
    document = json.loads(out.out)
    assert document["interrupted"] is True and len(document["runs"]) == 1


class FakeLxcforge:
    """lxcforge's answers as ops.py reads them; every call recorded."""

    def __init__(self, interrupt_at: str | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.interrupt_at = interrupt_at

    def __call__(self, store: Path, *args: str) -> FakeResult:
        self.calls.append(args)
        if self.interrupt_at is not None and args[0] == self.interrupt_at:
            raise KeyboardInterrupt
        if args[0] == "new" and "--count" in args:
            count = int(args[args.index("--count") + 1])
            return FakeResult(json.dumps({"succeeded": count, "failed": [], "seconds": 1.5, "p50_seconds": 1.0,
                                          "phase_p50_ms": {"lease": 700.0}}))
        if args[0] == "new":  # the others, by name
            names = args[1:args.index("--network")]
            return FakeResult(json.dumps({"succeeded": len(names), "failed": []}))
        if args[0] == "list":
            return FakeResult(json.dumps([{}] * 3))
        if args[0] == "destroy":
            return FakeResult(json.dumps({"succeeded": 20, "seconds": 0.5, "parallel_seconds": 0.4}))
        return FakeResult("{}")


def fake_store(tmp_path: Path) -> object:
    import contextlib

    @contextlib.contextmanager
    def minimal_store(tag: str, subnet_prefix: int = 24):  # type: ignore[no-untyped-def]
        yield tmp_path / "store", "lxfo-test"
    return minimal_store


def test_ops_main_measures_each_level_then_again_and_cleans_up(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    import signal

    fake = FakeLxcforge()
    monkeypatch.setattr(ops, "lxcforge", fake)
    monkeypatch.setattr(ops, "minimal_store", fake_store(tmp_path))
    output = tmp_path / "ops.json"
    assert ops.main(["--others", "3", "--rounds", "2", "--json", str(output), "--no-owner-split"]) == 0
    commands = [c[0] for c in fake.calls]
    # N=0: 2 rounds; grow to 3; N=3: 2 rounds; the 3 go; N=0 again: 2 rounds; clean-up.
    assert commands == [*["new", "list", "info", "destroy"] * 2, "new", *["new", "list", "info", "destroy"] * 2,
                        "destroy", *["new", "list", "info", "destroy"] * 2, "destroy", "gc"]
    grown = fake.calls[8]
    prefix = json.loads(output.read_text())["prefix"]
    assert [a for a in grown if a.startswith(prefix)] == [f"{prefix}o1", f"{prefix}o2", f"{prefix}o3"]
    assert fake.calls[-2] == ("destroy", "--all", "--missing-ok")
    document = json.loads(output.read_text())
    assert [r["level"] for r in document["records"]] == ["0", "0", "3", "3", "0 again", "0 again"]
    assert document["records"][0]["new"]["lease_p50_ms"] == 700.0
    assert document["records"][0]["destroy"]["seconds"] == 0.5
    assert document["summary"]["3"]["figures"]["new.wall_s"]["n"] == 2
    assert [t["others"] for t in document["others_destroyed"]] == [3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ops_main_cleans_up_on_ctrl_c(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import signal

    fake = FakeLxcforge(interrupt_at="info")
    monkeypatch.setattr(ops, "lxcforge", fake)
    monkeypatch.setattr(ops, "minimal_store", fake_store(tmp_path))
    assert ops.main(["--others", "0", "--no-owner-split"]) == 130
    commands = [c[0] for c in fake.calls]
    # The round's own destroy still runs, then the clean-up of everything.
    assert commands == ["new", "list", "info", "destroy", "destroy", "gc"]
    assert fake.calls[-2] == ("destroy", "--all", "--missing-ok")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_bootcpu_reads_perf_samples_by_command() -> None:
    from bench import bootcpu

    report = "# Overhead  Samples  Command\n#\n    80.00%   998  swapper\n    10.02%   125  systemd\n" \
             "     0.40%     5  kworker/u8:1-bt\n     0.08%     1  (d-logind)\n"
    found = bootcpu.parse_report(report)
    assert found == {"systemd": 125 * 1000 / bootcpu.PERF_HZ, "kworker/u8:1-bt": 5 * 1000 / bootcpu.PERF_HZ,
                     "(d-logind)": 1000 / bootcpu.PERF_HZ}  # idle (swapper) left out


def test_scale_refuses_a_missing_base_or_lxc_before_any_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(scale, "lxcforge", lambda *args, check=True: calls.append(args) or FakeResult())
    monkeypatch.setattr(scale, "run_lxcforge", lambda *args: pytest.fail("ran without a base"))
    with pytest.raises(SystemExit, match="no base nosuch"):
        scale.main(["--store", str(tmp_path), "--base", "nosuch", "--count", "2", "--skip-2013"])
    (tmp_path / "bases" / "b").mkdir(parents=True)
    monkeypatch.setattr(scale.shutil, "which", lambda program: None)
    with pytest.raises(SystemExit, match="--lxc needs LXC"):
        scale.main(["--store", str(tmp_path), "--base", "b", "--count", "2", "--skip-2013", "--lxc"])
    assert not any("network" in call for call in calls)  # nothing made


def test_wait_lease_helpers_waits_while_the_helper_runs_and_returns_once_quiet(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "comm").write_text("dnsmasq\n")
    (proc / "self").mkdir()
    assert not hostfacts.lease_helper_running(proc)
    assert hostfacts.wait_lease_helpers(timeout=5, quiet=0.1, proc=proc) < 1
    (proc / "8").mkdir()
    (proc / "8" / "comm").write_text("libvirt_leasesh\n")  # the kernel cuts comm to 15 characters
    assert hostfacts.lease_helper_running(proc)
    assert hostfacts.wait_lease_helpers(timeout=0.4, quiet=0.1, proc=proc) >= 0.4


def test_wait_idle_waits_for_a_quiet_window_of_the_whole_host() -> None:
    # busy, steal, idle in seconds of all cores: two windows mostly busy, then a quiet one.
    readings = iter([CpuTimes(0, 0, 0), CpuTimes(1.8, 0, 0.2), CpuTimes(3.0, 0, 1.0), CpuTimes(3.1, 0, 2.9)])
    slept: list[float] = []
    waited, share = hostfacts.wait_idle(max_busy=0.2, window=1.0, read=lambda: next(readings), sleep=slept.append)
    assert (waited, slept) == (3.0, [1.0, 1.0, 1.0]) and share == pytest.approx(0.05)
    assert hostfacts.busy_fraction(CpuTimes(0, 0, 0), CpuTimes(1, 1, 2)) == pytest.approx(0.25)
    # It gives up after timeout, saying how busy the host still was.
    always = iter([CpuTimes(i, 0, 0) for i in range(10)])
    assert hostfacts.wait_idle(window=1.0, timeout=2.0, read=lambda: next(always), sleep=lambda _s: None) == (2.0, 1.0)
