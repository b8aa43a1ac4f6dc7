"""A multi-step operation's record of what it made, undone in reverse order on failure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Undo:
    """with Undo() as undo: ...; undo.push("what", fn) after each step that made something.
    Leaving the block by an exception (KeyboardInterrupt included) runs the undo steps."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, description: str, step: Callable[[], None]) -> None:
        self._steps.append((description, step))

    def rollback(self) -> list[str]:
        """Undo everything; returns descriptions of steps that could not be undone."""
        failed = []
        while self._steps:
            description, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # keep undoing the rest
                log.warning("could not undo %s: %s", description, exc)
                failed.append(description)
        return failed

    def commit(self) -> None:
        self._steps.clear()

    def __enter__(self) -> Undo:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.rollback()
