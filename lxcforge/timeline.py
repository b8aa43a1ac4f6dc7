"""A bulk command's timings as data: when each container's steps began and ended, and the
host it ran on, written to and read from JSON lines or CSV; and the figures derived from them.
Times are wall-clock seconds since the epoch, so runs on different hosts line up by date.

JSON lines (.jsonl, .json, .ndjson): a "run" record (version, action, started, command,
label, host), a "container" record each (name, ok, error, start, end, steps: [{name, start,
end}]), an "end" record (ended, seconds, host). CSV (.csv), for spreadsheets: columns
action,name,ok,error,step,start,end,facts; a row per container with an empty step (its whole
span), then a row per step; and three rows without a name: "run" (started, ended; facts:
command and label), "host.start" and "host.end" (facts: the host, as JSON).

Pure and stdlib-only (cheap to import); plot.py draws these records."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)
CSV_COLUMNS = ("action", "name", "ok", "error", "step", "start", "end", "facts")
# CSV rows that are not a container's (their name column is empty; a container's never is).
RUN_ROW, HOST_START_ROW, HOST_END_ROW = "run", "host.start", "host.end"


@dataclass(frozen=True)
class Step:
    name: str
    start: float  # wall clock, seconds since the epoch
    end: float


@dataclass(frozen=True)
class ContainerRun:
    name: str
    ok: bool
    error: str | None
    start: float
    end: float  # ready (ok), or given up on
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class HostFacts:
    cpu_model: str
    cores: int
    load1: float
    load5: float
    load15: float
    mem_available_bytes: int
    mem_total_bytes: int


@dataclass(frozen=True)
class Run:
    action: str
    started: float
    ended: float
    host_start: HostFacts
    host_end: HostFacts
    containers: tuple[ContainerRun, ...]
    command: tuple[str, ...] = ()
    label: str | None = None


# -- the host ------------------------------------------------------------------------------------
def host_facts(proc: Path = Path("/proc")) -> HostFacts:
    """CPU, load and memory now. What cannot be read is "unknown" or 0: a record of timings
    is no reason for a command to fail."""
    cpuinfo = _fields(_read(proc / "cpuinfo"))
    meminfo = _fields(_read(proc / "meminfo"))
    loads = _read(proc / "loadavg").split()[:3]
    load1, load5, load15 = (_float(v) for v in loads + ["0"] * (3 - len(loads)))
    # x86 says "model name"; arm64 and others say one of the rest, or nothing.
    model = next((cpuinfo[k] for k in ("model name", "Hardware", "Processor", "cpu model", "cpu") if cpuinfo.get(k)),
                 "unknown")
    # Virtual machines often show a generic name ("Intel(R) Xeon(R) Processor") for CPUs of
    # different generations and speeds: the x86 signature tells those hosts apart. (Not the
    # clock: on hosts that scale it, cpuinfo's figure changes from one reading to the next.)
    if cpuinfo.get("cpu family") and cpuinfo.get("model"):
        signature = f"family {cpuinfo['cpu family']} model {cpuinfo['model']}"
        if cpuinfo.get("stepping"):
            signature += f" stepping {cpuinfo['stepping']}"
        model = f"{model} ({signature})" if model != "unknown" else f"x86 ({signature})"
    return HostFacts(
        cpu_model=model,
        cores=os.cpu_count() or 0,
        load1=load1,
        load5=load5,
        load15=load15,
        mem_available_bytes=_kilobytes(meminfo.get("MemAvailable", "")),
        mem_total_bytes=_kilobytes(meminfo.get("MemTotal", "")),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _fields(text: str) -> dict[str, str]:
    """'key : value' lines; the first of a repeated key wins (cpuinfo repeats per CPU)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(":")
        if found:
            result.setdefault(key.strip(), value.strip())
    return result


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _kilobytes(value: str) -> int:
    # /proc/meminfo: "24683584 kB" (kibibytes, whatever the unit's spelling).
    try:
        return int(value.split()[0]) * 1024
    except (IndexError, ValueError):
        return 0


