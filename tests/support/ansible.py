"""Ansible, from PyPI's `ansible` in the test venv, as a real client of the containers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def assert_each_answers_with_its_name(inventory: Path, pattern: str, names: list[str], home: Path,
                                      **settings: str) -> None:
    """`cat /etc/hostname` through the raw module on the hosts pattern selects, all at once;
    each of names must answer, with its own name. settings: ANSIBLE_* variables of the test
    (which inventory plugins are enabled, and how strictly)."""
    env = {**os.environ, "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
           "ANSIBLE_NOCOLOR": "1", "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **settings}
    result = subprocess.run([str(VENV_BIN / "ansible"), "-i", str(inventory), pattern, "-m", "raw",
                             "-a", "cat /etc/hostname", "-f", str(len(names)), "--one-line"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    answered = {line.split(" | ")[0]: line for line in result.stdout.splitlines() if " | CHANGED" in line}
    assert sorted(answered) == names, result.stdout
    for name in names:
        assert f"(stdout) {name}" in answered[name], answered[name]
