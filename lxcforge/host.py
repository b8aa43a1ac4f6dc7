"""Facts about the host: mounts, sysctls, cgroup layout, processes. Read-only, but for turning
IPv6 off on bridge ports (disable_ipv6, Ipv6Switch)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

PROC = Path("/proc")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    options: str
    super_options: str = ""  # per-filesystem options; for cgroup v1 they name the controllers


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/PID/mountinfo (see proc(5)); later lines over-mount earlier ones."""
    mounts = []
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, right = line.split(" - ", 1)
        left_fields = left.split()
        right_fields = right.split()
        if len(left_fields) < 6 or len(right_fields) < 2:
            continue
        mounts.append(
            Mount(
                mount_point=_unescape(left_fields[4]),
                fstype=right_fields[0],
                source=_unescape(right_fields[1]),
                options=left_fields[5],
                super_options=right_fields[2] if len(right_fields) > 2 else "",
            )
        )
    return mounts


def mounts(pid: int | str = "self") -> list[Mount]:
    return parse_mountinfo((PROC / str(pid) / "mountinfo").read_text())


def mount_containing(path: str | os.PathLike[str], mount_list: list[Mount]) -> Mount | None:
    """The mount that holds path: the longest matching mount point, the last one mounted."""
    target = os.path.realpath(path)
    best: Mount | None = None
    for mount in mount_list:
        point = mount.mount_point
        if target == point or target.startswith(point.rstrip("/") + "/") or point == "/":
            if best is None or len(point) >= len(best.mount_point):
                best = mount
    return best


def is_mount_point(path: str | os.PathLike[str], mount_list: list[Mount]) -> bool:
    target = os.path.realpath(path)
    return any(m.mount_point == target for m in mount_list)


def has_hybrid_cgroups(mount_list: list[Mount]) -> bool:
    """cgroup v1 controllers plus cgroup2 at /sys/fs/cgroup/unified: libvirt 9's LXC driver
    then fails every start with 'Unable to create directory /sys/fs/cgroup/unified'."""
    has_v1 = any(m.fstype == "cgroup" for m in mount_list)
    has_unified = any(
        m.fstype == "cgroup2" and m.mount_point == "/sys/fs/cgroup/unified" for m in mount_list
    )
    return has_v1 and has_unified


def cgroup_v1_controllers(proc_cgroups: str) -> list[str]:
    """The controllers the kernel offers (enabled rows of /proc/cgroups), in its order."""
    names = []
    for line in proc_cgroups.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.startswith("#") and fields[3] == "1":
            names.append(fields[0])
    return names


def mounted_cgroup_controllers(mount_list: list[Mount]) -> set[str] | None:
    """Controllers held by a cgroup v1 hierarchy mounted here; None where none is (cgroup v2)."""
    v1 = [m for m in mount_list if m.fstype == "cgroup"]
    if not v1:
        return None
    return {option for m in v1 for option in m.super_options.split(",")}


def routed_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Destinations in the main routing table (the default route excluded)."""
    networks = []
    for line in (PROC / "net" / "route").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "00000000":
            continue
        destination = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        networks.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return networks


def read_sysctl(name: str) -> str | None:
    path = PROC / "sys" / name.replace(".", "/")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def pids_of(program: str) -> list[int]:
    """PIDs whose executable name is program (like pgrep -x)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == program:
            found.append(int(entry.name))
    return found


# The modular daemon first (Fedora), then the monolithic one (Debian 12).
LIBVIRT_DAEMON_PID_FILES = (Path("/run/virtlxcd.pid"), Path("/run/libvirtd.pid"))
LIBVIRT_DAEMONS = ("virtlxcd", "libvirtd")


def libvirt_daemon_pids() -> list[int]:
    """The libvirt daemons serving LXC, from their pid files: a scan of /proc (pids_of)
    reads every process's name, thousands on a host full of containers, so it is only the
    fallback where no pid file names a live daemon."""
    found = []
    for path in LIBVIRT_DAEMON_PID_FILES:
        try:
            pid = int(path.read_text().strip())
            comm = (PROC / str(pid) / "comm").read_text().strip()
        except (OSError, ValueError):
            continue
        if comm in LIBVIRT_DAEMONS:
            found.append(pid)
    return found or [pid for program in LIBVIRT_DAEMONS for pid in pids_of(program)]


def threads_total() -> int | None:
    """Threads on the host (what kernel.pid_max limits: every thread takes a pid), from
    /proc/loadavg's running/total field: one read however many processes there are."""
    try:
        return int((PROC / "loadavg").read_text().split()[3].split("/")[1])
    except (OSError, IndexError, ValueError):
        return None


def is_root() -> bool:
    return os.geteuid() == 0


def systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def has_exited(pid: int) -> bool:
    """Gone, or a zombie: a process that has left its cgroups and namespaces."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_exited(pids: Iterable[int], timeout: float) -> bool:
    """Wait until every pid has exited (has_exited); False if some are left after timeout."""
    waiting = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        waiting = [pid for pid in waiting if not has_exited(pid)]
        if not waiting or time.monotonic() >= deadline:
            return not waiting
        time.sleep(0.01)


LIBVIRT_LXC_STATE = Path("/run/libvirt/lxc")


def _controller_argv(pid: int) -> list[bytes] | None:
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return argv if argv and argv[0].endswith(b"libvirt_lxc") else None


def is_libvirt_controller(pid: int) -> bool:
    """True if PID is libvirt's controller (libvirt_lxc) of some container."""
    return _controller_argv(pid) is not None


def _is_controller(pid: int, name: str) -> bool:
    argv = _controller_argv(pid)
    if argv is None or b"--name" not in argv:
        return False
    index = argv.index(b"--name")
    return index + 1 < len(argv) and argv[index + 1] == name.encode()


def lxc_controller_pid(name: str) -> int | None:
    """PID of libvirt's controller process (libvirt_lxc --name NAME) for a running container:
    from libvirt's pid file, else by scanning /proc."""
    try:
        pid = int((LIBVIRT_LXC_STATE / f"{name}.pid").read_text().strip())
        if _is_controller(pid, name):
            return pid
    except (OSError, ValueError):
        pass
    for entry in PROC.iterdir():
        if entry.name.isdigit() and _is_controller(int(entry.name), name):
            return int(entry.name)
    return None


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
        return found
    except OSError:
        pass
    for entry in PROC.iterdir():  # kernels without /proc/PID/task/TID/children
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat_fields[1]) == pid:
            found.append(int(entry.name))
    return found


def lxc_init_pid(name: str) -> int | None:
    """Host PID of a running container's init: the child of its libvirt_lxc controller."""
    controller = lxc_controller_pid(name)
    if controller is None:
        return None
    kids = children(controller)
    return min(kids) if kids else None


def namespace_inodes(pid: int, kinds: tuple[str, ...] = ("mnt", "pid", "net", "uts", "ipc", "user")) -> set[int]:
    """Inodes of a process's namespaces of those kinds (empty if it is gone)."""
    found = set()
    for kind in kinds:
        with contextlib.suppress(OSError):
            found.add((PROC / str(pid) / "ns" / kind).stat().st_ino)
    return found


def interfaces_with_mac_prefix(prefix: tuple[int, ...]) -> list[tuple[str, str]]:
    """(name, MAC) of this namespace's network interfaces whose MAC starts with prefix."""
    start = ":".join(f"{o:02x}" for o in prefix) + ":"
    found = []
    for entry in sorted(Path("/sys/class/net").iterdir()):
        try:
            mac = (entry / "address").read_text().strip().lower()
        except OSError:
            continue
        if mac.startswith(start):
            found.append((entry.name, mac))
    return found


def bridge_ports(bridge: str | None) -> int:
    """Interfaces attached to a Linux bridge (0 if there is no such bridge)."""
    if not bridge:
        return 0
    try:
        return sum(1 for _ in (Path("/sys/class/net") / bridge / "brif").iterdir())
    except OSError:
        return 0


def disable_ipv6(interfaces: Iterable[str], proc: Path = PROC) -> list[str]:
    """Turn IPv6 off on host interfaces that need no address of their own: the host ends of
    containers' veth pairs, bridge ports that only switch frames (the containers' own IPv6,
    and IPv6 between them, are untouched). Each such port otherwise holds a link-local
    address and three IPv6 routes, and the kernel walks every IPv6 route of the host, under
    its global network lock, whenever any interface goes up, changes or goes: with a thousand
    containers, ~3000 routes per veth added or removed, so starting and stopping containers
    in parallel queued on each other inside libvirtd. Returns those it turned off (one
    already off, a kernel without IPv6, or an interface gone meanwhile is skipped)."""
    done = []
    for name in interfaces:
        switch = proc / "sys" / "net" / "ipv6" / "conf" / name / "disable_ipv6"
        with contextlib.suppress(OSError):
            if switch.read_text().strip() == "0":
                switch.write_text("1\n")
                done.append(name)
    return done


# The kernel's disable_ipv6 handler only *tries* the global network lock and makes the write
# start again while anyone holds it: while libvirtd starts other containers (it holds the lock
# across a veth's move into a namespace, RCU waits included) one write spins for 10-50 ms of
# CPU. The shell reads each switch first (a write of the value it has spins the same); a
# sysctl file ends after the first one-byte read, so read's status (EOF: 1) is not the test;
# "command" keeps dash going where a switch is gone (an interface removed meanwhile).
_IPV6_OFF_SCRIPT = ('while IFS= read -r f; do v=; '
                    'command read -r v < "$f"; [ "$v" = 0 ] && command echo 1 > "$f"; done')