# -- derived figures -----------------------------------------------------------------------------
def ready_times(run: Run) -> list[float]:
    """Seconds from the run's start to each succeeded container's end, sorted."""
    return sorted(c.end - run.started for c in run.containers if c.ok)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile, as `lxcforge new` prints it (inclusive method; one value is its
    own percentile, none has none)."""
    import statistics  # 3.5 ms (decimal, fractions, random): only for those who ask for figures

    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _median(values: Sequence[float]) -> float:
    ordered, middle = sorted(values), len(values) // 2
    return ordered[middle] if len(values) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def step_seconds(container: ContainerRun) -> dict[str, float]:
    """Seconds in each step, by name, in the order first met; a repeated step adds up."""
    result: dict[str, float] = {}
    for step in container.steps:
        result[step.name] = result.get(step.name, 0.0) + (step.end - step.start)
    return result


def summary(run: Run) -> dict[str, Any]:
    """The figures of lxcforge's summary line, unrounded. Per-container and per-step figures
    are of the succeeded containers (as `lxcforge new` reports them); steps in the order met."""
    succeeded = [c for c in run.containers if c.ok]
    seconds = run.ended - run.started
    per_step: dict[str, list[float]] = {}
    for container in succeeded:
        for name, spent in step_seconds(container).items():
            per_step.setdefault(name, []).append(spent)
    durations = [c.end - c.start for c in succeeded]
    return {
        "action": run.action,
        "label": run.label,
        "total": len(run.containers),
        "succeeded": len(succeeded),
        "failed": [{"name": c.name, "error": c.error} for c in run.containers if not c.ok],
        "seconds": seconds,
        "per_second": len(succeeded) / seconds if seconds > 0 else 0.0,
        "p50_seconds": percentile(durations, 50),
        "p95_seconds": percentile(durations, 95),
        "phase_p50_ms": {name: _median(values) * 1000 for name, values in per_step.items()},
    }


def summary_line(run: Run) -> str:
    """'new: 98 of 100 in 25.1 s (3.9/s), p50 3.2 s, p95 5.0 s; phases p50: snapshot 12 ms, ...'"""
    figures = summary(run)
    line = (f"{run.action}: {figures['succeeded']} of {figures['total']} in {figures['seconds']:.1f} s "
            f"({figures['per_second']:.1f}/s)")
    if figures["p50_seconds"] is not None:
        line += f", p50 {duration_text(figures['p50_seconds'])}, p95 {duration_text(figures['p95_seconds'])}"
    if figures["phase_p50_ms"]:
        line += "; phases p50: " + ", ".join(f"{k} {v:.0f} ms" for k, v in figures["phase_p50_ms"].items())
    return line


def duration_text(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


# -- files ---------------------------------------------------------------------------------------
def check_format(path: Path) -> None:
    """Raise ValueError, before any work, for a file name whose format is not known."""
    _format(path)


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    accepted = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES)
    raise ValueError(f"{path}: cannot tell the format of timings from {suffix or 'no extension'!r}; "
                     f"use one of {accepted}")


def write(path: Path, run: Run) -> None:
    """Write run to path, as JSON lines (.jsonl, .json, .ndjson) or CSV (.csv): whole or
    not at all (a temporary file beside it, renamed over it)."""
    text = _jsonl(run) if _format(path) == "jsonl" else _csv(run)
    write_whole(path, text.encode())


def write_whole(path: Path, data: bytes) -> None:
    """Write data to path whole or not at all: a reader sees the old file or the new one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def read(path: Path) -> Run:
    """The run in path (as write() left it); ValueError naming the file and line if it is not one."""
    fmt = _format(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}): not a record of lxcforge's timings") from None
    return _from_jsonl(path, text) if fmt == "jsonl" else _from_csv(path, text)


