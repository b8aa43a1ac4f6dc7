"""Unprivileged containers: a user namespace maps the container's uids and gids 0..COUNT-1 to
the host's OFFSET..OFFSET+COUNT-1, so root inside is an unprivileged user outside. The files
must be owned by the shifted ids: a base is shifted once per range into a read-only copy
(STORE/shifted/BASE@OFFSET.UUID) that every container using that range snapshots, so clones
stay copy-on-write.

What shifting keeps: owners (ids outside 0..COUNT-1 become the range's nobody), set-id bits
(chown clears them), file capabilities (rewritten as version 3 with the range's root as
their owner, which is how the kernel honours them inside a user namespace)."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

COUNT = 65536
DEFAULT_OFFSET = 100_000
NOBODY = 65534
CAPABILITY_XATTR = "security.capability"
_VFS_CAP_REVISION_MASK = 0xFF000000
_VFS_CAP_REVISION_2 = 0x02000000
_VFS_CAP_REVISION_3 = 0x03000000


def check_offset(offset: int) -> None:
    if offset < COUNT or offset + COUNT > 2**32 - 1:
        raise ValueError(f"id range {offset}..{offset + COUNT - 1} is not usable: give an offset of at least "
                         f"{COUNT} (e.g. {DEFAULT_OFFSET})")


def shifted_id(value: int, offset: int) -> int:
    return offset + (value if 0 <= value < COUNT else NOBODY)


def capability_v3(raw: bytes, rootid: int) -> bytes | None:
    """A security.capability value as version 3, owned by rootid; None if it is not one the
    kernel writes (versions 2 and 3)."""
    if len(raw) < 4:
        return None
    magic = struct.unpack_from("<I", raw)[0]
    revision, flags = magic & _VFS_CAP_REVISION_MASK, magic & ~_VFS_CAP_REVISION_MASK
    if revision not in (_VFS_CAP_REVISION_2, _VFS_CAP_REVISION_3) or len(raw) < 20:
        return None
    return struct.pack("<I", _VFS_CAP_REVISION_3 | flags) + raw[4:20] + struct.pack("<I", rootid)


def shift_tree(root: Path, offset: int) -> int:
    """Shift the owner of every entry of root (root included) by offset, in place; never
    follows a link. Returns how many entries it changed."""
    changed = 0
    for directory, dirnames, filenames in os.walk(root):
        entries = [directory] if directory == str(root) else []
        entries += [os.path.join(directory, name) for name in dirnames + filenames]
        for path in entries:
            info = os.lstat(path)
            capability = None
            if stat.S_ISREG(info.st_mode):
                try:
                    capability = os.getxattr(path, CAPABILITY_XATTR, follow_symlinks=False)
                except OSError:
                    capability = None
            os.chown(path, shifted_id(info.st_uid, offset), shifted_id(info.st_gid, offset),
                     follow_symlinks=False)
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(info.st_mode))  # chown cleared them
            if capability is not None:
                rewritten = capability_v3(capability, offset)
                if rewritten is not None:
                    os.setxattr(path, CAPABILITY_XATTR, rewritten, follow_symlinks=False)
            changed += 1
    return changed


def unsearchable_ancestor(path: Path) -> Path | None:
    """The first directory above path that other users cannot pass through (no o+x): an
    unprivileged container's root, an ordinary user on the host, could not reach its root
    filesystem there."""
    for parent in reversed(path.resolve().parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None