# Low enough that the spin yields to the batch's busy workers, not so low that the shell,
# once it holds the lock and is preempted or sleeps inside, waits long for a CPU again.
IPV6_SWITCH_NICE = 10
IPV6_SWITCH_WAIT_SECONDS = 30.0


class Ipv6Switch:
    """disable_ipv6 for a batch of starts, done by one shell at low priority: its writes spin
    on CPU the batch's workers do not want, instead of on a worker's. Not a thread of
    lxcforge's: one at low priority, descheduled while holding Python's lock, would stall
    the others. The shell starts with the first start, in a session of its own (Ctrl-C,
    which lxcforge defers until its batch is in order, does not reach it). Where it cannot
    run or dies, or its pipe is full, a start writes its own; leaving the context waits for
    the shell and then checks every interface it was given, writing those still on."""

    def __init__(self, proc: Path = PROC) -> None:
        self.proc = proc
        self._shell: subprocess.Popen[bytes] | None = None
        self._usable = True
        self._sent: list[str] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Ipv6Switch:
        return self

    def turn_off(self, interfaces: Iterable[str]) -> None:
        names = list(interfaces)
        conf = self.proc / "sys" / "net" / "ipv6" / "conf"
        lines = "".join(f"{conf / name / 'disable_ipv6'}\n" for name in names).encode()
        with self._lock:
            shell = self._started()
            if shell is not None and shell.stdin is not None:
                try:
                    if os.write(shell.stdin.fileno(), lines) == len(lines):
                        self._sent.extend(names)
                        return
                    self._usable = False  # a part written (over PIPE_BUF): its last line is cut
                except BlockingIOError:
                    pass  # a full pipe (a shell starved of CPU): this start writes its own
                except OSError:
                    self._usable = False
        disable_ipv6(names, self.proc)

    def _started(self) -> subprocess.Popen[bytes] | None:
        import subprocess

        if self._shell is None and self._usable:
            try:
                self._shell = subprocess.Popen(["sh", "-c", _IPV6_OFF_SCRIPT], stdin=subprocess.PIPE,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True)
                os.setpriority(os.PRIO_PROCESS, self._shell.pid, IPV6_SWITCH_NICE)
                assert self._shell.stdin is not None
                # No worker ever waits on the shell: a write that would block falls back.
                os.set_blocking(self._shell.stdin.fileno(), False)
            except OSError:
                self._usable = False
        return self._shell if self._usable else None

    def __exit__(self, *exc: object) -> None:
        import subprocess

        with self._lock:
            shell, self._shell, self._usable = self._shell, None, False
        if shell is not None:
            with contextlib.suppress(OSError):
                assert shell.stdin is not None
                shell.stdin.close()
            try:
                shell.wait(IPV6_SWITCH_WAIT_SECONDS)
            except BaseException as exc:  # the wait ran out, or Ctrl-C during it
                shell.kill()
                shell.wait()
                if not isinstance(exc, subprocess.TimeoutExpired):
                    raise
        # Whatever the shell did not get to (killed, a cut line): each switch is read first,
        # so those it did turn off cost a read; the batch's starts are over, nothing spins.
        disable_ipv6(self._sent, self.proc)


def inotify_instances_of_root() -> int:
    """inotify instances held by uid 0 (what fs.inotify.max_user_instances limits)."""
    count = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != 0:
                continue
            for fd in (entry / "fd").iterdir():
                try:
                    if os.readlink(fd) == "anon_inode:inotify":
                        count += 1
                except OSError:
                    continue
        except OSError:
            continue
    return count


def cgroup_procs_files(pid: int, mount_list: list[Mount] | None = None) -> list[str]:
    """The cgroup.procs file of each cgroup process pid is in, on this host's mounts (v1
    controllers, named hierarchies such as name=systemd, and the unified hierarchy):
    writing a pid there moves that process into the same groups."""
    mount_list = mount_list if mount_list is not None else mounts()
    files = []
    for line in (PROC / str(pid) / "cgroup").read_text().splitlines():
        _hid, controllers, path = line.split(":", 2)
        mount_point = cgroup_mount_point(controllers, mount_list)
        if mount_point is None:
            continue
        procs = Path(mount_point) / path.lstrip("/") / "cgroup.procs"
        if procs.exists():
            files.append(str(procs))
    return files


def cgroup_mount_point(controllers: str, mount_list: list[Mount]) -> str | None:
    """Where this host mounts the hierarchy of a /proc/PID/cgroup line's controllers
    ("memory", "name=systemd"; "" for cgroup2)."""
    if controllers:
        wanted = set(controllers.split(","))
        hierarchy = next((m for m in mount_list if m.fstype == "cgroup"
                          and wanted <= set(m.super_options.split(","))), None)
    else:
        hierarchy = next((m for m in mount_list if m.fstype == "cgroup2"), None)
    return hierarchy.mount_point if hierarchy is not None else None
