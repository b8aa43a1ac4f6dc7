"""Run external programs. The only module that imports `sh`.

Every command is logged as '+ argv' at debug level, gets /dev/null as stdin unless
input is given, runs with a C.UTF-8 locale, and a missing program or a non-zero exit
becomes one readable CommandFailed/HostNotReady carrying the tail of stderr.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lxcforge.errors import CommandFailed, HostNotReady

log = logging.getLogger(__name__)
# sh logs every process start at INFO; our own "+ argv" debug line is enough.
logging.getLogger("sh").setLevel(logging.WARNING)

STDERR_TAIL_LINES = 15


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    # A killed lxcforge takes its children (dnf, debootstrap) with it, so nothing keeps
    # writing into a build that the next command will clean up.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-STDERR_TAIL_LINES:])


def run(
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: str | None = None,
    on_line: Callable[[str], None] | None = None,
    hint: str | None = None,
) -> Result:
    """Run argv and return its result; raise CommandFailed on a non-zero exit when check."""
    argv = _logged(argv)
    full_env = _environment(env)
    # Imported here: sh (and asyncio, which it loads) costs every command ~25 ms of
    # start-up, and most commands run no program.
    import sh

    try:
        command = sh.Command(argv[0])
    except sh.CommandNotFound:
        raise _not_found(argv[0]) from None
    stdout_parts: list[str] = []

    def collect(line: str) -> None:
        stdout_parts.append(line)
        if on_line is not None:
            on_line(line.rstrip("\n"))

    stdin = input if input is not None else open(os.devnull, "rb")  # noqa: SIM115 - closed below
    try:
        finished = command(
            *argv[1:],
            _env=full_env,
            _ok_code=list(range(256)),
            _return_cmd=True,
            _in=stdin,
            _cwd=cwd,
            _tty_out=False,
            _out=collect if on_line is not None else None,
            _preexec_fn=die_with_parent,
        )
    finally:
        if input is None and hasattr(stdin, "close"):
            stdin.close()
    stdout = "".join(stdout_parts) if on_line is not None else _decode(finished.stdout)
    stderr = _decode(finished.stderr)
    result = Result(finished.exit_code, stdout, stderr)
    return _checked(argv, result, check, hint)


def query(argv: Sequence[str], *, check: bool = False, hint: str | None = None) -> Result:
    """run() for a short command whose output is all that is wanted (a size, a state), without
    sh: importing sh and its per-process threads cost such a command ~50 ms more than the
    command itself, on the path of `info` and of every `new`. The same environment, stdin,
    errors and die-with-parent as run()."""
    import subprocess

    argv = _logged(argv)
    try:
        finished = subprocess.run(argv, env=_environment(None), stdin=subprocess.DEVNULL, capture_output=True,
                                  preexec_fn=die_with_parent, check=False)
    except FileNotFoundError:
        raise _not_found(argv[0]) from None
    result = Result(finished.returncode, _decode(finished.stdout), _decode(finished.stderr))
    return _checked(argv, result, check, hint)


def _logged(argv: Sequence[str]) -> list[str]:
    argv = [str(a) for a in argv]
    log.debug("+ %s", shlex.join(argv))
    return argv


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's environment with a C.UTF-8 locale (parsed output stays parseable), plus extra."""
    return {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", **(extra or {})}


def _not_found(program: str) -> HostNotReady:
    return HostNotReady(f"program not found: {program}",
                        hint="install it (vagrant/provision.sh installs everything lxcforge uses)")


def _checked(argv: list[str], result: Result, check: bool, hint: str | None) -> Result:
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, _tail(result.stderr or result.stdout), hint=hint)
    return result


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def which(program: str) -> str | None:
    """The full path of program on PATH, or None."""
    return shutil.which(program)
