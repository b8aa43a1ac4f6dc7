#!/usr/bin/env python3
"""The command line's start-up: what every call pays before its real work.

    .venv/bin/python bench/startup.py --runs 20
    .venv/bin/python bench/startup.py --runs 20 --bytecode-cache

Prints median (min-max) over --runs of:
- the interpreter alone (python -c pass) and `lxcforge --version` (a whole call that does nothing);
- `list`, `info NAME` and `exec NAME -- true` up to the call of their operation, which is
  replaced by an exit: the command line's own start-up, no libvirt needed;
- the same up to their first libvirt call (connecting is replaced by an exit), when libvirt's
  Python bindings are installed: adds the operation's modules and the bindings' loading;
- the cumulative import time of lxcforge.cli as `python -X importtime` reports it.

With PYTHONDONTWRITEBYTECODE set, every start compiles lxcforge's sources (an editable install
has no bytecode otherwise); --bytecode-cache runs the children with a cache in a temporary
directory instead, as an installed lxcforge runs."""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.hostfacts import cpu_model  # noqa: E402

LXCFORGE = Path(sys.executable).parent / "lxcforge"

# The child: lxcforge's entry point, with the first step of real work replaced by an exit
# (status 0 only if the command got there).
UNTIL_OPERATION = """
import os, sys, types
def reached(*args, **kwargs):
    os._exit(0)
stub = types.ModuleType("lxcforge.ops.container")
stub.list_containers = stub.info = stub.enter = reached
sys.modules["lxcforge.ops.container"] = stub
from lxcforge.cli import main
sys.argv = ["lxcforge", *sys.argv[1:]]
main()
os._exit(3)
"""
UNTIL_LIBVIRT = """
import os, sys
def reached(*args, **kwargs):
    os._exit(0)
import lxcforge.virt
lxcforge.virt.Virt.__init__ = reached
from lxcforge.cli import main
sys.argv = ["lxcforge", *sys.argv[1:]]
main()
os._exit(3)
"""
COMMANDS = (("list", ["list"]), ("info NAME", ["info", "bench1"]),
            ("exec NAME -- true", ["exec", "bench1", "--", "true"]))


def has_libvirt() -> bool:
    return subprocess.run([sys.executable, "-c", "import libvirt"], capture_output=True).returncode == 0


def wall_ms(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return seconds * 1000


def import_ms(env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import lxcforge.cli"], capture_output=True,
                          text=True, env=env, cwd=REPO, check=True)
    found = re.search(r"^import time:\s+\d+ \|\s+(\d+) \| lxcforge\.cli$", done.stderr, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no lxcforge.cli line in -X importtime's output:\n{done.stderr[-2000:]}")
    return int(found.group(1)) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--bytecode-cache", action="store_true",
                        help="Children keep compiled bytecode in a temporary directory.")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="lxcforge-startup-") as cache:
        if args.bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
        cases: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "lxcforge --version": [str(LXCFORGE), "--version"],
        }
        for label, words in COMMANDS:
            cases[f"{label}, until its operation"] = [sys.executable, "-c", UNTIL_OPERATION, *words]
        libvirt = has_libvirt()
        if libvirt:
            for label, words in COMMANDS:
                cases[f"{label}, until its first libvirt call"] = [sys.executable, "-c", UNTIL_LIBVIRT, *words]
        timings: dict[str, list[float]] = {label: [] for label in cases}
        imports: list[float] = []
        for _ in range(2):  # warm the page cache (and the bytecode cache); not counted
            for command in cases.values():
                wall_ms(command, env)
            import_ms(env)
        for _ in range(args.runs):  # one of each in turn, so a busy moment is shared out
            for label, command in cases.items():
                timings[label].append(wall_ms(command, env))
            imports.append(import_ms(env))

    bytecode = ("cached (in a temporary directory)" if args.bytecode_cache
                else "not written (PYTHONDONTWRITEBYTECODE): lxcforge's sources are compiled at every start"
                if env.get("PYTHONDONTWRITEBYTECODE") else "Python's default")
    print(f"host: {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"python {platform.python_version()}; bytecode {bytecode}")
    print(f"{args.runs} runs each; milliseconds, median (min-max)")
    width = max(len(label) for label in [*timings, "import lxcforge.cli (-X importtime)"])
    for label, values in [*timings.items(), ("import lxcforge.cli (-X importtime)", imports)]:
        print(f"  {label:{width}}  {statistics.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})")
    if not libvirt:
        print("  (libvirt's Python bindings are not installed: no figures up to the first libvirt call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