def _dumps(value: object) -> str:
    # Plain JSON only: a NaN or an infinity would make a file other readers refuse.
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _host(facts: HostFacts) -> dict[str, Any]:
    return dataclasses.asdict(facts)


def _jsonl(run: Run) -> str:
    records: list[dict[str, Any]] = [
        {"type": "run", "version": VERSION, "action": run.action, "started": run.started,
         "command": list(run.command), "label": run.label, "host": _host(run.host_start)},
    ]
    for c in run.containers:
        records.append({"type": "container", "name": c.name, "ok": c.ok, "error": c.error, "start": c.start,
                        "end": c.end, "steps": [{"name": s.name, "start": s.start, "end": s.end} for s in c.steps]})
    records.append({"type": "end", "ended": run.ended, "seconds": run.ended - run.started,
                    "host": _host(run.host_end)})
    return "".join(_dumps(record) + "\n" for record in records)


def _csv(run: Run) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow([run.action, "", "", "", RUN_ROW, repr(run.started), repr(run.ended),
                     _dumps({"command": list(run.command), "label": run.label})])
    writer.writerow([run.action, "", "", "", HOST_START_ROW, repr(run.started), "", _dumps(_host(run.host_start))])
    for c in run.containers:
        ok, error = "true" if c.ok else "false", c.error or ""
        # A row for the container as a whole (no step), then a row per step.
        writer.writerow([run.action, c.name, ok, error, "", repr(c.start), repr(c.end), ""])
        for s in c.steps:
            if not s.name:
                raise ValueError(f"{c.name}: a step without a name cannot be written to CSV")
            writer.writerow([run.action, c.name, ok, error, s.name, repr(s.start), repr(s.end), ""])
    writer.writerow([run.action, "", "", "", HOST_END_ROW, "", repr(run.ended), _dumps(_host(run.host_end))])
    return buffer.getvalue()


class _Fields:
    """Typed access to one record's fields; every failure names the file and line."""

    def __init__(self, where: str, record: Mapping[str, Any]) -> None:
        self.where = where
        self.record = record

    def fail(self, problem: str) -> ValueError:
        return ValueError(f"{self.where}: {problem}")

    def get(self, key: str) -> Any:
        if key not in self.record:
            raise self.fail(f"no {key!r}")
        return self.record[key]

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            raise self.fail(f"{key!r} is not a string: {value!r}")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.record.get(key) is None else self.text(key)

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.fail(f"{key!r} is not true or false: {value!r}")
        return value

    def number(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(f"{key!r} is not a number: {value!r}")
        return float(value)

    def whole(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key!r} is not a whole number: {value!r}")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{key!r} is not a list of strings: {value!r}")
        return tuple(value)

    def inner(self, key: str) -> _Fields:
        """The JSON object under key, e.g. host facts."""
        value = self.get(key)
        if not isinstance(value, dict):
            raise self.fail(f"{key!r} is not a JSON object: {value!r}")
        return _Fields(self.where, value)

    def host(self, key: str) -> HostFacts:
        facts = self.inner(key)
        return HostFacts(cpu_model=facts.text("cpu_model"), cores=facts.whole("cores"), load1=facts.number("load1"),
                         load5=facts.number("load5"), load15=facts.number("load15"),
                         mem_available_bytes=facts.whole("mem_available_bytes"),
                         mem_total_bytes=facts.whole("mem_total_bytes"))

    def steps(self, key: str) -> tuple[Step, ...]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(f"{key!r} is not a list of objects: {value!r}")
        return tuple(Step(s.text("name"), s.number("start"), s.number("end"))
                     for s in (_Fields(self.where, v) for v in value))


def _json_records(path: Path, text: str) -> Iterator[_Fields]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: not a JSON object")
        yield _Fields(f"{path}:{number}", record)


