"""A typer app's click command tree, with each top-level command built when click first looks
it up: typer turns every command's signature into click parameters before it parses anything
(~20 ms for lxcforge's forty commands, on every call), and a call runs one of them.

The names are all known at once and in typer's order (commands, then groups), so help, shell
completion and "did you mean" read the same tree typer builds; they build every command.
Each is built by typer's own get_command_from_info / get_group_from_info (typer is held below
0.29; tests/unit/test_startup.py compares this tree with typer's)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING

import typer
import typer.core
import typer.main
from typer.models import CommandInfo, TyperInfo

if TYPE_CHECKING:
    from typer._click import Command


class _Deferred(MutableMapping[str, "Command"]):
    """A group's commands by name, each made by its builder on first lookup."""

    def __init__(self, builders: dict[str, Callable[[], Command]]) -> None:
        self._builders = builders
        self._built: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            self._built[name] = self._builders[name]()
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._builders[name] = lambda: command
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


def _builders(app: typer.Typer) -> dict[str, Callable[[], Command]] | None:
    """What typer's get_group_from_info makes of app's commands and groups, deferred; None
    when a name is only known once built (a group added without one)."""
    builders: dict[str, Callable[[], Command]] = {}

    def command(info: CommandInfo) -> Callable[[], Command]:
        return lambda: typer.main.get_command_from_info(
            info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode)

    def group(info: TyperInfo) -> Callable[[], Command]:
        return lambda: typer.main.get_group_from_info(
            info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode,
            suggest_commands=app.suggest_commands)

    for info in app.registered_commands:
        if info.callback is None:
            return None
        builders[info.name or typer.main.get_command_name(info.callback.__name__)] = command(info)
    for sub in app.registered_groups:
        if not isinstance(sub.name, str) or not sub.name:
            return None
        builders[sub.name] = group(sub)
    return builders


def command_tree(app: typer.Typer) -> Command:
    """app as click runs it (what typer's own app() runs), its commands built on demand."""
    builders = _builders(app)
    if builders is None or not (app.registered_callback or app.info.callback):
        return typer.main.get_command(app)
    # The group itself, its options and callback, from a copy of app without commands.
    bare = copy.copy(app)
    bare.registered_commands = []
    bare.registered_groups = []
    root = typer.main.get_command(bare)
    if not isinstance(root, typer.core.TyperGroup):
        return typer.main.get_command(app)
    root.commands = _Deferred(builders)
    return root
