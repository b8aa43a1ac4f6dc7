"""Start-up of list, info and exec (paid on every call; bench/startup.py has the figures):
which modules they load before their real work, and the command tree typer builds for
them. Not timed: a module loaded where it should not be fails here on any machine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import typer.main

from lxcforge import cli, clitree

# Never needed before a command's first libvirt call (rich draws tables afterwards; sh runs
# programs; matplotlib draws reports; pydantic came with typer 0.29).
HEAVY = {"rich", "sh", "matplotlib", "pydantic", "asyncio"}
# Needed by other commands only: new, destroy, report, a config file.
ELSEWHERE = {"lxcforge.network", "lxcforge.ops.addresses", "lxcforge.dhcp", "lxcforge.rootfs.fixups",
             "lxcforge.rootfs.safepath", "lxcforge.timeline", "_hashlib", "tomllib"}

# The CLI run as the console script runs it, up to the first libvirt connection, which
# instead prints the loaded modules and ends the process: nothing talks to libvirtd.
UNTIL_LIBVIRT = """
import json, os, sys
import lxcforge.virt
def reached(*args, **kwargs):
    print(json.dumps(sorted(sys.modules)))
    os._exit(0)
lxcforge.virt.Virt.__init__ = reached
from lxcforge.cli import main
sys.argv = ["lxcforge", *sys.argv[1:]]
main()
"""


def _loaded(code: str, *args: str) -> set[str]:
    env = {**os.environ, "LXCFORGE_CONFIG": "/nonexistent/config.toml", "LXCFORGE_STORE": "/nonexistent/store"}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importing_the_cli_loads_no_heavy_module() -> None:
    loaded = _loaded("import json, sys, lxcforge.cli; print(json.dumps(sorted(sys.modules)))")
    assert not _tops(loaded) & (HEAVY | {"libvirt", "btrfsutil"})
    assert not loaded & ELSEWHERE


@pytest.mark.parametrize("argv", [["list"], ["info", "web1"], ["exec", "web1", "--", "true"]],
                         ids=["list", "info", "exec"])
def test_list_info_exec_load_only_what_they_use(argv: list[str]) -> None:
    loaded = _loaded(UNTIL_LIBVIRT, *argv)  # printed only by the probe: the command got there
    assert not _tops(loaded) & HEAVY
    assert not loaded & ELSEWHERE


def test_a_call_builds_only_its_command(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = typer.main.get_command_from_info

    def counted(info: typer.models.CommandInfo, **options: Any) -> Any:
        built.append(info.name or "")
        return real(info, **options)

    monkeypatch.setattr(typer.main, "get_command_from_info", counted)
    tree = clitree.command_tree(cli.app)
    assert isinstance(tree, typer.core.TyperGroup)
    assert tree.commands["list"].name == "list"
    assert built == ["list"]


def test_the_tree_is_typer_s_own() -> None:
    """Same commands in the same order, and the same help and errors (help and 'did you
    mean' read every command)."""
    lazy = clitree.command_tree(cli.app)
    full = typer.main.get_command(cli.app)
    assert isinstance(lazy, typer.core.TyperGroup) and isinstance(full, typer.core.TyperGroup)
    assert list(lazy.commands) == list(full.commands)
    for argv in (["--help"], ["list", "--help"], ["info", "--help"], ["exec", "--help"], ["base", "--help"],
                 ["network", "create", "--help"], ["lst"], ["list", "--bogus"]):
        assert _outcome(lazy, argv) == _outcome(full, argv), argv


def _outcome(command: typer.core.TyperGroup, argv: list[str]) -> tuple[object, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            result: object = command.main(args=argv, prog_name="lxcforge", standalone_mode=False)
        except Exception as exc:  # a usage error: its message ("did you mean ...")
            result = f"{type(exc).__name__}: {exc}"
    return result, printed.getvalue()
