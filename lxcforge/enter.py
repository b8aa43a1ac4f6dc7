"""Entering a running container the way libvirt's own tools do, and no stronger than it.

`virsh lxc-enter-namespace` (and Ansible's libvirt_lxc connection) open the container's
namespaces through libvirt (virDomainLxcOpenNamespace) and join its cgroups
(virDomainLxcEnterCGroup), but keep the caller's full capability bounding set: a process
entered that way could do what the container's own root cannot (mknod, for one). lxcforge's
exec does the same two steps and also narrows its bounding set to the container init's
before the command runs, then lets nsenter join the namespaces through the descriptors
libvirt gave it. The third step of libvirt's, the container's security label (SELinux or
AppArmor, where libvirt's driver gives containers one), is applied to the command's exec the
way libvirt's security drivers do it; under the 'none' driver there is none."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass

_PR_CAPBSET_DROP = 24
_CLONE_NEWUSER = 0x10000000
LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"
# nsenter's option for each namespace type, in the order it joins them.
NSENTER_OPTIONS = {"user": "--user", "ipc": "--ipc", "uts": "--uts", "net": "--net", "pid": "--pid",
                   "mnt": "--mount", "cgroup": "--cgroup", "time": "--time"}


def bounding_set(pid: int | str) -> int:
    """A process's capability bounding set (CapBnd of /proc/PID/status)."""
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115 - tiny file
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise ValueError(f"no CapBnd for process {pid}")


def narrow_bounding_set(keep: int) -> None:
    """Drop every capability not in keep from this process's bounding set: whatever it runs
    next can hold no other, even as root."""
    libc = ctypes.CDLL(None, use_errno=True)
    last = int(open(LAST_CAP_FILE).read())  # noqa: SIM115 - tiny file
    for cap in range(last + 1):
        if not keep & (1 << cap) and libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"cannot drop capability {cap} from the bounding set: {os.strerror(errno)}")


def foreign_user_namespace(fds: Sequence[int]) -> int | None:
    """The descriptor of a user namespace other than this process's among fds (an
    unprivileged container's), else None."""
    own = os.stat("/proc/self/ns/user").st_ino
    return next((fd for fd in fds if namespace_type(fd) == "user" and os.fstat(fd).st_ino != own), None)


