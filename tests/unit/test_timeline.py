import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lxcforge import timeline
from lxcforge.timeline import ContainerRun, HostFacts, Run, Step

Edit = Callable[[list[str]], list[str]]  # a good file's lines -> a broken file's
START = HostFacts("Intel(R) Xeon(R) Processor", 2, 0.2, 0.97, 1.76, 23 * 1024**3, 24 * 1024**3)
END = HostFacts("Intel(R) Xeon(R) Processor", 2, 3.5, 1.25, 1.8, 22 * 1024**3, 24 * 1024**3)


def hand_run() -> Run:
    """Three containers ready after 3, 4 and 6 s (b with a gap between two steps), one failed."""
    return Run("new", 100.0, 110.0, START, END, (
        ContainerRun("a", True, None, 100.0, 103.0,
                     (Step("snapshot", 100.0, 100.5), Step("start", 100.5, 101.0), Step("lease", 101.0, 103.0))),
        ContainerRun("b", True, None, 101.0, 105.0,
                     (Step("snapshot", 101.0, 101.25), Step("start", 101.5, 102.5), Step("lease", 102.5, 105.0))),
        ContainerRun("c", True, None, 102.0, 108.0,
                     (Step("snapshot", 102.0, 102.75), Step("start", 102.75, 104.0), Step("lease", 104.0, 108.0))),
        ContainerRun("d", False, "no lease within 30 s", 103.0, 109.0, (Step("snapshot", 103.0, 103.1),)),
    ), ("lxcforge", "new", "--count", "4", "--prefix", "x"))


def awkward_run() -> Run:
    """Values a careless format would lose: float digits, commas, quotes, newlines, no steps."""
    return Run("new", 1_733_130_000.123456789, 1_733_130_025.1 + 1e-7, START, END, (
        ContainerRun("web1", True, None, 1_733_130_000.2, 1_733_130_003.3000001,
                     (Step("snapshot", 1_733_130_000.2, 1_733_130_000.212), Step("lease", 1_733_130_001.0, 0.1 + 0.2))),
        ContainerRun("web2", False, 'define failed: "x", then\nrollback \u2713', 1_733_130_000.25, 1_733_130_000.5, ()),
        ContainerRun("web3", False, None, 1.0, 2.0, (Step("start", 1.0, 1.5), Step("start", 1.5, 2.0))),
    ), ("lxcforge", "new", "web1", "web2", "--memory", "1G,2"), "after, \"tuned\"")


@pytest.mark.parametrize("name", ["run.jsonl", "run.json", "run.ndjson", "run.csv", "RUN.CSV"])
@pytest.mark.parametrize("make", [hand_run, awkward_run])
def test_round_trip(tmp_path: Path, name: str, make: Callable[[], Run]) -> None:
    run = make()
    path = tmp_path / name
    timeline.write(path, run)
    assert timeline.read(path) == run
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no partial file left


