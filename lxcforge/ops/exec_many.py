"""`lxcforge exec 'web*' -- CMD`: one command in many containers at once, each entered as a
single exec enters one (lxcforge/enter.py), with its output and exit status kept apart.

Each command starts as a small chain of host programs, so nothing of lxcforge's runs in a
child forked from its threads: a shell writes its own pid into the container's cgroups,
setpriv narrows the bounding set to the container init's (and sets its security label, where
libvirt's driver gives one), and nsenter joins the namespaces through the descriptors libvirt
opened."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lxcforge import enter, host
from lxcforge.config import Settings
from lxcforge.errors import HostNotReady, LxcforgeError
from lxcforge.ops import container as container_ops
from lxcforge.run import which
from lxcforge.virt import ThreadConnections

# sh -c JOIN sh FILE... -- CMD...: this shell's pid into each cgroup.procs FILE, then CMD.
JOIN = 'for f; do shift; [ "$f" = -- ] && break; echo $$ > "$f" || exit 126; done; exec "$@"'


@dataclass
class Ran:
    name: str
    status: int | None  # the command's exit status; None when it could not be started
    stdout: str
    stderr: str
    seconds: float
    error: str | None = None
    started_at: float = 0.0  # wall clock, epoch seconds (for --report)

    @property
    def ok(self) -> bool:
        return self.status == 0


def setpriv_caps(keep: int, last: int) -> str:
    """setpriv's --bounding-set argument for exactly the capabilities in keep."""
    return ",".join(["-all", *(f"+cap_{cap}" for cap in range(last + 1) if keep & (1 << cap))])


def run_many(settings: Settings, targets: Sequence[str], command: Sequence[str], *, user: str | None = None,
             cwd: str | None = None, env: Sequence[str] = (), jobs: int = 16, timeout: float | None = None,
             stdin_path: Path | None = None, stdout_to: Callable[[str], Path] | None = None,
             on_done: Callable[[Ran], None] = lambda _ran: None) -> list[Ran]:
    """command in each of targets. stdin_path: a file each command reads as its stdin (else
    none); stdout_to: the file each container's stdout goes to, by name (else kept in Ran)."""
    if not command:
        raise LxcforgeError("no command given", hint="lxcforge exec 'web*' -- CMD [ARGS...]")
    tools = {tool: which(tool) for tool in ("nsenter", "setpriv", "sh")}
    missing = [tool for tool, path in tools.items() if path is None]
    if missing:
        raise HostNotReady(f"{', '.join(missing)} not installed", hint="install util-linux")
    variables = container_ops.exec_environment(env)
    last_cap = int(open(enter.LAST_CAP_FILE).read())  # noqa: SIM115 - tiny file
    mount_list = host.mounts()

    with ThreadConnections(settings.uri) as connections:
        def one(name: str) -> Ran:
            started, wall = time.monotonic(), time.time()
            fds: list[int] = []
            try:
                way = container_ops.way_in(connections.get(), settings, name, user, mount_list)
                fds = way.fds
                child_env = dict(variables)
                if way.home is not None:
                    child_env["HOME"] = way.home
                # libvirt's groups (the container's limits), then the container's own below them
                # where it has them (an unprivileged one has them in name=systemd only).
                procs = host.cgroup_procs_files(way.controller, mount_list) + way.cgroup_procs
                if not procs:
                    raise LxcforgeError(f"cannot find {name}'s cgroups")
                # An unprivileged container's user namespace is entered first (a nsenter of its
                # own): entering it gives a full bounding set again, which setpriv then narrows.
                user_ns = enter.foreign_user_namespace(fds)
                join_user = ([] if user_ns is None else
                             [str(tools["nsenter"]), f"--user=/proc/self/fd/{user_ns}", "--setuid", "0",
                              "--setgid", "0", "--"])
                argv = [str(tools["sh"]), "-c", JOIN, "sh", *procs, "--", *join_user, str(tools["setpriv"]),
                        "--bounding-set", setpriv_caps(way.bounding_set, last_cap),
                        *enter.setpriv_label_options(way.label), "--",
                        *enter.nsenter_argv(str(tools["nsenter"]), fds, command, uid=way.uid, gid=way.gid,
                                            cwd=cwd, user_joined=user_ns is not None)]
                with contextlib.ExitStack() as files:
                    stdin = files.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
                    stdout = files.enter_context(open(stdout_to(name), "wb")) if stdout_to else subprocess.PIPE
                    done = subprocess.run(argv, env=child_env, pass_fds=fds, stdin=stdin, stdout=stdout,
                                          stderr=subprocess.PIPE, timeout=timeout)
                ran = Ran(name, done.returncode, (done.stdout or b"").decode(errors="replace"),
                          done.stderr.decode(errors="replace"), time.monotonic() - started, started_at=wall)
            except (LxcforgeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
                message = exc.message if isinstance(exc, LxcforgeError) else str(exc)
                ran = Ran(name, None, "", "", time.monotonic() - started, error=message, started_at=wall)
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            on_done(ran)
            return ran

        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="lxcforge-exec") as pool:
            return list(pool.map(one, targets))