def join_user_namespace(fd: int) -> None:
    """Enter a user namespace as its root, as nsenter --user does. Entering one gives a full
    bounding set again, so an unprivileged container's is narrowed after this, not before.
    Root there, not the host's unmapped uid 0: only its root keeps capabilities across the
    exec of nsenter, which still has namespaces to join."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWUSER) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot enter the container's user namespace: {os.strerror(errno)}")
    try:
        os.setgroups([])
    except PermissionError:  # refused where the namespace denies setgroups: then none may be left
        if os.getgroups():
            raise OSError("cannot drop the host's supplementary groups in the container's user namespace") from None
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def check_namespaces(fds: Sequence[int], init_pid: int) -> None:
    """The descriptors libvirt gave must be the container init's own mount and pid
    namespaces (a pid libvirt kept from an earlier run could now be any process's)."""
    own = {kind: os.stat(f"/proc/{init_pid}/ns/{kind}").st_ino for kind in ("mnt", "pid")}
    given = {namespace_type(fd): os.fstat(fd).st_ino for fd in fds}
    for kind, inode in own.items():
        if given.get(kind) != inode:
            raise ValueError(f"libvirt's {kind} namespace is not the container init's")


def own_cgroup_namespace(init_pid: int) -> int | None:
    """A descriptor of the init's cgroup namespace where it has one of its own (not this
    process's), else None."""
    if os.stat(f"/proc/{init_pid}/ns/cgroup").st_ino == os.stat("/proc/self/ns/cgroup").st_ino:
        return None
    return os.open(f"/proc/{init_pid}/ns/cgroup", os.O_RDONLY | os.O_CLOEXEC)


def label_next_exec(label: tuple[str, str] | None) -> None:
    """The security label the next exec of this process gets (SELinux context, AppArmor
    profile): the container's, so an exec'd command is confined like the container."""
    if label is None:
        return
    model, value = label
    text = value if model == "selinux" else f"exec {value}" if model == "apparmor" else None
    if text is None:
        raise ValueError(f"unknown security model {model}")
    with open("/proc/self/attr/exec", "w") as attr:  # noqa: PTH123 - a kernel interface, one write
        attr.write(text)


def setpriv_label_options(label: tuple[str, str] | None) -> list[str]:
    """The same, as setpriv options (for commands started by a chain of host programs)."""
    if label is None:
        return []
    model, value = label
    if model == "selinux":
        return ["--selinux-label", value]
    if model == "apparmor":
        return ["--apparmor-profile", value]
    raise ValueError(f"unknown security model {model}")


def namespace_type(fd: int) -> str:
    """'mnt', 'net', ... for a namespace descriptor (its link reads 'mnt:[4026531840]')."""
    return os.readlink(f"/proc/self/fd/{fd}").split(":", 1)[0]


@dataclass(frozen=True)
class Entry:
    """How to run a command inside a container: nsenter's argv, the environment, the
    descriptors nsenter must inherit."""

    argv: list[str]
    env: dict[str, str]
    fds: list[int]


def nsenter_argv(nsenter: str, fds: Sequence[int], command: Sequence[str], *, uid: int | None = None,
                 gid: int | None = None, cwd: str | None = None, user_joined: bool = False) -> list[str]:
    """nsenter joining each namespace by descriptor (the same user namespace as ours is
    left out: joining it again is refused). user_joined: the user namespace is entered, as
    its root, before nsenter runs (see join_user_namespace): left out."""
    own_user = os.stat("/proc/self/ns/user").st_ino
    argv = [nsenter]
    for fd in fds:
        kind = namespace_type(fd)
        if kind == "user" and (user_joined or os.fstat(fd).st_ino == own_user):
            continue
        if kind in NSENTER_OPTIONS:
            argv.append(f"{NSENTER_OPTIONS[kind]}=/proc/self/fd/{fd}")
    # Joining a mount namespace moves our root and working directory to its root (the
    # container's /), so no --root is needed. nsenter's --wd would open the directory before
    # it joins: a directory of the host's, so the container's own shell changes directory.
    if uid is not None:
        argv += ["--setuid", str(uid), "--setgid", str(gid if gid is not None else uid)]
    if cwd:
        command = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *command]
    return [*argv, "--", *command]


def run_on_new_terminal(entry: Entry) -> int:
    """Run entry on a pseudo-terminal of its own (exec -t when stdin is not a terminal),
    relaying this process's stdin and stdout to it; returns its exit status."""
    import pty
    import select

    pid, master = pty.fork()
    if pid == 0:  # child: the terminal is its stdin, stdout and stderr
        os.execve(entry.argv[0], entry.argv, entry.env)
    for fd in entry.fds:
        os.close(fd)
    stdin_open = True
    while True:
        watched = [master] + ([0] if stdin_open else [])
        ready, _, _ = select.select(watched, [], [])
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal's last user is gone
                data = b""
            if not data:
                break
            os.write(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                os.write(master, data)
            else:
                os.write(master, b"\x04")  # end of input, as Ctrl-D on a terminal
                stdin_open = False
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_without_terminal(entry: Entry) -> int:
    """Run entry with pipes for stdin, stdout and stderr even where this process has a
    terminal (exec -T: output a script parses, no terminal control characters)."""
    import shutil
    import subprocess
    import sys
    import threading

    child = subprocess.Popen(entry.argv, env=entry.env, pass_fds=entry.fds, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for fd in entry.fds:
        os.close(fd)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None

    def feed() -> None:
        assert child.stdin is not None
        try:
            shutil.copyfileobj(sys.stdin.buffer, child.stdin)
        except (BrokenPipeError, OSError):
            pass
        finally:
            child.stdin.close()

    copies = [threading.Thread(target=feed, daemon=True),
              threading.Thread(target=shutil.copyfileobj, args=(child.stdout, sys.stdout.buffer)),
              threading.Thread(target=shutil.copyfileobj, args=(child.stderr, sys.stderr.buffer))]
    for thread in copies:
        thread.start()
    status = child.wait()
    for thread in copies[1:]:
        thread.join()
    sys.stdout.flush()
    return status