def test_jsonl_records(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    timeline.write(path, hand_run())
    first, *containers, last = [json.loads(line) for line in path.read_text().splitlines()]
    assert first == {"type": "run", "version": 1, "action": "new", "started": 100.0,
                     "command": ["lxcforge", "new", "--count", "4", "--prefix", "x"], "label": None,
                     "host": {"cpu_model": "Intel(R) Xeon(R) Processor", "cores": 2, "load1": 0.2, "load5": 0.97,
                              "load15": 1.76, "mem_available_bytes": 23 * 1024**3, "mem_total_bytes": 24 * 1024**3}}
    assert containers[3] == {"type": "container", "name": "d", "ok": False, "error": "no lease within 30 s",
                             "start": 103.0, "end": 109.0,
                             "steps": [{"name": "snapshot", "start": 103.0, "end": 103.1}]}
    assert last["type"] == "end" and last["ended"] == 110.0 and last["seconds"] == 10.0
    assert last["host"]["load1"] == 3.5


def test_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    timeline.write(path, hand_run())
    lines = path.read_text().splitlines()
    assert lines[0] == "action,name,ok,error,step,start,end,facts"
    assert lines[1] == 'new,,,,run,100.0,110.0,"{""command"": [""lxcforge"", ""new"", ""--count"", ""4"", ' \
                       '""--prefix"", ""x""], ""label"": null}"'
    assert lines[2].startswith('new,,,,host.start,100.0,,"{""cpu_model"": ')
    assert lines[3:6] == ["new,a,true,,,100.0,103.0,", "new,a,true,,snapshot,100.0,100.5,",
                          "new,a,true,,start,100.5,101.0,"]
    assert "new,d,false,no lease within 30 s,snapshot,103.0,103.1," in lines
    assert lines[-1].startswith("new,,,,host.end,,110.0,")


def test_summary_of_a_hand_computed_run() -> None:
    run = hand_run()
    assert timeline.ready_times(run) == [3.0, 5.0, 8.0]
    figures = timeline.summary(run)
    assert {k: figures[k] for k in ("action", "label", "total", "succeeded", "seconds", "p50_seconds")} == {
        "action": "new", "label": None, "total": 4, "succeeded": 3, "seconds": 10.0, "p50_seconds": 4.0}
    assert figures["failed"] == [{"name": "d", "error": "no lease within 30 s"}]
    assert figures["per_second"] == pytest.approx(0.3)
    # Inclusive percentiles of 3, 4, 6: the 95th lies 90% of the way from 4 to 6.
    assert figures["p95_seconds"] == pytest.approx(5.8)
    # Medians of the succeeded containers' steps, in the order first met; the failed d's
    # 100 ms snapshot is not among them.
    assert figures["phase_p50_ms"] == {"snapshot": 500.0, "start": 1000.0, "lease": 2500.0}
    assert timeline.summary_line(run) == ("new: 3 of 4 in 10.0 s (0.3/s), p50 4.0 s, p95 5.8 s; "
                                          "phases p50: snapshot 500 ms, start 1000 ms, lease 2500 ms")


def test_summary_of_nothing_and_of_repeated_steps() -> None:
    empty = Run("destroy", 5.0, 5.0, START, END, ())
    figures = timeline.summary(empty)
    assert (figures["total"], figures["per_second"], figures["p50_seconds"]) == (0, 0.0, None)
    assert figures["phase_p50_ms"] == {}
    assert timeline.summary_line(empty) == "destroy: 0 of 0 in 0.0 s (0.0/s)"
    assert timeline.step_seconds(awkward_run().containers[2]) == {"start": 1.0}


def test_host_facts_from_a_fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) "
                                      "Gold 6230 CPU @ 2.10GHz\n\nprocessor\t: 1\nmodel name\t: something else\n")
    (tmp_path / "loadavg").write_text("0.20 0.97 1.76 1/133 406791\n")
    (tmp_path / "meminfo").write_text("MemTotal:       24683584 kB\nMemFree:         1000 kB\n"
                                      "MemAvailable:   23988240 kB\n")
    monkeypatch.setattr("os.cpu_count", lambda: 40)
    assert timeline.host_facts(tmp_path) == HostFacts("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", 40, 0.2, 0.97, 1.76,
                                                      23988240 * 1024, 24683584 * 1024)


def test_host_facts_tell_generic_virtual_cpus_apart(tmp_path: Path) -> None:
    # Two hosts whose VMs both say "Intel(R) Xeon(R) Processor" but run different CPUs; the
    # clock, which a host that scales it reports differently at each reading, is left out.
    def cpuinfo(model: str, mhz: str) -> str:
        return (f"processor\t: 0\ncpu family\t: 6\nmodel\t\t: {model}\nmodel name\t: Intel(R) Xeon(R) "
                f"Processor\nstepping\t: 1\ncpu MHz\t\t: {mhz}\n")

    seen = []
    for model, mhz in (("167", "2599.998"), ("167", "1200.000"), ("85", "2599.998")):
        (tmp_path / "cpuinfo").write_text(cpuinfo(model, mhz))
        seen.append(timeline.host_facts(tmp_path).cpu_model)
    assert seen[0] == "Intel(R) Xeon(R) Processor (family 6 model 167 stepping 1)"
    assert seen[0] == seen[1] != seen[2]
    # Where there is no x86 signature (arm64, ppc64le: "model" alone), the name stays as it is.
    (tmp_path / "cpuinfo").write_text("processor\t: 0\ncpu\t\t: POWER9 (raw), altivec supported\nmodel\t\t: "
                                      "9006-22P\n")
    assert timeline.host_facts(tmp_path).cpu_model == "POWER9 (raw), altivec supported"


def test_host_facts_without_proc_are_unknown_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "loadavg").write_text("garbage\n")
    facts = timeline.host_facts(tmp_path)
    assert (facts.cpu_model, facts.load1, facts.load15, facts.mem_available_bytes) == ("unknown", 0.0, 0.0, 0)


