"""File operations inside a rootfs that never follow a symlink out of it.

A rootfs is untrusted input: /etc/shadow may be a symlink to the host's. Every path is
walked one component at a time with O_NOFOLLOW relative to the directory above it, so no
symlink is followed at all; a symlink where lxcforge must write is refused (UnsafePath)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from lxcforge.errors import UnsafePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(inner: str) -> list[str]:
    path = PurePosixPath("/" + inner.lstrip("/"))
    parts = [p for p in path.parts[1:] if p not in ("", ".")]
    if ".." in parts or not parts:
        raise UnsafePath(f"refusing path {inner!r}", hint="paths inside a rootfs must be plain")
    return parts


@contextlib.contextmanager
def _parent_fd(root: Path, parts: list[str], *, create: bool, mode: int = 0o755) -> Iterator[int]:
    fd = os.open(root, _DIR_FLAGS)
    try:
        walked = ""
        for part in parts[:-1]:
            walked += "/" + part
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, mode, dir_fd=fd)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(f"{root}{walked} is a symlink or not a directory; refusing to "
                                     "follow it", hint="the rootfs may be hostile; inspect it") from exc
                raise
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def _refuse_link(exc: OSError, root: Path, inner: str) -> None:
    if exc.errno == errno.ELOOP:
        raise UnsafePath(f"{root}/{inner.lstrip('/')} is a symlink; refusing to follow it",
                         hint="the rootfs may be hostile; inspect it") from exc


def exists(root: Path, inner: str) -> bool:
    """True if inner exists as a regular file or directory (a symlink counts as absent)."""
    parts = _parts(inner)
    try:
        with _parent_fd(root, parts, create=False) as fd:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError, UnsafePath):
        return False
    return stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)


def is_symlink(root: Path, inner: str) -> bool:
    parts = _parts(inner)
    try:
        with _parent_fd(root, parts, create=False) as fd:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return stat.S_ISLNK(st.st_mode)


@contextlib.contextmanager
def _open_file(root: Path, inner: str) -> Iterator[int]:
    """An fd for inner, opened read-only without following a symlink anywhere on the way."""
    parts = _parts(inner)
    with _parent_fd(root, parts, create=False) as dir_fd:
        try:
            # O_NONBLOCK: a FIFO planted in a rootfs must not hang the reader.
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            _refuse_link(exc, root, inner)
            raise
        try:
            yield fd
        finally:
            os.close(fd)


READ_LIMIT = 16 * 1024 * 1024  # a configuration file, not a device's endless stream


def read_text(root: Path, inner: str) -> str:
    """inner's content; only a regular file is read (a FIFO or device node planted in the
    rootfs is refused), and at most READ_LIMIT bytes of it."""
    with _open_file(root, inner) as fd:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(f"{inner} in {root} is not a regular file", hint="the rootfs is not as expected")
        chunks: list[bytes] = []
        size = 0
        while size < READ_LIMIT and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)[:READ_LIMIT].decode("utf-8", errors="surrogateescape")


def write_text(root: Path, inner: str, text: str, mode: int = 0o644, *, dir_mode: int = 0o755) -> None:
    """Replace inner's content (creating missing parent directories), keeping an existing
    file's mode and owner; write to a temporary name and rename, so no reader sees half."""
    parts = _parts(inner)
    with _parent_fd(root, parts, create=True, mode=dir_mode) as dir_fd:
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath(f"{root}/{inner.lstrip('/')} is a symlink; refusing to write through it",
                                 hint="the rootfs may be hostile; inspect it")
            mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        except FileNotFoundError:
            uid = gid = -1
        tmp = f".{name}.lxcforge-tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                     dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(text)
                os.fchmod(handle.fileno(), mode)
                if uid != -1:
                    os.fchown(handle.fileno(), uid, gid)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise


def make_dirs(root: Path, inner: str, mode: int = 0o755) -> None:
    parts = _parts(inner) + ["."]
    with _parent_fd(root, parts, create=True, mode=mode):
        pass


def chmod(root: Path, inner: str, mode: int) -> None:
    with _open_file(root, inner) as fd:
        os.fchmod(fd, mode)


def lchown(root: Path, inner: str, uid: int, gid: int) -> None:
    """Change the owner of inner itself (a link is changed, never followed), if it exists."""
    parts = _parts(inner)
    try:
        with _parent_fd(root, parts, create=False) as dir_fd:
            os.chown(parts[-1], uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass


def symlink(root: Path, inner: str, target: str) -> None:
    """Make inner a symlink to target (interpreted inside the container), replacing a file or
    link there. Creating a link never follows one."""
    parts = _parts(inner)
    with _parent_fd(root, parts, create=True) as dir_fd:
        name = parts[-1]
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"{root}/{inner.lstrip('/')} is a directory", hint="inspect the rootfs")
            os.unlink(name, dir_fd=dir_fd)
        os.symlink(target, name, dir_fd=dir_fd)


def remove(root: Path, inner: str) -> None:
    """Remove a file or symlink (not what it points to); no error if absent."""
    parts = _parts(inner)
    try:
        with _parent_fd(root, parts, create=False) as dir_fd:
            os.unlink(parts[-1], dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def mtime_ns(root: Path, inner: str) -> int:
    """inner's modification time in nanoseconds (a symlink is refused, not followed)."""
    parts = _parts(inner)
    with _parent_fd(root, parts, create=False) as dir_fd:
        st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{root}/{inner.lstrip('/')} is a symlink; refusing to follow it",
                         hint="the rootfs may be hostile; inspect it")
    return st.st_mtime_ns


def set_mtime_ns(root: Path, inner: str, ns: int) -> None:
    """Set inner's access and modification times, never through a symlink."""
    with _open_file(root, inner) as fd:
        os.utime(fd, ns=(ns, ns))


def regular_files(root: Path, inner: str) -> list[str]:
    """Names of the regular files in directory inner (symlinks left out); empty if inner does
    not exist or a symlink is on the way to it."""
    parts = _parts(inner)
    try:
        with _parent_fd(root, parts, create=False) as parent:
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError, UnsafePath):
        return []
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return []
        raise
    try:
        return sorted(name for name in os.listdir(fd)
                      if stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode))
    finally:
        os.close(fd)
