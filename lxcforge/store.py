"""The btrfs store: bases/, containers/, cache/, locks/, tmp/. The only module that imports btrfsutil.

The store is a directory on btrfs, used as it is, or (the embedded default, like LXD's loop
pool) a sparse btrfs image file mounted on the store directory. A detached pool (after a
reboot or an unmount) is re-attached by the next command that needs the store.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import btrfsutil

from lxcforge import faults, host
from lxcforge.config import Settings
from lxcforge.errors import AlreadyExists, CommandFailed, HostNotReady, InUse, LxcforgeError, NotFound
from lxcforge.run import die_with_parent, query, run, which

log = logging.getLogger(__name__)

SUBDIRS = ("bases", "containers", "cache", "locks", "tmp", "pending", "shifted")
PER_NAME_LOCKS = ("container-", "base-", "tmp-")


class StoreState(enum.StrEnum):
    READY = "ready"  # on btrfs, usable
    DETACHED = "detached"  # the pool image exists but is not mounted
    ABSENT = "absent"  # nothing yet: the first command creates a loop pool
    NOT_BTRFS = "not-btrfs"  # a non-empty directory on another filesystem


@dataclass(frozen=True)
class StoreStatus:
    state: StoreState
    fstype: str | None
    loop_pool: bool
    detail: str


class Store:
    def __init__(self, root: Path, pool_image: Path, pool_size: str = "64G") -> None:
        self.root = root
        self.pool_image = pool_image
        self.pool_size = pool_size

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The configured store, as it is (call ensure() to attach or create it)."""
        return cls(settings.store, settings.pool_image_path, settings.pool_size)

    # -- layout ---------------------------------------------------------------------------
    @property
    def bases(self) -> Path:
        return self.root / "bases"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def pending(self) -> Path:
        return self.root / "pending"

    def base_path(self, name: str) -> Path:
        return self.bases / name

    @property
    def shifted(self) -> Path:
        return self.root / "shifted"

    def shifted_name(self, base: str, offset: int) -> str:
        """BASE@OFFSET.UUID: which base (and which build of it: a rebuilt or replaced base
        has another subvolume uuid) and which id range; gc removes those of no base."""
        return f"{base}@{offset}.{subvolume_uuid(self.base_path(base))[:12]}"

    def shifted_base(self, base: str, offset: int, shift: Callable[[Path, int], object]) -> Path:
        """The read-only copy of base owned by the id range at offset, made once (shift
        does the work on a writable snapshot in tmp/, then it is renamed into place)."""
        path = self.shifted / self.shifted_name(base, offset)
        if path.exists():
            return path
        with self.lock(f"base-{base}@{offset}", remove=True):  # none outlives the copy it guarded
            if path.exists():
                return path
            with TmpSubvolume(self, "shift", source=self.base_path(base)) as work:
                shift(work.path, offset)
                faults.point("new.shifted")
                # Renamed while writable (a read-only subvolume cannot change directory).
                rename_subvolume(work.path, path)
            set_read_only(path)
        return path

    def stale_shifted(self) -> list[Path]:
        """Shifted copies of bases that no longer exist, or were rebuilt since."""
        if not self.shifted.is_dir():
            return []
        stale = []
        for entry in sorted(self.shifted.iterdir()):
            base, _, rest = entry.name.partition("@")
            try:
                offset = int(rest.split(".")[0])
                current = self.base_path(base).is_dir() and entry.name == self.shifted_name(base, offset)
            except (ValueError, LxcforgeError, OSError):
                current = False
            if not current:
                stale.append(entry)
        return stale

    def container_path(self, name: str) -> Path:
        return self.containers / name

    @property
    def bases_meta(self) -> Path:
        # Beside bases/, not in it: bases/ holds only subvolumes (every entry is a base).
        return self.root / "bases-meta"

    def base_meta_path(self, name: str) -> Path:
        """A base's sidecar JSON (an imported base's original creation time)."""
        return self.bases_meta / f"{name}.json"

    # -- state ----------------------------------------------------------------------------
    def status(self) -> StoreStatus:
        """What the store is now, without changing anything."""
        mount_list = host.mounts()
        if self.root.is_dir():
            mount = host.mount_containing(self.root, mount_list)
            fstype = mount.fstype if mount else None
            mounted_here = host.is_mount_point(self.root, mount_list)
            loop = mounted_here and self.pool_image.exists()
            if fstype == "btrfs":
                detail = f"btrfs loop pool {self.pool_image}" if loop else "btrfs directory"
                return StoreStatus(StoreState.READY, fstype, loop, detail)
            if self.pool_image.exists():
                return StoreStatus(
                    StoreState.DETACHED, fstype, True, f"pool {self.pool_image} is not mounted"
                )
            if any(self.root.iterdir()):
                return StoreStatus(
                    StoreState.NOT_BTRFS, fstype, False, f"{self.root} is on {fstype}, not btrfs"
                )
            return StoreStatus(StoreState.ABSENT, fstype, False, "empty directory, no pool yet")
        if self.pool_image.exists():
            return StoreStatus(StoreState.DETACHED, None, True, f"pool {self.pool_image} is not mounted")
        return StoreStatus(StoreState.ABSENT, None, False, f"{self.root} does not exist yet")

    def ensure(self, *, clean_tmp: bool = True) -> Store:
        """Make the store usable: attach or create the loop pool as needed, lay out the
        directories, and remove temporary subvolumes left by builds that died."""
        with self._host_lock():
            status = self.status()
            if status.state is StoreState.NOT_BTRFS:
                raise HostNotReady(
                    f"store {self.root} is not on btrfs and is not empty",
                    hint="point --store (or LXCFORGE_STORE) at a btrfs directory or at an empty one "
                    "(lxcforge then creates a loop-file btrfs pool there)",
                )
            if status.state is not StoreState.READY:
                _require_root("attach the store")
                if status.state is StoreState.ABSENT:
                    self._create_pool()
                self._mount_pool()
            for sub in SUBDIRS:
                (self.root / sub).mkdir(mode=0o700, exist_ok=True)
        if clean_tmp:
            self.remove_stale_tmp()
            self.remove_stale_locks()
        return self

    def require_ready(self) -> None:
        status = self.status()
        if status.state is not StoreState.READY:
            raise HostNotReady(
                f"store {self.root} is not ready: {status.detail}",
                hint="run 'lxcforge store attach'",
            )

    def detach(self) -> None:
        """Unmount the loop pool (the image stays; the next command re-attaches it)."""
        status = self.status()
        if status.state is StoreState.READY and status.loop_pool:
            run(["umount", str(self.root)])

    def _create_pool(self) -> None:
        log.info("creating loop pool %s (%s, sparse) for store %s", self.pool_image, self.pool_size, self.root)
        self.pool_image.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.pool_image.with_name(self.pool_image.name + ".partial")
        try:
            run(["truncate", "-s", self.pool_size, str(partial)])
            run(["mkfs.btrfs", "-q", "-L", "lxcforge", str(partial)])
            partial.rename(self.pool_image)
        finally:
            partial.unlink(missing_ok=True)

    def _mount_pool(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # noatime: an atime update on a snapshot would un-share its metadata.
        run(
            ["mount", "-t", "btrfs", "-o", "loop,noatime", str(self.pool_image), str(self.root)],
            hint=f"check that {self.pool_image} is a btrfs image and that loop devices are available",
        )

    @contextlib.contextmanager
    def _host_lock(self) -> Iterator[None]:
        # One attach at a time per store, across processes; lives outside the store itself.
        import hashlib  # here: OpenSSL's loading is start-up that list and info do not need

        digest = hashlib.sha1(str(self.root.absolute()).encode()).hexdigest()[:12]
        lock_dir = Path("/run/lock") if host.is_root() else Path("/tmp")
        with _flock(lock_dir / f"lxcforge-store-{digest}.lock", blocking=True):
            yield

    # -- unfinished operations ------------------------------------------------------------
    # A file pending/NAME exists while a `new` or `destroy` of container NAME is under way
    # (written under the name's lock, before the first step; removed once that container is
    # complete or undone). One that outlives its lock's holder marks an operation a killed
    # lxcforge left half done: the next `new NAME`, `destroy NAME` or `gc` removes every piece
    # of NAME. Complete containers of a killed batch have no marker and are kept.
    def mark_pending(self, name: str, operation: str) -> None:
        self.pending.mkdir(mode=0o700, exist_ok=True)
        (self.pending / name).write_text(f"{operation} {os.getpid()}\n")

    def clear_pending(self, name: str) -> None:
        (self.pending / name).unlink(missing_ok=True)

    def is_pending(self, name: str) -> bool:
        return (self.pending / name).exists()

    def pending_names(self) -> list[str]:
        return sorted(p.name for p in self.pending.iterdir()) if self.pending.is_dir() else []

    # -- locks ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool = True, remove: bool = False) -> Iterator[None]:
        """An exclusive lock on name (a container, a base, 'addresses'), across processes.
        remove: delete the lock file on release (per-container locks, so none outlive their
        container)."""
        with _flock(self.lock_path(name), blocking=blocking, remove=remove):
            yield

    def lock_path(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    @contextlib.contextmanager
    def claim(self, name: str, busy: str) -> Iterator[None]:
        """The lock on name if nobody holds it, else InUse(busy) at once; the lock file goes
        with the release (for containers and bases, so none outlive what they guarded)."""
        try:
            cm = self.lock(name, blocking=False, remove=True)
            cm.__enter__()
        except BlockingIOError:
            raise InUse(busy, hint="wait for it to finish and retry") from None
        try:
            yield
        finally:
            cm.__exit__(None, None, None)

    # -- subvolumes -----------------------------------------------------------------------
    def new_tmp_subvolume(self, purpose: str) -> TmpSubvolume:
        """A subvolume under tmp/ that is removed when the block ends, or by the next
        command if this process dies. purpose: letters, digits and '-'."""
        return TmpSubvolume(self, purpose)

    def stale_tmp(self) -> list[Path]:
        """tmp/ entries whose owner no longer holds their lock (a killed build)."""
        if not self.tmp.is_dir():
            return []
        return [entry for entry in sorted(self.tmp.iterdir())
                if self.lock_is_stale(self._tmp_lock(entry))]

    def _tmp_lock(self, entry: Path) -> Path:
        owner = entry.name.split(".")[0]  # "NAME" and its work directory "NAME.work"
        return self.locks / f"tmp-{owner}.lock"

    def remove_tmp(self, entry: Path) -> bool:
        """Delete a build's leftover under its lock; False if its owner is alive after all."""
        lock = self._tmp_lock(entry)
        try:
            with _flock(lock, blocking=False):
                if entry.exists() or entry.is_symlink():
                    delete_tree(entry)
            lock.unlink(missing_ok=True)
        except BlockingIOError:
            return False
        return True

    def remove_stale_tmp(self) -> list[str]:
        """Delete tmp/ entries whose owner no longer holds their lock (a killed build)."""
        removed = [entry.name for entry in self.stale_tmp() if self.remove_tmp(entry)]
        if removed:
            log.info("removed leftovers of interrupted builds: %s", ", ".join(removed))
        return removed

    def stale_locks(self, min_age: float = 0.0) -> list[Path]:
        """Per-name lock files (containers, bases, builds) nobody holds: their holder was
        killed before it could remove them. The one address lock file is permanent.
        min_age: leave younger files alone (see remove_stale_locks)."""
        if not self.locks.is_dir():
            return []
        now = time.time()
        found = []
        for path in sorted(self.locks.glob("*.lock")):
            try:
                young = now - path.stat().st_mtime < min_age
            except FileNotFoundError:
                continue
            if path.name.startswith(PER_NAME_LOCKS) and not young and self.lock_is_stale(path):
                found.append(path)
        return found

    def remove_stale_locks(self) -> None:
        """So that killed commands' lock files do not accumulate (one per name otherwise).
        Only files a minute old: probing a lock takes it for an instant, and a command that
        just created its own must not find it taken (gc, run by hand, takes them all)."""
        for path in self.stale_locks(min_age=60.0):
            self.remove_stale_lock(path)

    @staticmethod
    def lock_is_stale(path: Path) -> bool:
        """True if nobody holds the lock file (or it is gone)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    @staticmethod
    def remove_stale_lock(path: Path) -> None:
        """Remove a lock file nobody holds (taking it first, so a holder is never robbed)."""
        with contextlib.suppress(BlockingIOError), _flock(path, blocking=False, remove=True):
            pass


class TmpSubvolume:
    """A subvolume under tmp/ owned by this process (it holds the lock while it works).
    If the process dies, the lock goes with it and the next command deletes the leftover."""

    def __init__(self, store: Store, purpose: str, *, source: Path | None = None) -> None:
        import secrets  # here, like hashlib above (it loads OpenSSL too)

        self.store = store
        self.source = source  # a snapshot of it, else an empty subvolume
        self.name = f"{purpose}-{os.getpid()}-{secrets.token_hex(3)}"
        self.path = store.tmp / self.name
        # Scratch space beside the subvolume (configuration for the build), removed with it.
        self.workdir = store.tmp / f"{self.name}.work"
        self._lock_path = store.locks / f"tmp-{self.name}.lock"
        self._lock_cm: contextlib.AbstractContextManager[None] | None = None

    def __enter__(self) -> TmpSubvolume:
        self._lock_cm = _flock(self._lock_path, blocking=False)
        self._lock_cm.__enter__()
        if self.source is not None:
            snapshot(self.source, self.path)
        else:
            create_subvolume(self.path)
        self.workdir.mkdir(mode=0o700)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for path in (self.workdir, self.path):
                if path.exists():
                    delete_tree(path)
        finally:
            assert self._lock_cm is not None
            self._lock_cm.__exit__(None, None, None)
            self._lock_path.unlink(missing_ok=True)


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool, remove: bool = False) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BaseException:
            os.close(fd)
            raise
        # A holder that removed the file on release may have left us locking an orphan.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        os.close(fd)


def _require_root(action: str) -> None:
    if not host.is_root():
        raise HostNotReady(f"must run as root to {action}", hint="run lxcforge with sudo")


def _btrfs_error(exc: btrfsutil.BtrfsUtilError, action: str, path: Path) -> LxcforgeError:
    return LxcforgeError(f"cannot {action} {path}: {exc.strerror or exc}",
                         hint="check that the store is on btrfs ('lxcforge doctor')")


# -- subvolume primitives (module level: they need no store) --------------------------------
def create_subvolume(path: Path) -> None:
    if path.exists():
        raise AlreadyExists(f"{path} already exists", hint="remove it first")
    try:
        btrfsutil.create_subvolume(str(path))
    except btrfsutil.BtrfsUtilError as exc:
        raise _btrfs_error(exc, "create subvolume", path) from exc


def snapshot(source: Path, dest: Path, *, read_only: bool = False) -> None:
    if not source.exists():
        raise NotFound(f"{source} does not exist")
    if dest.exists():
        raise AlreadyExists(f"{dest} already exists", hint="remove it first")
    try:
        btrfsutil.create_snapshot(str(source), str(dest), read_only=read_only)
    except btrfsutil.BtrfsUtilError as exc:
        raise _btrfs_error(exc, "snapshot", source) from exc


def is_subvolume(path: Path) -> bool:
    try:
        return bool(btrfsutil.is_subvolume(str(path)))
    except btrfsutil.BtrfsUtilError:
        return False


def set_read_only(path: Path, read_only: bool = True) -> None:
    try:
        btrfsutil.set_subvolume_read_only(str(path), read_only)
    except btrfsutil.BtrfsUtilError as exc:
        raise _btrfs_error(exc, "change read-only flag of", path) from exc


def is_read_only(path: Path) -> bool:
    return bool(btrfsutil.get_subvolume_read_only(str(path)))


def delete_subvolume(path: Path) -> None:
    """Delete a subvolume and any subvolumes nested in it (systemd creates some)."""
    try:
        btrfsutil.delete_subvolume(str(path), recursive=True)
    except btrfsutil.BtrfsUtilError as exc:
        raise _btrfs_error(exc, "delete subvolume", path) from exc


def delete_tree(path: Path) -> None:
    """Delete path whether it is a subvolume or a plain directory (a build that died early)."""
    if is_subvolume(path):
        if is_read_only(path):
            set_read_only(path, False)
        delete_subvolume(path)
    elif path.is_dir() and not path.is_symlink():
        for nested in _nested_subvolumes(path):
            delete_tree(nested)
        run(["rm", "-rf", "--one-file-system", "--", str(path)])
    elif path.exists() or path.is_symlink():
        path.unlink()


def _nested_subvolumes(path: Path) -> list[Path]:
    """Subvolumes below a plain directory (a subvolume's root directory has inode 256)."""
    found = []
    for dirpath, dirnames, _files in os.walk(path):
        for dirname in list(dirnames):
            child = Path(dirpath) / dirname
            if child.stat(follow_symlinks=False).st_ino == 256 and is_subvolume(child):
                found.append(child)
                dirnames.remove(dirname)
    return found


def _du(path: Path) -> tuple[int, int] | None:
    """(total, exclusive) bytes of path as `btrfs filesystem du` counts them: exclusive is what
    only this subvolume holds (not shared with its base), known without quotas."""
    result = query(["btrfs", "filesystem", "du", "-s", "--raw", str(path)])
    if result.returncode != 0:
        return None
    for line in result.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit():
            return int(parts[0]), int(parts[1])
    return None


def exclusive_bytes(path: Path) -> int | None:
    sizes = _du(path)
    return sizes[1] if sizes else None


def total_bytes(path: Path) -> int | None:
    """Bytes referenced by path, shared or not."""
    sizes = _du(path)
    return sizes[0] if sizes else None


def quotas_enabled(path: Path) -> bool | None:
    """True when btrfs qgroups are on for the filesystem holding path (None: cannot tell)."""
    result = query(["btrfs", "qgroup", "show", str(path)])
    if result.returncode == 0:
        return True
    if "quota" in result.stderr.lower() and "not enabled" in result.stderr.lower():
        return False
    return None


def created_time(path: Path) -> float:
    """When the subvolume was created (seconds since the epoch)."""
    info = btrfsutil.subvolume_info(str(path))
    return float(info.otime)


def subvolume_uuid(path: Path) -> str:
    """The subvolume's UUID (hex): a new one for every subvolume, so it tells a base from a
    later one of the same name."""
    info = btrfsutil.subvolume_info(str(path))
    return bytes(info.uuid).hex()


def rename_subvolume(source: Path, dest: Path) -> None:
    """Move a subvolume within the store (a rename: instant, same filesystem)."""
    if dest.exists():
        raise AlreadyExists(f"{dest} already exists", hint="remove it first")
    os.rename(source, dest)


# -- send and receive ----------------------------------------------------------------------
# These use subprocess.Popen, not run(): a base's stream is gigabytes and must flow from
# `btrfs send` to a file (or from a file to `btrfs receive`) without being held in memory.
# A compressed stream is plain zstd or gzip output (so `zstd -d` can read it by hand).
COMPRESSORS = {"zstd": (["zstd", "-q", "-c", "-T0"], ["zstd", "-q", "-d", "-c"]),
               "gzip": (["gzip", "-c"], ["gzip", "-d", "-c"])}
COMPRESSION_MAGIC = {"zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b"}
SEND_STREAM_MAGIC = b"btrfs-stream\0"


def detect_compression(head: bytes) -> str | None:
    """'zstd' or 'gzip' from a stream's first bytes, None for anything else."""
    for name, magic in COMPRESSION_MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def require_compressor(name: str) -> None:
    if name not in COMPRESSORS:
        raise LxcforgeError(f"unknown compression {name!r}", hint="use zstd or gzip")
    if which(name) is None:
        raise HostNotReady(f"program not found: {name}", hint=f"install {name}, or use the other compression")


class _Pipeline:
    """Programs chained stdout to stdin, the first reading stdin, the last writing stdout;
    each one's stderr goes to a temporary file (read only if it fails)."""

    def __init__(self, argvs: list[list[str]], stdin: int | IO[bytes], stdout: int | IO[bytes]) -> None:
        self.argvs = argvs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.errs: list[IO[bytes]] = []
        source: int | IO[bytes] = stdin
        try:
            for i, argv in enumerate(argvs):
                log.debug("+ %s", " ".join(argv))
                err = tempfile.TemporaryFile()
                self.errs.append(err)
                last = i == len(argvs) - 1
                # die_with_parent, as run() does: a killed lxcforge takes its children along,
                # so no `btrfs receive` writes on into a tmp/ the next command removes.
                proc = subprocess.Popen(argv, stdin=source, stdout=stdout if last else subprocess.PIPE,
                                        stderr=err, preexec_fn=die_with_parent)
                previous_out = self.procs[-1].stdout if self.procs else None
                if previous_out is not None:
                    previous_out.close()  # the next program owns the pipe's read end now
                self.procs.append(proc)
                source = proc.stdout if proc.stdout is not None else subprocess.DEVNULL
        except OSError as exc:
            self.kill()
            raise HostNotReady(f"cannot run {argvs[len(self.procs)][0]}: {exc.strerror}",
                               hint="install it (vagrant/provision.sh installs everything lxcforge uses)") from exc

    def kill(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        self.wait(check=False)

    def wait(self, *, check: bool = True, hint: str | None = None) -> None:
        """Wait for every program; raise for the last one that failed (one killed by SIGPIPE
        only saw its reader fail first, which is the error worth showing)."""
        failed: CommandFailed | None = None
        for argv, proc, err in zip(self.argvs, self.procs, self.errs, strict=False):
            returncode = proc.wait()
            err.seek(0)
            text = err.read().decode("utf-8", errors="replace")
            err.close()
            if returncode != 0 and returncode != -signal.SIGPIPE:
                failed = CommandFailed(argv, returncode, text, hint=hint)
        if check and failed is not None:
            raise failed


def send_subvolume(path: Path, out: IO[bytes], compression: str | None, *, hint: str | None = None) -> None:
    """Write the btrfs send stream of the read-only subvolume path to out, from out's current
    position (compressed if asked)."""
    argvs = [["btrfs", "send", "-q", str(path)]]
    if compression is not None:
        require_compressor(compression)
        argvs.append(COMPRESSORS[compression][0])
    out.flush()  # whatever Python buffered (the header) goes before the stream
    pipeline = _Pipeline(argvs, subprocess.DEVNULL, out)
    pipeline.wait(hint=hint)


def receive_subvolume(dest_dir: Path, chunks: Iterable[bytes], compression: str | None, *,
                      hint: str | None = None) -> None:
    """Feed a btrfs send stream (compressed or not) to `btrfs receive` into dest_dir: the
    subvolume appears there under its sent name, read-only once the stream is complete.
    Chunks pass through this process one at a time, so detection of the compression needs no
    seekable input (stdin works)."""
    # --chroot: a hostile stream cannot write outside dest_dir.
    argvs = [["btrfs", "receive", "-q", "--chroot", str(dest_dir)]]
    if compression is not None:
        require_compressor(compression)
        argvs.insert(0, COMPRESSORS[compression][1])
    pipeline = _Pipeline(argvs, subprocess.PIPE, subprocess.DEVNULL)
    feed = pipeline.procs[0].stdin
    assert feed is not None
    stopped_early = False
    try:
        for chunk in chunks:
            feed.write(chunk)
    except BrokenPipeError:
        stopped_early = True  # the program says why below
    except BaseException:
        pipeline.kill()
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            feed.close()
    pipeline.wait(hint=hint)
    if stopped_early:
        raise LxcforgeError("btrfs receive stopped before the end of the stream", hint=hint)
