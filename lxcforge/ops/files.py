"""`lxcforge push SRC NAME:DEST` and `lxcforge pull NAME:SRC DEST`: files in and out of
running containers (NAME may be a glob, or names with commas).

The copy runs inside the container, as its own root in its namespaces, cgroups and bounding
set (ops/exec_many.py): a path is resolved in the container's own tree, so a link planted by
root inside can point nowhere outside it, and nothing is written under a mount the
container does not see (a tmpfs on /tmp, /run). Needs a shell and cat in the container."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from lxcforge.config import Settings
from lxcforge.errors import LxcforgeError, NotFound
from lxcforge.ops import bulk, exec_many

# Written next to the destination, then renamed: a reader never sees half a file.
WRITE = 'cat > "$0.lxcforge-push" && chmod "$1" "$0.lxcforge-push" && mv -f "$0.lxcforge-push" "$0"'


def split_spec(spec: str) -> tuple[str, str]:
    """'NAME:PATH' -> (NAME, PATH); PATH must be absolute (inside the container)."""
    target, sep, path = spec.partition(":")
    if not sep or not target or not path.startswith("/"):
        raise LxcforgeError(f"{spec!r} is not NAME:/PATH", hint="e.g. web1:/etc/motd, or 'web*':/etc/motd")
    return target, path


def _targets(settings: Settings, target: str) -> list[str]:
    patterns = [p for p in target.split(",") if p]
    names = bulk.resolve(settings, patterns, all_=False)
    if not names:
        raise NotFound(f"no container matches {target!r}", hint="see 'lxcforge list'")
    return names


def push(settings: Settings, source: Path, spec: str, *, jobs: int = 16,
         on_done: Callable[[exec_many.Ran], None] = lambda _ran: None) -> list[exec_many.Ran]:
    """Copy the host file source to PATH in each container NAME matches."""
    target, dest = split_spec(spec)
    try:
        mode = stat.S_IMODE(source.stat().st_mode)
    except OSError as exc:
        raise LxcforgeError(f"cannot read {source}: {exc.strerror}", hint="give a readable file") from exc
    if not source.is_file():
        raise LxcforgeError(f"{source} is not a regular file", hint="push copies one file")
    return exec_many.run_many(settings, _targets(settings, target), ["/bin/sh", "-c", WRITE, dest, f"{mode:o}"],
                              jobs=jobs, stdin_path=source, on_done=on_done)


def pull(settings: Settings, spec: str, dest: Path, *, jobs: int = 16,
         on_done: Callable[[exec_many.Ran], None] = lambda _ran: None) -> list[exec_many.Ran]:
    """Copy PATH from each container NAME matches to dest: that file for one container, or
    dest/NAME/<file name> for several (dest is then a directory, made if missing)."""
    target, source = split_spec(spec)
    names = _targets(settings, target)
    several = len(names) > 1 or any(ch in target for ch in "*?[,")
    if several:
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            (dest / name).mkdir(exist_ok=True)

    def final(name: str) -> Path:
        return dest / name / Path(source).name if several else dest

    def partial(name: str) -> Path:
        # Written beside the destination, renamed when complete: an existing file is replaced
        # only by a whole copy, never truncated by a failed one.
        path = final(name)
        return path.with_name(f".{path.name}.lxcforge-pull")

    if not several and dest.is_dir():
        raise LxcforgeError(f"{dest} is a directory", hint=f"name the file: {dest / Path(source).name}")
    results = exec_many.run_many(settings, names, ["cat", "--", source], jobs=jobs, stdout_to=partial,
                                 on_done=on_done)
    for ran in results:
        if ran.ok:
            partial(ran.name).rename(final(ran.name))
        else:
            partial(ran.name).unlink(missing_ok=True)
    return results
