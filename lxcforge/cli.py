"""The command line: parse, call an operation, render a table or JSON.
The only place where errors become exit codes."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lxcforge import clitree, config, units
from lxcforge.errors import LxcforgeError
from lxcforge.lazy import lazy_module

# Each command loads only what it uses: `list` needs libvirt, not btrfs, dnf or the
# package builders (a command's start-up is paid on every call; see BENCHMARKS.md).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from lxcforge import recording
    from lxcforge import store as store_module
    from lxcforge.ops import base as base_ops
    from lxcforge.ops import bulk as bulk_ops
    from lxcforge.ops import container as container_ops
    from lxcforge.ops import doctor as doctor_ops
    from lxcforge.ops import networks as network_ops
    from lxcforge.ops import tuning
    from lxcforge.rootfs import build
else:
    recording = lazy_module("lxcforge.recording")
    base_ops = lazy_module("lxcforge.ops.base")
    bulk_ops = lazy_module("lxcforge.ops.bulk")
    container_ops = lazy_module("lxcforge.ops.container")
    doctor_ops = lazy_module("lxcforge.ops.doctor")
    network_ops = lazy_module("lxcforge.ops.networks")
    tuning = lazy_module("lxcforge.ops.tuning")
    build = lazy_module("lxcforge.rootfs.build")
    store_module = lazy_module("lxcforge.store")

app = typer.Typer(
    name="lxcforge",
    help="Provision Fedora (and Debian/Ubuntu) system containers on libvirt LXC from btrfs "
    "snapshots: build a base once, then start containers from it in milliseconds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
store_app = typer.Typer(help="The btrfs store that holds bases and containers.", no_args_is_help=True)
app.add_typer(store_app, name="store")
base_app = typer.Typer(
    help="Build a base (a read-only root filesystem that containers are snapshotted from), "
    "or list, inspect and remove bases.\n\n"
    "  lxcforge base --release 41                      # Fedora 41 with dnf --installroot\n\n"
    "  lxcforge base --release 19 --repo file:///srv/f19  # from a local repository\n\n"
    "  lxcforge base --distro debian --release bookworm  # Debian with debootstrap",
    invoke_without_command=True,
)
app.add_typer(base_app, name="base")
host_app = typer.Typer(help="This host's setup for many containers.", no_args_is_help=True)
app.add_typer(host_app, name="host")
network_app = typer.Typer(help="libvirt networks for containers (NAT or isolated, STP off).", no_args_is_help=True)
app.add_typer(network_app, name="network")


# rich costs ~15 ms of every start: its consoles are made when first printed to (exec,
# --json and --version never do); under a lock, as exec on many prints from its workers.
_making_console = threading.Lock()


@functools.cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    if stderr:
        return Console(stderr=True, highlight=False, soft_wrap=True)
    # Without a terminal (CI, pipes) rich would wrap tables at 80 columns.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def out() -> Console:
    with _making_console:
        return _console(False)


def err() -> Console:
    with _making_console:
        return _console(True)


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    NAMES = "names"
    ANSIBLE = "ansible"  # list only: an Ansible inventory (other commands print JSON)


def _remember_format(fmt: OutputFormat | None) -> OutputFormat | None:
    if fmt is not None:
        state.fmt = fmt
    return fmt


def _json_wanted(flag: bool) -> bool:
    """--json, or a --format other than table (parsed first when given): every command then
    takes its machine-readable path, and print_json writes the format asked for."""
    if flag:
        state.fmt = OutputFormat.JSON
    return state.fmt is not OutputFormat.TABLE


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (as --format json).",
                                       callback=_json_wanted)]
FormatOpt = Annotated[OutputFormat | None, typer.Option(
    "--format", help="table (default), json, csv (a row per item), names (one per line); list also takes "
    "ansible (an inventory: ansible -i FILE).",
    callback=_remember_format)]


class _LevelPrefix(logging.Formatter):
    """'warning: ...' for warnings and errors; plain lines for -v/-vv detail."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class State:
    settings: config.Settings
    fmt: OutputFormat = OutputFormat.TABLE


state = State()


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        sys.stdout.write(f"lxcforge {version('lxcforge')}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    store: Annotated[Path | None, typer.Option(
        help="Store directory (btrfs, or empty: a loop-file pool is created). "
        "Env LXCFORGE_STORE; default /var/lib/lxcforge.")] = None,
    uri: Annotated[str | None, typer.Option(help="libvirt URI. Env LXCFORGE_URI; default lxc:///.")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More detail; -vv shows every command run.")] = 0,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=lambda v: _print_version(v),
                                          help="Print lxcforge's version and exit.")] = False,
) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefix())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    state.settings = config.load({"store": store, "uri": uri})


def _store() -> store_module.Store:
    return store_module.Store.from_settings(state.settings)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def print_json(value: Any) -> None:
    """The command's result in the format asked for: JSON (the default here), CSV or names."""
    data = _jsonable(value)
    if state.fmt is OutputFormat.CSV:
        _write_csv(_rows(data))
    elif state.fmt is OutputFormat.NAMES:
        for name in _names(data):
            sys.stdout.write(f"{name}\n")
    else:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")


# Where a summary document keeps its items, in the order looked for.
_ITEM_KEYS = ("results", "created", "checks", "items", "containers", "done")


def _rows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        listed = next((data[key] for key in _ITEM_KEYS if isinstance(data.get(key), list) and data[key]), None)
        data = listed if listed is not None else [data]
    if not isinstance(data, list):
        return [{"value": data}]
    return [row if isinstance(row, dict) else {"name": row} for row in data]


def _names(data: Any) -> list[str]:
    return [str(row.get("name", row.get("base", ""))) for row in _rows(data) if row.get("name") or row.get("base")]


def _write_csv(rows: list[dict[str, Any]]) -> None:
    import csv

    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})


def _show(value: Any, as_json: bool, render: Callable[[], Table]) -> None:
    """JSON for scripts, else the table render() builds."""
    if as_json:
        print_json(value)
    else:
        out().print(render())


def _print_fields(obj: Any) -> None:
    """One 'key value' line per field: sizes in binary units, lists joined, None as '-'."""
    fields = dataclasses.asdict(obj)
    width = max(len(key) for key in fields) + 1
    for key, value in fields.items():
        if key.endswith("_bytes"):
            value = units.human_bytes(value)
        elif isinstance(value, list):
            value = ", ".join(value) or "none"
        out().print(f"{key:{width}} {value if value is not None else '-'}", markup=False)


_STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@app.command()
def doctor(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Check the host: root, store, libvirtd, cgroups, network, tools, kernel limits.

    Every failing row says how to fix it. Exit status 1 when any check fails."""
    checks = doctor_ops.run_checks(state.settings)
    if as_json:
        print_json({"ok": all(c.status != "fail" for c in checks), "checks": checks})
    else:
        from rich.table import Table

        table = Table("check", "status", "detail", "fix", box=None, pad_edge=False)
        for c in checks:
            style = _STATUS_STYLE[c.status.value]
            table.add_row(c.name, f"[{style}]{c.status.value}[/]", c.detail, c.fix)
        out().print(table)
    if any(c.status == doctor_ops.Status.FAIL for c in checks):
        raise typer.Exit(1)


@store_app.command("attach")
def store_attach(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Create the store (a loop-file btrfs pool unless it is on btrfs) or re-attach it."""
    pool = _store().ensure()
    status = pool.status()
    if as_json:
        print_json({"store": pool.root, **dataclasses.asdict(status)})
    else:
        out().print(f"store {pool.root}: {status.detail}")


@store_app.command("detach")
def store_detach() -> None:
    """Unmount a loop-file pool (its image stays; the next command re-attaches it)."""
    _store().detach()


@store_app.command("status")
def store_status(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Show where the store is and whether it is ready, changing nothing."""
    pool = _store()
    status = pool.status()
    if as_json:
        print_json({"store": pool.root, "pool_image": pool.pool_image, **dataclasses.asdict(status)})
    else:
        out().print(f"store {pool.root}: {status.state.value} ({status.detail})")


class _Progress:
    """The latest line of a long phase on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and err().is_terminal
        self.status = err().status("starting") if self.enabled else None

    def __enter__(self) -> _Progress:
        if self.status:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status:
            self.status.stop()

    def __call__(self, line: str) -> None:
        if self.status and line.strip():
            self.status.update(line.strip()[:120])


@base_app.callback()
def base(
    ctx: typer.Context,
    release: Annotated[str | None, typer.Option(help="Release: a number for Fedora (19, 41), "
                                                "a code name for Debian/Ubuntu (bookworm, noble).")] = None,
    distro: Annotated[str, typer.Option(help="fedora (dnf/yum), debian or ubuntu (debootstrap), or minimal "
                                        "(the host's busybox: DHCP and nothing else).")] = "fedora",
    name: Annotated[str | None, typer.Option(help="Base name; default DISTRO-RELEASE.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture; default the host's.")] = None,
    packages: Annotated[str | None, typer.Option(help="More packages, comma-separated.")] = None,
    mirror: Annotated[str | None, typer.Option(
        help="Mirror root: Fedora's .../fedora/linux directory, or a Debian/Ubuntu archive.")] = None,
    repo: Annotated[list[str] | None, typer.Option(
        help="Fedora: use this repository instead of the standard ones (repeatable; file:// works); "
        "ID=URL replaces repository ID (fedora, updates) or adds one.")] = None,
    no_gpgcheck: Annotated[bool, typer.Option("--no-gpgcheck", help="Do not check package signatures.")] = False,
    gpg_key: Annotated[Path | None, typer.Option(help="Fedora signing key file (default: the host's).")] = None,
    root_password_file: Annotated[Path | None, typer.Option(
        help="File whose first line is root's password (stored as a SHA-512 hash).")] = None,
    ssh_key: Annotated[Path | None, typer.Option(help="SSH public key for root.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing base of the same name.")] = False,
    as_json: JsonOpt = False, fmt: FormatOpt = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if release is None:
        out().print(ctx.get_help())
        raise LxcforgeError("--release is required to build a base",
                            hint="e.g. lxcforge base --release 41, or see 'lxcforge base list'")
    import platform

    credentials = base_ops.read_credentials(root_password_file, ssh_key)
    request = build.BuildRequest(
        distro=distro, release=release, arch=arch or platform.machine(),
        packages=tuple(p.strip() for p in (packages or "").split(",") if p.strip()),
        mirror=mirror, repos=tuple(repo or ()), gpgcheck=not no_gpgcheck, gpg_key=gpg_key,
        credentials=credentials,
    )
    with _Progress(enabled=not as_json) as progress:
        result = base_ops.create(state.settings, request, name=name, force=force, progress=progress)
    if as_json:
        print_json({"base": result.base, "seconds": round(result.seconds, 1)})
    else:
        out().print(f"base {result.base.name} ready in {result.seconds:.0f} s, "
                    f"{units.human_bytes(result.base.size_bytes)} ({result.base.path})")


def _base_table(bases: list[base_ops.BaseInfo]) -> Table:
    from rich.table import Table

    table = Table("name", "distro", "release", "size", "created", "containers", box=None, pad_edge=False)
    for b in bases:
        table.add_row(b.name, b.distro or "?", b.release or "?", units.human_bytes(b.size_bytes), b.created,
                      str(len(b.containers)))
    return table


@base_app.command("list")
def base_list(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """List bases: name, distro, release, size, created, how many containers use each."""
    bases = base_ops.list_bases(state.settings)
    _show(bases, as_json, lambda: _base_table(bases))


@base_app.command("info")
def base_info(name: BaseArg, as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Show one base, with the containers made from it."""
    info = base_ops.info(state.settings, name)
    if as_json:
        print_json(info)
    else:
        _print_fields(info)


@base_app.command("rm")
def base_rm(names_: Annotated[list[str], typer.Argument(metavar="NAME...", autocompletion=_complete_bases)],
            as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Remove bases (refused while containers use them, naming them)."""
    for name in names_:
        base_ops.remove(state.settings, name)
        if not as_json:
            out().print(f"removed base {name}")
    if as_json:
        print_json({"removed": names_})


def _store_entries(subdir: str, incomplete: str) -> list[str]:
    """Names for shell completion from a directory of the store (read only, no libvirt)."""
    try:
        return sorted(p.name for p in (config.load({}).store / subdir).iterdir() if p.name.startswith(incomplete))
    except OSError:
        return []


def _complete_containers(incomplete: str) -> list[str]:
    return _store_entries("containers", incomplete)


def _complete_bases(incomplete: str) -> list[str]:
    return _store_entries("bases", incomplete)


def _complete_networks(incomplete: str) -> list[str]:
    from lxcforge.virt import Virt

    try:
        with Virt(config.load({}).uri) as virt:
            return [n for n in virt.networks() if n.startswith(incomplete)]
    except LxcforgeError:
        return []


ContainerArg = Annotated[str, typer.Argument(metavar="NAME", autocompletion=_complete_containers)]
BaseArg = Annotated[str, typer.Argument(metavar="NAME", autocompletion=_complete_bases)]
NetworkArg = Annotated[str, typer.Argument(metavar="NAME", autocompletion=_complete_networks)]
@base_app.command("export")
def base_export(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The base to export.")],
    file: Annotated[str, typer.Argument(metavar="FILE", help="Where to write it; - for standard output.")],
    compress: Annotated[bool, typer.Option(
        "--compress", help="Compress the stream: with zstd if it is installed, else gzip.")] = False,
    compression: Annotated[str | None, typer.Option(
        metavar="zstd|gzip", help="Compress the stream with this program (implies --compress).")] = None,
    as_json: JsonOpt = False, fmt: FormatOpt = None,
) -> None:
    """Write a base to a file, to import it on another host: a short header (name, distro,
    release, created, size) and the base's btrfs send stream (compressed with --compress;
    the header never is).

      lxcforge base export fedora-41 fedora-41.base --compress

      lxcforge base export fedora-41 fedora-41.base --compression gzip

      lxcforge base export fedora-41 - | ssh other lxcforge base import -"""
    result = base_ops.export_base(state.settings, name, file, compression or ("auto" if compress else None))
    if file == "-":  # standard output carries the base: the report goes to stderr
        if as_json:
            sys.stderr.write(json.dumps(_jsonable(result), indent=2) + "\n")
        return
    if as_json:
        print_json(result)
    else:
        shown = f", {result.compression}" if result.compression else ""
        out().print(f"exported base {name} to {file}: {units.human_bytes(result.file_bytes)}{shown} "
                    f"in {result.seconds:.1f} s", markup=False)


@base_app.command("import")
def base_import(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A file from 'base export'; - for standard input.")],
    name: Annotated[str | None, typer.Option(help="Base name; default the exported base's name.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing base of the same name.")] = False,
    as_json: JsonOpt = False, fmt: FormatOpt = None,
) -> None:
    """Add a base from a file written by 'base export' (compressed or not: told by its first
    bytes). It keeps its distro, release and creation time.

      lxcforge base import fedora-41.base

      ssh other lxcforge base export fedora-41 - | lxcforge base import - --name f41"""
    result = base_ops.import_base(state.settings, file, name=name, force=force)
    if as_json:
        print_json(result)
    else:
        out().print(f"imported base {result.base.name} ({result.base.distro or '?'} "
                    f"{result.base.release or '?'}, created {result.base.created}) in {result.seconds:.1f} s",
                    markup=False)


NamesArg = Annotated[list[str], typer.Argument(metavar="NAME...", show_default=False)]


def _container_table(containers: list[container_ops.Container]) -> Table:
    from rich.table import Table

    table = Table("name", "state", "ipv4", "base", "memory", "created", box=None, pad_edge=False)
    for c in containers:
        address = c.ipv4 or "-"
        if c.leased is False and c.state == "running":
            address += " (no lease)"
        shown_state = c.state
        if c.init_pid_known is False:
            shown_state += " (libvirt lost its init pid: lxcforge gc)"
        if c.autostart:
            shown_state += ", autostart"
        table.add_row(c.name, shown_state, address, c.base or "?", units.human_bytes(c.memory_bytes), c.created or "?")
    return table


class _BulkProgress:
    """A progress bar (created / addressed / failed, rate, ETA) on a terminal; silent otherwise."""

    def __init__(self, total: int, enabled: bool, verb: str = "created") -> None:
        self.enabled = enabled and err().is_terminal
        self.counts = {"created": 0, "addressed": 0, "failed": 0, "done": 0}
        self.verb = verb
        self.progress = None
        if self.enabled:  # rich's progress costs ~70 ms to import: only for a terminal
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err(), transient=True)
        self.task = self.progress.add_task("", total=total, rate="") if self.progress else None
        self.started = time.monotonic()

    def __enter__(self) -> _BulkProgress:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def __call__(self, kind: str, _name: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if not self.progress or self.task is None:
            return
        finished = self.counts["addressed"] + self.counts["failed"] + self.counts["done"]
        elapsed = max(time.monotonic() - self.started, 1e-6)
        if self.verb == "created":
            description = (f"created {self.counts['created']}  with address {self.counts['addressed']}  "
                           f"failed {self.counts['failed']}")
        else:
            description = f"{self.verb} {self.counts['done']}  failed {self.counts['failed']}"
        self.progress.update(self.task, completed=finished, description=description,
                             rate=f"{finished / elapsed:.1f}/s")


def _print_summary(summary: bulk_ops.Summary, as_json: bool, recorder: recording.Recorder | None = None) -> None:
    single = len(summary.outcomes) == 1
    # The whole command, from its process's start: what the user waited for.
    started = recorder.started if recorder is not None else recording.process_started()
    summary.command_started = started
    summary.command_seconds = time.time() - started
    if recorder is not None:
        for outcome in summary.outcomes:
            recorder.add(outcome.name, outcome.ok, outcome.error, outcome.steps)
        recorder.write()
    if as_json:
        print_json(summary.as_dict())
    else:
        for outcome in summary.succeeded:
            c = outcome.container
            if c is not None:
                out().print(f"{c.name} {c.ipv4 or ''}".rstrip(), markup=False)
        total, ok = len(summary.outcomes), len(summary.succeeded)
        seconds = summary.command_seconds
        rate = ok / seconds if seconds else 0.0
        line = f"{summary.action}: {ok} of {total} in {seconds:.1f} s ({rate:.1f}/s)"
        p50, p95 = summary.percentile(50), summary.percentile(95)
        if p50 is not None and p95 is not None and not single:
            line += f"; per container p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
        if summary.repaired:
            line += f"; repaired {summary.repaired} (libvirt had lost the init pid)"
        if not single or summary.repaired:
            err().print(line, markup=False)
        figures = summary.as_dict()
        phases = figures["phase_p50_ms"]
        if isinstance(phases, dict) and phases and not single:
            err().print("phases p50 (ms): " + ", ".join(f"{k} {v}" for k, v in phases.items()), markup=False)
        if not single and figures.get("before_first_seconds") is not None:
            err().print(f"command {seconds:.1f} s: {figures['before_first_seconds']:.2f} s before the first "
                        f"container's first step, {figures['after_last_seconds']:.2f} s after the last one's",
                        markup=False)
        cut_short = [o for o in summary.failed if o.error in bulk_ops.CUT_SHORT]
        for outcome in summary.failed:
            if outcome.error in bulk_ops.CUT_SHORT:
                continue
            if single:
                # One container: its error is the command's error, with what to do next.
                err().print(f"[bold red]error:[/] {outcome.name}: {outcome.error}", markup=True)
                if outcome.hint:
                    err().print(f"hint: {outcome.hint}", markup=False)
            else:
                err().print(f"[bold red]failed:[/] {outcome.name}: {outcome.error}", markup=True)
        if summary.interrupted and summary.action == "new":
            err().print(f"interrupted: kept the {len(summary.succeeded)} complete; the other "
                        f"{len(cut_short)} were not made, or undone", markup=False)
        elif summary.interrupted:
            err().print(f"interrupted: {len(summary.succeeded)} done, {len(cut_short)} not begun "
                        "(the ones under way were finished)", markup=False)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(1)


JobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", help="Parallel workers (default: 4 per core, 4-32).")]
ReportOpt = Annotated[Path | None, typer.Option(
    "--report", help="Write each container's step timings and the host's facts to FILE (.jsonl or .csv), "
    "for 'lxcforge report'.", metavar="FILE")]


@app.command()
def new(
    names_: Annotated[list[str] | None, typer.Argument(metavar="NAME...", show_default=False)] = None,
    count: Annotated[int | None, typer.Option(help="Create COUNT containers named PREFIX1..PREFIXCOUNT.")] = None,
    prefix: Annotated[str | None, typer.Option(help="Name prefix for --count.")] = None,
    base: Annotated[str | None, typer.Option(help="Base to snapshot; default: the only base.")] = None,
    network: Annotated[str | None, typer.Option(
        help="libvirt network (default 'default'); 'a,b' spreads containers over several.")] = None,
    memory: Annotated[str, typer.Option(help="Memory limit, e.g. 512M, 2G.")] = "512M",
    cpus: Annotated[float | None, typer.Option(help="CPU limit in cores, e.g. 1.5.")] = None,
    ip: Annotated[str | None, typer.Option(help="Reserve this address (one container only).")] = None,
    static_ip: Annotated[bool, typer.Option("--static-ip", help="Also write the reserved address into the "
                                            "container's network configuration: reachable at boot, no DHCP.")]
    = False,
    ssh_key: Annotated[Path | None, typer.Option(help="SSH public key for root.")] = None,
    no_start: Annotated[bool, typer.Option("--no-start", help="Define it, do not start it.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for its address.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each address.")] = 60.0,
    keep_failed: Annotated[bool, typer.Option("--keep-failed",
                                              help="Keep a container that got no address, to debug it.")] = False,
    autostart: Annotated[bool, typer.Option("--autostart", help="Start it when the host boots "
                                            "('lxcforge boot'; see 'lxcforge autostart').")] = False,
    unprivileged: Annotated[bool, typer.Option("--unprivileged/--privileged", help="Unprivileged (the default): "
                                               "in a user namespace, root inside is an ordinary user on the "
                                               "host. --privileged: root inside is the host's root, hardened "
                                               "(README: security model).")]
    = True,
    id_offset: Annotated[int | None, typer.Option("--id-offset", help="The host ids an unprivileged "
                                                  "container's 0..65535 map to (default 100000).")] = None,
    jobs: JobsOpt = None,
    tune_host: Annotated[bool, typer.Option("--tune-host", help="Run 'lxcforge host tune' first: raise kernel "
                                            "limits that would stop this many containers, instead of "
                                            "refusing.")] = False,
    no_capacity_check: Annotated[bool, typer.Option("--no-capacity-check",
                                                    help="Skip the up-front capacity checks.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "--print-xml",
                                          help="Print the domain XML and planned address; change nothing.")] = False,
    report: ReportOpt = None,
    as_json: JsonOpt = False, fmt: FormatOpt = None,
) -> None:
    """Create containers from a base: snapshot, fix-ups, reserved address, libvirt domain, start.

    Each gets a stable MAC derived from its name and a static DHCP reservation on its network,
    so its address is known before it boots. A failure undoes every step of that container.
    Many at once: NAME... or --count N --prefix P, in parallel (-j), checked up front for
    addresses, bridge ports, memory and kernel limits. One container or many, it is the same
    path and the same --json document. Leftovers of an interrupted lxcforge under these names
    are reclaimed first; a container libvirt starts without knowing its init pid is restarted
    (counted as 'repaired')."""
    recorder = _recorder(report, "new")
    wanted = bulk_ops.expand_names(count, prefix, names_ or [])
    if ip and len(wanted) > 1:
        raise LxcforgeError("--ip applies to one container", hint="create the others without --ip")
    key = None
    if ssh_key is not None:
        key = base_ops.read_credentials(None, ssh_key).ssh_key
    networks = [n.strip() for n in (network or "").split(",") if n.strip()]
    options = container_ops.NewOptions(base=base, network=networks[0] if networks else None, memory=memory,
                                       cpus=cpus, ip=ip, ssh_key=key, start=not no_start, wait=not no_wait,
                                       timeout=timeout, keep_failed=keep_failed, static_ip=static_ip,
                                       autostart=autostart, idmap_offset=_idmap_offset(unprivileged, id_offset))
    options.check()
    if dry_run:
        plans = container_ops.plan_many(state.settings, wanted, options, networks)
        if as_json:
            print_json([{"name": p.spec.name, "ipv4": p.host.ip, "mac": p.host.mac, "network": p.spec.network,
                         "xml": p.xml} for p in plans])
        else:
            for p in plans:
                out().print(f"<!-- {p.spec.name}: {p.host.ip} ({p.host.mac}) on {p.spec.network} -->", markup=False)
                out().print(p.xml, markup=False, end="")
        return
    if tune_host:
        tuning.tune(state.settings.uri)
    with _BulkProgress(len(wanted), enabled=not as_json) as progress_events:
        summary = bulk_ops.new_many(state.settings, wanted, options, networks=networks, jobs=jobs,
                                    check_capacity=not no_capacity_check, on_event=progress_events)
    _print_summary(summary, as_json, recorder)


def _idmap_offset(unprivileged: bool, offset: int | None) -> int | None:
    if offset is not None and not unprivileged:
        raise LxcforgeError("--id-offset applies to unprivileged containers", hint="leave out --privileged")
    if not unprivileged:
        return None
    from lxcforge import idmap

    return offset if offset is not None else idmap.DEFAULT_OFFSET


def _recorder(path: Path | None, action: str) -> recording.Recorder:
    try:
        return recording.Recorder(path, action)
    except ValueError as exc:
        raise LxcforgeError(str(exc), hint="e.g. --report run.jsonl") from None


@app.command("list")
def list_(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """List containers: name, state, IPv4, base, memory limit, created.

    --format ansible prints an Ansible inventory (YAML inventory plugin's JSON form): every
    container reached through libvirt's LXC connection (community.libvirt.libvirt_lxc),
    grouped by base, network and state, with its address as lxcforge_ipv4:

      lxcforge list --format ansible > inventory.json && ansible -i inventory.json all -m raw -a uptime"""
    containers = container_ops.list_containers(state.settings)
    if state.fmt is OutputFormat.ANSIBLE:
        from lxcforge import inventory

        sys.stdout.write(json.dumps(inventory.ansible(containers), indent=2) + "\n")
        return
    _show(containers, as_json, lambda: _container_table(containers))


@app.command()
def stats(
    patterns: Annotated[list[str] | None, typer.Argument(metavar="[NAME|GLOB...]", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every running container of this store (the default).")]
    = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="A live view, refreshed in place, like top.")]
    = False,
    interval: Annotated[float, typer.Option(help="Seconds between reads (the CPU % interval; top's default).")]
    = 3.0,
    sort: Annotated[str, typer.Option(help="Sort by name, cpu, memory, tasks, rx or tx.")] = "name",
    disk: Annotated[bool, typer.Option("--disk", help="Also each container's exclusive disk use (walks its "
                                       "files: slow with many).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or prometheus (the text format, for "
                                     "node_exporter's textfile collector).")] = "table",
    as_json: Annotated[bool, typer.Option("--json", help="As --format json.")] = False,
) -> None:
    """Resource use of running containers, read in one pass from the cgroup filesystem and
    each container's network counters: CPU, memory (current, limit, peak), tasks, network.

    Without --watch the CPU and network columns are totals since each container started;
    with --watch (or --format json/csv and an interval read), rates over --interval.

      lxcforge stats --watch --sort cpu
      lxcforge stats --format prometheus > /var/lib/node_exporter/lxcforge.prom"""
    from lxcforge import stats as stats_mod

    fmt = "json" if as_json else fmt
    if fmt not in ("table", "json", "csv", "prometheus"):
        raise LxcforgeError(f"unknown format {fmt!r}", hint="use table, json, csv or prometheus")
    if sort not in {k.value for k in stats_mod.SortKey}:
        raise LxcforgeError(f"cannot sort by {sort!r}", hint="use name, cpu, memory, tasks, rx or tx")
    if interval <= 0:
        raise LxcforgeError("--interval must be positive", hint="e.g. --interval 2")
    wanted = _stats_names(patterns or [])

    def render(usages: dict[str, Any], rates: dict[str, Any] | None) -> str:
        if fmt == "json":
            return json.dumps(stats_mod.as_json(usages, rates, sort), indent=2) + "\n"
        if fmt == "csv":
            return stats_mod.as_csv(usages, rates, sort)
        if fmt == "prometheus":
            return stats_mod.as_prometheus(usages)
        text = stats_mod.as_table(usages, rates, sort)
        if disk:
            text += "".join(f"{name}: {units.human_bytes(size)} exclusive\n"
                            for name, size in _exclusive(usages).items())
        return text

    before = stats_mod.read_all(wanted)
    if not watch:
        sys.stdout.write(render(before, None))
        return
    try:
        while True:
            time.sleep(interval)
            after = stats_mod.read_all(wanted)
            frame = render(after, stats_mod.rates(before, after))
            # Refreshed in place on a terminal; one frame after another when piped.
            sys.stdout.write(("\x1b[H\x1b[2J" if sys.stdout.isatty() else "") + frame)
            sys.stdout.flush()
            before = after
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _stats_names(patterns: list[str]) -> set[str]:
    """This store's containers matching patterns (all without any): from the store's
    directory, so stats needs no libvirt call at all."""
    import fnmatch

    try:
        mine = {entry.name for entry in (state.settings.store / "containers").iterdir()}
    except OSError:
        mine = set()
    if not patterns:
        return mine
    return {n for n in mine if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def _exclusive(usages: dict[str, Any]) -> dict[str, int]:
    sizes = {}
    for name in sorted(usages):
        try:
            size = store_module.exclusive_bytes(state.settings.store / "containers" / name)
        except LxcforgeError:
            continue
        if size is not None:
            sizes[name] = size
    return sizes


@app.command()
def events(
    patterns: Annotated[list[str] | None, typer.Argument(metavar="[NAME|GLOB...]", show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help="Exit once --count events of this kind have arrived, e.g. "
                                              "leased, started, stopped, removed.")] = None,
    count: Annotated[int, typer.Option(help="How many --until events to wait for.")] = 1,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds (exit 1).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Stream lifecycle events of this store's containers as they happen: libvirt's (defined,
    started, stopped with why, undefined) and lxcforge's own (reserved, created, leased,
    repaired, removed, failures). Scripts wait for a state instead of polling:

      lxcforge events 'web*' --until leased --count 300 --timeout 600"""
    import threading

    from lxcforge.ops import events as events_ops

    stop = threading.Event()
    seen = 0
    if timeout is not None:
        timer = threading.Timer(timeout, stop.set)
        timer.daemon = True  # never keeps the command alive once it is done
        timer.start()
    try:
        for event in events_ops.stream(state.settings, patterns or [], stop):
            if as_json:
                record = {"time": event.time, "source": event.source, "event": event.event, "name": event.name,
                          "detail": event.detail, **event.fields}
                sys.stdout.write(json.dumps(record) + "\n")
            else:
                when = time.strftime("%H:%M:%S", time.localtime(event.time)) + f".{int(event.time % 1 * 1000):03d}"
                detail = f" ({event.detail})" if event.detail else ""
                extra = "".join(f" {k}={v}" for k, v in event.fields.items())
                sys.stdout.write(f"{when} {event.name} {event.event}{detail}{extra}\n")
            sys.stdout.flush()
            if until is not None and event.event == until:
                seen += 1
                if seen >= count:
                    stop.set()
                    return
    except KeyboardInterrupt:
        stop.set()
        raise typer.Exit(130) from None
    finally:
        stop.set()
    if until is not None:
        raise LxcforgeError(f"{seen} of {count} '{until}' events within {timeout:g} s",
                            hint="raise --timeout, or check 'lxcforge list'")


@app.command()
def report(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Timings written by --report.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Draw to OUT.png, .svg or .html.")] = None,
    as_json: JsonOpt = False, fmt: FormatOpt = None,
) -> None:
    """Summarise runs recorded with --report, and draw them (-o): a timeline with a row per
    container and its steps as bars, containers ready over time, and the distribution of time
    to ready. Several files are overlaid, to compare runs.

      lxcforge new --count 300 --prefix s --report run.jsonl && lxcforge report run.jsonl -o run.png"""
    from lxcforge import timeline

    runs = []
    for path in files:
        try:
            run = timeline.read(path)
        except OSError as exc:
            raise LxcforgeError(f"cannot read {path}: {exc.strerror}", hint="give a file written by --report") from None
        except ValueError as exc:
            raise LxcforgeError(str(exc), hint="give a file written by --report") from None
        runs.append(dataclasses.replace(run, label=run.label or path.stem))
    if output is not None:
        from lxcforge import plot

        try:
            plot.render(runs, output)
        except ValueError as exc:
            raise LxcforgeError(str(exc), hint="use -o OUT.png, OUT.svg or OUT.html") from None
    if as_json:
        print_json([timeline.summary(run) for run in runs])
    else:
        for run in runs:
            out().print(f"{run.label}: {timeline.summary_line(run)}", markup=False)
        if output is not None:
            err().print(f"drawn: {output}", markup=False)


@app.command()
def info(name: ContainerArg, xml: Annotated[bool, typer.Option("--xml", help="Print the domain XML.")] = False,
         as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Show one container, with the disk space only it uses."""
    container, domain_xml = container_ops.info(state.settings, name, with_xml=xml)
    if domain_xml is not None:
        out().print(domain_xml, markup=False, end="")
    elif as_json:
        print_json(container)
    else:
        _print_fields(container)


TargetsArg = Annotated[list[str] | None, typer.Argument(metavar="NAME|GLOB...", show_default=False,
                                                       autocompletion=_complete_containers)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every lxcforge container of this store.")]


def _targets(patterns: list[str] | None, all_: bool) -> list[str]:
    return _resolved(patterns, all_).names


def _resolved(patterns: list[str] | None, all_: bool, *, orphans: bool = False) -> bulk_ops.Targets:
    if not patterns and not all_:
        raise LxcforgeError("no containers named", hint="give names, globs like 'web*', or --all")
    return bulk_ops.resolve_targets(state.settings, patterns or [], all_=all_, orphans=orphans)


def _each(action: str, targets: list[str], fn: Callable[[str], object], jobs: int | None, as_json: bool,
          verb: str, recorder: recording.Recorder | None = None) -> None:
    """One container or many: the same path, summary and --json document."""
    _batch(len(targets), as_json, verb, recorder,
           lambda events: bulk_ops.each(action, targets, fn, jobs=jobs, on_event=events))


def _batch(count: int, as_json: bool, verb: str, recorder: recording.Recorder | None,
           run: Callable[[bulk_ops.Event], bulk_ops.Summary]) -> None:
    """run(on_event) under a progress bar of COUNT, then its summary (or --json document)."""
    with _BulkProgress(count, enabled=not as_json, verb=verb) as events:
        summary = run(events)
    _print_summary(summary, as_json, recorder)


@app.command()
def start(patterns: TargetsArg = None, all_: AllOpt = False, jobs: JobsOpt = None,
          no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for addresses.")] = False,
          timeout: Annotated[float, typer.Option(help="Seconds to wait for each address.")] = 60.0,
          report: ReportOpt = None, as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Start stopped containers (and wait for their addresses); names, globs or --all.

    A running container that libvirt lost track of (no init pid) is restarted ('repaired')."""
    recorder = _recorder(report, "start")
    targets = _targets(patterns, all_)
    _batch(len(targets), as_json, "started", recorder,
           lambda events: bulk_ops.start_many(state.settings, targets, wait=not no_wait, timeout=timeout, jobs=jobs,
                                              on_event=events))


@app.command()
def stop(patterns: TargetsArg = None, all_: AllOpt = False, jobs: JobsOpt = None,
         timeout: Annotated[float, typer.Option(help="Seconds for a clean shutdown before forcing.")] = 30.0,
         report: ReportOpt = None, as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Shut containers down cleanly, forcing them off after --timeout; names, globs or --all."""
    recorder = _recorder(report, "stop")
    targets = _targets(patterns, all_)
    _batch(len(targets), as_json, "stopped", recorder,
           lambda events: bulk_ops.stop_many(state.settings, targets, timeout=timeout, jobs=jobs, on_event=events))


@app.command()
def restart(patterns: TargetsArg = None, all_: AllOpt = False, jobs: JobsOpt = None,
            timeout: Annotated[float, typer.Option(help="Seconds for a clean shutdown before forcing.")] = 30.0,
            report: ReportOpt = None, as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Stop, then start, keeping the addresses."""
    recorder = _recorder(report, "restart")
    targets = _targets(patterns, all_)
    _batch(len(targets), as_json, "restarted", recorder,
           lambda events: bulk_ops.restart_many(state.settings, targets, timeout=timeout, jobs=jobs,
                                                on_event=events))


@app.command()
def autostart(patterns: TargetsArg = None, all_: AllOpt = False,
              off: Annotated[bool, typer.Option("--off", help="Clear the mark instead.")] = False,
              as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Mark containers to start when the host boots, or clear the mark (--off).

    At boot, 'lxcforge boot' (the lxcforge-boot service that provision.sh installs) attaches
    the store, starts the networks and the marked containers, and runs gc."""
    _each("autostart", _targets(patterns, all_),
          lambda n: container_ops.set_autostart(state.settings, n, not off), None, as_json, "marked")


@app.command("set")
def set_(patterns: TargetsArg = None, all_: AllOpt = False,
         memory: Annotated[str | None, typer.Option(help="Memory limit, e.g. 256M, 2G.")] = None,
         cpus: Annotated[float | None, typer.Option(help="CPU limit in cores, e.g. 1.5; 0 for none.")] = None,
         as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Change containers' memory and CPU limits; names, globs or --all.

    Always kept in the container's definition; applied at once to a running container where
    libvirt can (memory only up to the limit it started with: more from its next start).

      lxcforge set 'web*' --memory 256M --cpus 0.5"""
    _each("set", _targets(patterns, all_),
          lambda n: container_ops.set_limits(state.settings, n, memory=memory, cpus=cpus), None, as_json, "changed")


@app.command()
def publish(name: ContainerArg,
            base: Annotated[str | None, typer.Argument(help="Name of the new base (default: NAME).")] = None,
            force: Annotated[bool, typer.Option("--force", help="Replace an existing base of that name.")] = False,
            as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Make a base of a prepared container, to start many like it.

    The copy is a snapshot (a running container is frozen for that instant); in it, what
    makes one machine is reset (machine id, hostname, SSH host keys, DHCP leases, logs,
    random seed), and it is published read-only.

      lxcforge publish web1 webapp && lxcforge new --count 300 --prefix web --base webapp"""
    from lxcforge.ops import publish as publish_ops

    made = publish_ops.publish(state.settings, name, base, force=force)
    if as_json:
        print_json(made)
    else:
        froze = f" (frozen {made.froze_for_seconds * 1000:.0f} ms)" if made.froze_for_seconds is not None else ""
        out().print(f"base {made.base} from {made.source}{froze}", markup=False)


DestroyJobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", help="Parallel workers (default: 16; a "
                                                  "destroy mostly waits inside libvirtd).")]


@app.command()
def destroy(patterns: TargetsArg = None, all_: AllOpt = False, jobs: DestroyJobsOpt = None,
            missing_ok: Annotated[bool, typer.Option("--missing-ok", help="No error for names that do not exist.")]
            = False, report: ReportOpt = None, as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Stop at once and remove containers: domain, DHCP reservation and lease, subvolume.
    Names, globs ('web*') or --all. Also removes what an interrupted lxcforge left of a name
    (a reservation or a subvolume without a domain)."""
    recorder = _recorder(report, "destroy")
    # What resolving read (the domains, the reservations without one) the destroy reuses.
    targets = _resolved(patterns, all_, orphans=True)
    _batch(len(targets.names), as_json, "destroyed", recorder,
           lambda events: bulk_ops.destroy_many(state.settings, targets, missing_ok=missing_ok, jobs=jobs,
                                                on_event=events))


@app.command()
def gc(dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")]
       = False, as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Find and remove what interrupted commands left behind, and repair what libvirt lost.

    Looks for: subvolumes without a domain, domains whose subvolume is gone, this store's DHCP
    reservations, hosts files and leases without a container, stale lock files, temporary
    subvolumes of killed builds, libvirt's per-container leftovers in /run/libvirt/lxc, and
    running containers libvirt lost the init pid of (restarted). Never touches what another
    store or another tool made. Idempotent: a second run finds nothing."""
    from lxcforge.ops import gc as gc_ops

    report = gc_ops.collect(state.settings, dry_run=dry_run)
    if as_json:
        print_json(report)
    else:
        verb = "would remove" if dry_run else "removed"
        for item in report.items:
            out().print(f"{verb if item.kind != 'unmanaged' else ('would repair' if dry_run else 'repaired')} "
                        f"{item.kind} {item.what}" + (f" ({item.detail})" if item.detail else ""), markup=False)
        err().print(f"gc: {len(report.items)} found in {report.seconds:.2f} s"
                    + (" (dry run: nothing changed)" if dry_run else ""), markup=False)
    if report.errors:
        for error in report.errors:
            err().print(f"[bold red]failed:[/] {error}", markup=True)
        raise typer.Exit(1)


@app.command()
def boot(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """What the host runs once at boot (the lxcforge-boot service): attach the store, start
    the networks containers use, start the containers marked with --autostart, then gc.
    Safe to run again: running containers are left alone."""
    from lxcforge.ops import boot as boot_ops

    summary = boot_ops.start_marked(state.settings)
    _print_summary(summary, as_json)


@app.command()
def console(name: ContainerArg) -> None:
    """Attach to a container's console (log in there; Ctrl+] leaves)."""
    argv = container_ops.console_argv(state.settings, name)
    os.execvp(argv[0], argv)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(  # noqa: A001
    target: Annotated[str, typer.Argument(metavar="NAME|GLOB", help="A container, a glob ('web*') or "
                                          "names separated by commas.", autocompletion=_complete_containers)],
    command: Annotated[list[str], typer.Argument(metavar="-- CMD...")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="Run as this user (name or uid, from the "
                                             "container's /etc/passwd).")] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", "-w", help="Working directory inside the container "
                                            "(default: its /).")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE, repeatable.")] = None,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="A terminal for the command even when stdin is "
                                      "not one (default: a terminal exactly when stdin is one).")] = False,
    no_tty: Annotated[bool, typer.Option("--no-tty", "-T", help="No terminal, even when stdin is one.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every running container of this store "
                                       "(then NAME|GLOB is '-').")] = False,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Containers at once, with several "
                                             "(default 16).")] = None,
    report: ReportOpt = None,
    as_json: JsonOpt = False, fmt: FormatOpt = None,
) -> None:
    """Run a command inside containers: in their namespaces and cgroups (their memory and CPU
    limits apply), with no capability their own root lacks.

    One container: stdin, stdout, stderr and the exit status pass through. Several (a glob,
    names with commas, --all): in parallel; each output line prefixed with its container's
    name (or, with --json, each container's exit status, stdout, stderr and duration); exit
    status 1 if any failed.

      lxcforge exec web1 -- systemctl is-system-running

      lxcforge exec -u nobody -w /tmp -e LANG=C web1 -- id

      lxcforge exec 'web*' -j 32 -- sh -c 'uptime'"""
    many = (all_ or as_json or jobs is not None or report is not None or "," in target
            or any(ch in target for ch in "*?["))
    recorder = _recorder(report, "exec")
    if tty and no_tty:
        raise LxcforgeError("--tty and --no-tty contradict each other", hint="give one of them")
    if not many:
        from lxcforge import enter

        entry = container_ops.enter(state.settings, target, command, user=user, cwd=cwd, env=env or [])
        if tty and not sys.stdin.isatty():
            raise typer.Exit(enter.run_on_new_terminal(entry))
        if no_tty and (sys.stdin.isatty() or sys.stdout.isatty()):
            raise typer.Exit(enter.run_without_terminal(entry))
        os.execve(entry.argv[0], entry.argv, entry.env)  # the terminal, if any, is passed as it is
    from lxcforge.ops import exec_many

    patterns = [] if all_ else [p for p in target.split(",") if p]
    names = bulk_ops.resolve(state.settings, patterns, all_=all_)
    started = time.monotonic()
    results = exec_many.run_many(state.settings, names, command, user=user, cwd=cwd, env=env or [],
                                 jobs=jobs or 16, on_done=_show_run(as_json))
    for ran in results:
        recorder.add(ran.name, ran.ok, ran.error or (f"exit {ran.status}" if not ran.ok else None),
                     [("exec", ran.started_at, ran.started_at + ran.seconds)])
    recorder.write()
    _report_runs("exec", results, time.monotonic() - started, as_json)


def _show_run(as_json: bool) -> Callable[[Any], None]:
    """Each container's output as it finishes, every line under its name (not with --json)."""
    def show(ran: Any) -> None:
        if as_json:
            return
        for line in ran.stdout.splitlines():
            out().print(f"{ran.name} | {line}", markup=False, highlight=False)
        for line in (ran.stderr.splitlines() + ([ran.error] if ran.error else [])):
            err().print(f"{ran.name} | {line}", markup=False, highlight=False)
    return show


def _report_runs(action: str, results: list[Any], seconds: float, as_json: bool) -> None:
    """The summary of a command run in many containers; exit 1 if any failed."""
    failed = [r for r in results if not r.ok]
    if as_json:
        print_json({"action": action, "total": len(results), "succeeded": len(results) - len(failed),
                    "seconds": round(seconds, 3), "results": results})
    else:
        err().print(f"{action}: {len(results) - len(failed)} of {len(results)} succeeded in {seconds:.1f} s"
                    + (f"; failed: {', '.join(f'{r.name} ({r.error or r.status})' for r in failed[:10])}"
                       + (" ..." if len(failed) > 10 else "") if failed else ""), markup=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def push(source: Annotated[Path, typer.Argument(metavar="SRC", help="A file on this host.")],
         target: Annotated[str, typer.Argument(metavar="NAME:DEST", help="Container (or glob, or names with "
                                               "commas) and the absolute path to write.")],
         jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Containers at once (default 16).")] = None,
         as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Copy a file into running containers, written by their own root inside them (a link
    planted in a container cannot point the write outside it), keeping its mode.

      lxcforge push ./motd 'web*':/etc/motd"""
    from lxcforge.ops import files

    started = time.monotonic()
    results = files.push(state.settings, source, target, jobs=jobs or 16, on_done=_show_run(as_json))
    _report_runs("push", results, time.monotonic() - started, as_json)


@app.command()
def pull(source: Annotated[str, typer.Argument(metavar="NAME:SRC", help="Container (or glob, or names with "
                                               "commas) and the absolute path to read.")],
         dest: Annotated[Path, typer.Argument(metavar="DEST", help="A file; with several containers, a "
                                              "directory that gets NAME/<file>.")],
         jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Containers at once (default 16).")] = None,
         as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Copy a file out of running containers, read by their own root inside them.

      lxcforge pull web1:/var/log/app.log ./app.log

      lxcforge pull 'web*':/var/log/app.log ./logs     # ./logs/web1/app.log, ..."""
    from lxcforge.ops import files

    started = time.monotonic()
    results = files.pull(state.settings, source, dest, jobs=jobs or 16, on_done=_show_run(as_json))
    _report_runs("pull", results, time.monotonic() - started, as_json)


def _network_table(nets: list[network_ops.NetworkSummary]) -> Table:
    from rich.table import Table

    table = Table("name", "state", "bridge", "subnet", "forward", "addresses", "used", "free", "containers",
                  "orphaned", box=None, pad_edge=False)
    for n in nets:
        table.add_row(n.name, "active" if n.active else "inactive", n.bridge or "-", n.subnet or "-",
                      n.forward or "-", str(n.addresses), str(n.reserved), str(n.free), str(len(n.containers)),
                      f"{n.orphaned} (lxcforge gc)" if n.orphaned else "0")
    return table


@network_app.command("create")
def network_create(
    name: str,
    subnet: Annotated[str, typer.Option(help="IPv4 subnet, e.g. 10.40.0.0/22 (1021 addresses).")],
    isolated: Annotated[bool, typer.Option("--isolated", help="No forwarding: containers reach only the host "
                                           "and each other.")] = False,
    as_json: JsonOpt = False, fmt: FormatOpt = None,
) -> None:
    """Create and start a network with DHCP over the whole subnet (gateway .1), NAT unless --isolated."""
    summary = network_ops.create(state.settings, name, subnet, isolated=isolated)
    _show(summary, as_json, lambda: _network_table([summary]))


@network_app.command("list")
def network_list(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Networks with their addresses: in the DHCP range, reserved, free; and containers on them."""
    nets = network_ops.list_networks(state.settings)
    _show(nets, as_json, lambda: _network_table(nets))


@network_app.command("adopt")
def network_adopt(name: NetworkArg, as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Make an existing libvirt network (such as 'default') fast for many containers: a dnsmasq
    hosts directory for reservations (otherwise each costs libvirt's live update, ~0.3 s, one
    at a time) and STP off. Restarts the network, so it is refused while anything is attached."""
    summary = network_ops.adopt(state.settings, name)
    _show(summary, as_json, lambda: _network_table([summary]))


@network_app.command("rm")
def network_rm(name: NetworkArg) -> None:
    """Remove a network (refused while containers use it)."""
    network_ops.remove(state.settings, name)


@host_app.command("tune")
def host_tune(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Raise kernel limits for hundreds of containers, mount the cgroup v1 hierarchies the host
    lacks (otherwise every container's systemd creates and destroys them, and boots slower),
    and remove cgroups left by containers that no longer exist. Idempotent; lasts until reboot
    (vagrant/provision.sh runs it and makes the limits persistent)."""
    tuned = tuning.tune(state.settings.uri)
    if as_json:
        print_json(tuned)
    elif not tuned.changed:
        out().print("host already tuned")
    else:
        _print_fields(tuned)


def main() -> None:
    try:
        # What app() runs, but only the command called is turned into click's parameters.
        clitree.command_tree(app)()
    except LxcforgeError as exc:
        err().print(f"[bold red]error:[/] {exc.message}", markup=True)
        if exc.hint:
            err().print(f"hint: {exc.hint}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err().print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug or an unexpected host condition: one line, details with -vv
        logging.getLogger("lxcforge").debug("unexpected error", exc_info=True)
        err().print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {exc}", markup=True)
        err().print("hint: run again with -vv for details, and report it if it looks like a bug", markup=False)
        sys.exit(1)