def _from_jsonl(path: Path, text: str) -> Run:
    records = list(_json_records(path, text))
    if not records:
        raise ValueError(f"{path}: empty, not a record of lxcforge's timings")
    head, *body = records
    if head.record.get("type") != "run":
        raise head.fail("the first record is not of type 'run': not a record of lxcforge's timings")
    version = head.record.get("version", VERSION)
    if version != VERSION:
        raise head.fail(f"version {version!r} of the timings format; this lxcforge reads version {VERSION}")
    if not body or body[-1].record.get("type") != "end":
        raise ValueError(f"{path}: no 'end' record on the last line (the file is cut short)")
    *middle, tail = body
    for record in middle:
        if record.record.get("type") != "container":
            raise record.fail(f"a record of type {record.record.get('type')!r} where a 'container' was expected")
    containers = tuple(ContainerRun(r.text("name"), r.flag("ok"), r.optional_text("error"), r.number("start"),
                                    r.number("end"), r.steps("steps")) for r in middle)
    return Run(action=head.text("action"), started=head.number("started"), ended=tail.number("ended"),
               host_start=head.host("host"), host_end=tail.host("host"), containers=containers,
               command=head.texts("command"), label=head.optional_text("label"))


def _from_csv(path: Path, text: str) -> Run:
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None or tuple(header) != CSV_COLUMNS:
        raise ValueError(f"{path}:1: the header is not {','.join(CSV_COLUMNS)}: not a record of lxcforge's timings")
    special: dict[str, _Fields] = {}
    containers: list[tuple[_Fields, list[Step]]] = []
    try:
        for row in rows:
            where = f"{path}:{rows.line_num}"
            if not row:
                continue
            if len(row) != len(CSV_COLUMNS):
                raise ValueError(f"{where}: {len(row)} columns, not {len(CSV_COLUMNS)}")
            cells = dict(zip(CSV_COLUMNS, row, strict=True))
            fields = _Fields(where, _csv_record(where, cells))
            if not cells["name"]:
                if cells["step"] not in (RUN_ROW, HOST_START_ROW, HOST_END_ROW) or cells["step"] in special:
                    raise fields.fail(f"a row without a container's name and with step {cells['step']!r}")
                special[cells["step"]] = fields
            elif not cells["step"]:
                containers.append((fields, []))
            elif not containers or containers[-1][0].record["name"] != cells["name"]:
                raise fields.fail(f"a step of {cells['name']} not after its container's row (the one without a step)")
            else:
                containers[-1][1].append(Step(fields.text("step"), fields.number("start"), fields.number("end")))
    except csv.Error as exc:
        raise ValueError(f"{path}:{rows.line_num}: not CSV: {exc}") from None
    for kind in (RUN_ROW, HOST_START_ROW, HOST_END_ROW):
        if kind not in special:
            raise ValueError(f"{path}: no {kind!r} row (the file is cut short, or not lxcforge's timings)")
    head, extra = special[RUN_ROW], special[RUN_ROW].inner("facts")
    return Run(action=head.text("action"), started=head.number("start"), ended=head.number("end"),
               host_start=special[HOST_START_ROW].host("facts"), host_end=special[HOST_END_ROW].host("facts"),
               containers=tuple(ContainerRun(f.text("name"), f.flag("ok"), f.optional_text("error"),
                                             f.number("start"), f.number("end"), tuple(steps))
                                for f, steps in containers),
               command=extra.texts("command"), label=extra.optional_text("label"))


def _csv_record(where: str, cells: dict[str, str]) -> dict[str, Any]:
    """A CSV row's cells as the JSON types _Fields checks: numbers, booleans, None, facts."""
    record: dict[str, Any] = {"action": cells["action"], "name": cells["name"], "step": cells["step"],
                              "error": cells["error"] or None}
    record["ok"] = {"true": True, "false": False}.get(cells["ok"], cells["ok"])
    for key in ("start", "end"):
        if cells[key]:
            try:
                record[key] = float(cells[key])
            except ValueError:
                record[key] = cells[key]  # refused, with its name, when read
    if cells["facts"]:
        try:
            record["facts"] = json.loads(cells["facts"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: 'facts' is not JSON: {exc.msg}") from None
    return record
