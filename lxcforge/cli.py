"""The command line: parse, call an operation, render a table or JSON.
The only place where errors become exit codes."""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lxcforge import config
from lxcforge.errors import LxcforgeError
from lxcforge.ops import doctor as doctor_ops
from lxcforge.store import Store

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

# Without a terminal (CI, pipes) rich would wrap tables at 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class State:
    settings: config.Settings


state = State()


@app.callback()
def main_options(
    store: Annotated[Path | None, typer.Option(
        help="Store directory (btrfs, or empty: a loop-file pool is created). "
        "Env LXCFORGE_STORE; default /var/lib/lxcforge.")] = None,
    uri: Annotated[str | None, typer.Option(help="libvirt URI. Env LXCFORGE_URI; default lxc:///.")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More detail; -vv shows every command run.")] = 0,
) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    state.settings = config.load({"store": store, "uri": uri})


def _store() -> Store:
    s = state.settings
    return Store(s.store, s.pool_image_path, s.pool_size)


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
    sys.stdout.write(json.dumps(_jsonable(value), indent=2) + "\n")


_STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check the host: root, store, libvirtd, cgroups, network, tools, kernel limits.

    Every failing row says how to fix it. Exit status 1 when any check fails."""
    checks = doctor_ops.run_checks(state.settings)
    if as_json:
        print_json({"ok": all(c.status != "fail" for c in checks), "checks": checks})
    else:
        table = Table("check", "status", "detail", "fix", box=None, pad_edge=False)
        for c in checks:
            style = _STATUS_STYLE[c.status.value]
            table.add_row(c.name, f"[{style}]{c.status.value}[/]", c.detail, c.fix)
        out.print(table)
    if any(c.status == doctor_ops.Status.FAIL for c in checks):
        raise typer.Exit(1)


@store_app.command("attach")
def store_attach(as_json: JsonOpt = False) -> None:
    """Create the store (a loop-file btrfs pool unless it is on btrfs) or re-attach it."""
    pool = _store().ensure()
    status = pool.status()
    if as_json:
        print_json({"store": pool.root, **dataclasses.asdict(status)})
    else:
        out.print(f"store {pool.root}: {status.detail}")


@store_app.command("detach")
def store_detach() -> None:
    """Unmount a loop-file pool (its image stays; the next command re-attaches it)."""
    _store().detach()


@store_app.command("status")
def store_status(as_json: JsonOpt = False) -> None:
    """Show where the store is and whether it is ready, changing nothing."""
    pool = _store()
    status = pool.status()
    if as_json:
        print_json({"store": pool.root, "pool_image": pool.pool_image, **dataclasses.asdict(status)})
    else:
        out.print(f"store {pool.root}: {status.state.value} ({status.detail})")


def main() -> None:
    try:
        app()
    except LxcforgeError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", markup=True)
        if exc.hint:
            err.print(f"hint: {exc.hint}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
