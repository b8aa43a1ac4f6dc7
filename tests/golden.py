"""Compare generated text with a stored file; LXCFORGE_REGENERATE=1 rewrites the file."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

DATA = Path(__file__).parent / "data"


def assert_golden(name: str, actual: str) -> None:
    path = DATA / name
    if os.environ.get("LXCFORGE_REGENERATE") == "1" or not path.exists():
        if os.environ.get("CI") == "true" and not path.exists():
            raise AssertionError(f"golden file {path} is missing")
        path.write_text(actual)
    expected = path.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            str(path), "generated"))
        raise AssertionError(f"output differs from {path} "
                             f"(LXCFORGE_REGENERATE=1 to accept):\n{diff}")
