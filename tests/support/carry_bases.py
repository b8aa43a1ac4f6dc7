"""Carry the Debian test base to a host that cannot build it (a VM with no route to a Debian
mirror):

    python -m tests.support.carry_bases DIR

writes DIR/NAME.base, building the base in the tests' cached pool first if it is missing; the
suite on the other host imports it when LXCFORGE_TEST_BASES=DIR. Old *.base files in DIR go."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from tests.integration.conftest import TEST_PASSWORD, cached_test_pool, ensure_debian_test_base, lxcforge


def carry(directory: Path) -> Path:
    pool = cached_test_pool()
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".password") as password:
            password.write(TEST_PASSWORD + "\n")
            password.flush()
            name = ensure_debian_test_base(pool, Path(password.name))
        target = directory / f"{name}.base"
        if target.is_file():
            return target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.base"):
            old.unlink()
        partial = target.with_suffix(".partial")
        result = lxcforge(pool.root, "base", "export", name, str(partial), "--compress", timeout=900)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            sys.exit(f"carry_bases: export of {name} failed: {result.stderr.strip()}")
        partial.rename(target)
        return target
    finally:
        subprocess.run(["umount", str(pool.root)], capture_output=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.carry_bases DIR")
    print(carry(Path(sys.argv[1])))