def test_host_facts_of_this_host() -> None:
    facts = timeline.host_facts()
    assert facts.cores >= 1 and facts.mem_total_bytes >= facts.mem_available_bytes > 0


@pytest.mark.parametrize("name", ["run.txt", "run", "run.jsonl.gz", "run.png"])
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"use one of \.jsonl, \.json, \.ndjson, \.csv"):
        timeline.write(tmp_path / name, hand_run())
    assert list(tmp_path.iterdir()) == []
    (tmp_path / name).write_text("{}\n")
    with pytest.raises(ValueError, match="use one of"):
        timeline.read(tmp_path / name)


def _jsonl_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "good.jsonl"
    timeline.write(path, hand_run())
    return path.read_text().splitlines()


@pytest.mark.parametrize(("change", "error"), [
    (lambda lines: lines[:1] + ["{not json"] + lines[2:], r"run\.jsonl:2: not JSON"),
    (lambda lines: lines[:-1], r"run\.jsonl: no 'end' record"),
    (lambda lines: lines[1:], r"run\.jsonl:1: the first record is not of type 'run'"),
    (lambda lines: [], r"run\.jsonl: empty"),
    (lambda lines: [lines[0].replace('"version": 1', '"version": 2'), *lines[1:]], r":1: version 2"),
    (lambda lines: [*lines[:3], lines[3].replace('"start": 102.0', '"begin": 102.0'), *lines[4:]],
     r"run\.jsonl:4: no 'start'"),
    (lambda lines: [*lines[:2], lines[2].replace('"ok": true', '"ok": "yes"'), *lines[3:]],
     r"run\.jsonl:3: 'ok' is not true or false: 'yes'"),
    (lambda lines: [*lines[:2], lines[2].replace('"end": 105.0', '"end": "soon"'), *lines[3:]],
     r"run\.jsonl:3: 'end' is not a number"),
    (lambda lines: [*lines[:2], "[1, 2]", *lines[2:]], r"run\.jsonl:3: not a JSON object"),
    (lambda lines: [*lines[:-1], lines[-1].replace('"cores": 2', '"cores": 2.5')],
     r"run\.jsonl:6: 'cores' is not a whole number"),
    (lambda lines: [*lines[:2], lines[-1], *lines[2:]], r"run\.jsonl:3: a record of type 'end' where a 'container'"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, change: Edit, error: str) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("".join(line + "\n" for line in change(_jsonl_lines(tmp_path))))
    with pytest.raises(ValueError, match=error):
        timeline.read(path)


def _csv_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "good.csv"
    timeline.write(path, hand_run())
    return path.read_text().splitlines()


@pytest.mark.parametrize(("change", "error"), [
    (lambda lines: ["name,start,end", *lines[1:]], r"run\.csv:1: the header is not action,name"),
    (lambda lines: [], r"run\.csv:1: the header"),
    (lambda lines: lines[:-1], r"run\.csv: no 'host.end' row"),
    (lambda lines: [*lines[:4], lines[4].replace("100.5", "half past"), *lines[5:]],
     r"run\.csv:5: 'end' is not a number: 'half past'"),
    (lambda lines: [*lines[:3], *lines[4:]], r"run\.csv:4: a step of a not after its container's row"),
    (lambda lines: [*lines[:3], lines[3].replace(",true,", ",maybe,"), *lines[4:]],
     r"run\.csv:4: 'ok' is not true or false: 'maybe'"),
    (lambda lines: [*lines[:3], "new,a,true", *lines[3:]], r"run\.csv:4: 3 columns, not 8"),
    (lambda lines: [*lines[:3], "new,,,,lunch,1.0,2.0,", *lines[3:]], r"run\.csv:4: a row without a container's name"),
    (lambda lines: [*lines[:2], lines[2].replace('"{""cpu', '"{cpu'), *lines[3:]], r"run\.csv:3: 'facts' is not JSON"),
])
def test_malformed_csv_names_file_and_line(tmp_path: Path, change: Edit, error: str) -> None:
    path = tmp_path / "run.csv"
    path.write_text("".join(line + "\n" for line in change(_csv_lines(tmp_path))))
    with pytest.raises(ValueError, match=error):
        timeline.read(path)


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    timeline.write(path, hand_run())
    before = path.read_bytes()
    broken = Run("new", 1.0, float("nan"), START, END, ())
    with pytest.raises(ValueError):
        timeline.write(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.jsonl"]
