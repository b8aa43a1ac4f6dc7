"""`lxcforge base`: build, list, inspect and remove bases (read-only btrfs subvolumes)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from lxcforge import domain, faults, names, store
from lxcforge.config import Settings
from lxcforge.errors import AlreadyExists, CommandFailed, InUse, LxcforgeError, NotFound
from lxcforge.rootfs import build, fixups, safepath
from lxcforge.run import which
from lxcforge.store import Store, StoreState
from lxcforge.virt import Virt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseInfo:
    name: str
    distro: str | None
    release: str | None
    path: str
    size_bytes: int | None
    created: str
    containers: list[str]


@dataclass(frozen=True)
class BuildResult:
    base: BaseInfo
    seconds: float


def default_name(distro: str, release: str) -> str:
    return f"{distro}-{release}"


def read_credentials(password_file: Path | None, ssh_key_file: Path | None) -> build.Credentials:
    """Read and check credentials before any long work starts."""
    password_hash = None
    key = None
    if password_file is not None:
        try:
            text = password_file.read_text()
        except OSError as exc:
            raise LxcforgeError(f"cannot read {password_file}: {exc.strerror}",
                                hint="pass a readable file to --root-password-file") from exc
        password_hash = build.hash_password(text.split("\n", 1)[0])
    if ssh_key_file is not None:
        try:
            key = ssh_key_file.read_text().strip()
        except OSError as exc:
            raise LxcforgeError(f"cannot read {ssh_key_file}: {exc.strerror}",
                                hint="pass a public key file (e.g. ~/.ssh/id_ed25519.pub)") from exc
        try:
            fixups.check_public_key(key)
        except ValueError as exc:
            raise LxcforgeError(f"{ssh_key_file}: {exc}", hint="pass the .pub file, not the private key") from exc
    return build.Credentials(password_hash=password_hash, ssh_key=key)


def create(
    settings: Settings,
    request: build.BuildRequest,
    *,
    name: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> BuildResult:
    """Build a base in a temporary subvolume, then move it into bases/NAME read-only.
    A failed or killed build leaves no base; its temporary subvolume is removed by the
    next command at the latest."""
    build.validate(request)
    base_name = names.validate_base_name(name or default_name(request.distro, request.release))
    pool = Store.from_settings(settings).ensure()
    target = pool.base_path(base_name)
    started = time.monotonic()
    with pool.claim(f"base-{base_name}", f"base {base_name} is being built by another lxcforge"):
        if target.exists() and not force:
            raise AlreadyExists(f"base {base_name} already exists",
                                hint="pass --force to rebuild it, or --name for another name")
        with pool.new_tmp_subvolume("base") as tmp:
            faults.point("base.tmp")
            build.build_rootfs(request, tmp.path, tmp.workdir, pool.cache, progress)
            faults.point("base.installed")
            progress("finishing")
            if target.exists():
                # The old base moves to tmp/ and goes with this block (a read-only
                # subvolume cannot be moved).
                store.set_read_only(target, False)
                store.rename_subvolume(target, tmp.workdir / "replaced")
            # A read-only snapshot appears at its final name in one step, already read-only;
            # the writable build subvolume goes with this block.
            store.snapshot(tmp.path, target, read_only=True)
            pool.base_meta_path(base_name).unlink(missing_ok=True)  # it described the old base
            faults.point("base.published")
    info = describe(pool, base_name, containers=None)
    return BuildResult(base=info, seconds=time.monotonic() - started)


def _os_release(root: Path) -> dict[str, str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = safepath.read_text(root, path)
        except (OSError, LxcforgeError):
            continue
        values = {}
        for line in text.splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip().strip('"')
        return values
    return {}


def describe(pool: Store, name: str, containers: dict[str, list[str]] | None) -> BaseInfo:
    path = pool.base_path(name)
    if not store.is_subvolume(path):
        raise NotFound(f"base {name} does not exist", hint="see 'lxcforge base list'")
    release = _os_release(path)
    created = _imported_created(pool, name) or _iso(store.created_time(path))
    return BaseInfo(
        name=name,
        distro=release.get("ID"),
        release=release.get("VERSION_CODENAME") or release.get("VERSION_ID"),
        path=str(path),
        size_bytes=store.total_bytes(path),
        created=created,
        containers=sorted((containers or {}).get(name, [])),
    )


def containers_by_base(settings: Settings) -> dict[str, list[str]]:
    """base name -> lxcforge containers made from it (libvirt's domain metadata is the truth)."""
    users: dict[str, list[str]] = {}
    with Virt(settings.uri) as virt:
        for dom in virt.domains():
            meta = domain.read_metadata(dom.xml)
            if meta and meta.base and meta.store == str(settings.store):
                users.setdefault(meta.base, []).append(dom.name)
    return users


def list_bases(settings: Settings) -> list[BaseInfo]:
    """Every base. A store not attached yet lists none: a listing creates and mounts nothing.
    On an attached store, a killed build's leftovers go first, as with every command."""
    pool = Store.from_settings(settings)
    if pool.status().state is not StoreState.READY:
        return []
    pool.remove_stale_tmp()
    users = containers_by_base(settings)
    return [describe(pool, entry.name, users) for entry in sorted(pool.bases.iterdir())
            if store.is_subvolume(entry)]


def info(settings: Settings, name: str) -> BaseInfo:
    names.validate_base_name(name)
    pool = Store.from_settings(settings)
    pool.require_ready()  # reading changes nothing: no pool is created or attached for it
    return describe(pool, name, containers_by_base(settings))


def remove(settings: Settings, name: str) -> None:
    names.validate_base_name(name)
    pool = Store.from_settings(settings).ensure()
    path = pool.base_path(name)
    if not store.is_subvolume(path):
        raise NotFound(f"base {name} does not exist", hint="see 'lxcforge base list'")
    users = containers_by_base(settings).get(name, [])
    if users:
        shown = ", ".join(sorted(users)[:10]) + (" ..." if len(users) > 10 else "")
        raise InUse(f"base {name} is used by {len(users)} container(s): {shown}",
                    hint="destroy them first ('lxcforge destroy NAME ...')")
    with pool.lock(f"base-{name}", remove=True):
        store.delete_tree(path)
        pool.base_meta_path(name).unlink(missing_ok=True)


# -- carrying bases between hosts -------------------------------------------------------------
# An export file: the line "LXCFORGE-BASE 1", one line of JSON (ExportHeader), then the
# base's `btrfs send` stream, compressed with zstd or gzip or not at all. The header stays
# uncompressed so that it can be read without the compressor; import tells the stream's
# compression from its magic bytes.
EXPORT_MAGIC = b"LXCFORGE-BASE 1\n"
MAX_HEADER_BYTES = 64 * 1024
CHUNK_BYTES = 1 << 20
COMPRESSION_CHOICES = ("auto", "zstd", "gzip")
_NOT_OURS_HINT = ("pass a file written by 'lxcforge base export' (if the whole file was compressed "
                  "afterwards, decompress it first)")
_DAMAGED_HINT = "the file is incomplete or damaged (a truncated copy?): export the base again"


@dataclass(frozen=True)
class ExportHeader:
    name: str
    distro: str | None
    release: str | None
    created: str
    size_bytes: int | None
    lxcforge_version: str
    compression: str | None


@dataclass(frozen=True)
class TransferResult:
    base: BaseInfo
    file: str  # a path, or "-" for standard output/input
    compression: str | None
    file_bytes: int | None  # the export file's size (None on a pipe)
    seconds: float


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _imported_created(pool: Store, name: str) -> str | None:
    """An imported base's original creation time, from its sidecar; None if there is none or it
    describes an earlier base of that name (the sidecar records the subvolume's UUID)."""
    try:
        meta = json.loads(pool.base_meta_path(name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("created"), str):
        return None
    if meta.get("uuid") != store.subvolume_uuid(pool.base_path(name)):
        return None
    return str(meta["created"])


def _write_meta(pool: Store, name: str, header: ExportHeader) -> None:
    meta = {"uuid": store.subvolume_uuid(pool.base_path(name)), "created": header.created,
            "imported": _iso(time.time()), "source": dataclasses.asdict(header)}
    pool.bases_meta.mkdir(mode=0o700, exist_ok=True)
    partial = pool.bases_meta / f".{name}.json.partial"
    partial.write_text(json.dumps(meta, indent=2) + "\n")
    partial.replace(pool.base_meta_path(name))  # whole or not at all


def _lxcforge_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lxcforge")
    except PackageNotFoundError:
        return "unknown"


def _resolve_compression(compress: str | None) -> str | None:
    """None, zstd or gzip; auto: zstd where installed (faster, smaller), else gzip."""
    if compress is None:
        return None
    if compress not in COMPRESSION_CHOICES:
        raise LxcforgeError(f"unknown compression {compress!r}",
                            hint="use --compress (zstd if installed, else gzip), --compression zstd "
                            "or --compression gzip")
    if compress == "auto":
        return "zstd" if which("zstd") else "gzip"
    store.require_compressor(compress)
    return compress


def export_base(settings: Settings, name: str, dest: str, compress: str | None = None) -> TransferResult:
    """Write base NAME to dest (a path, or "-" for standard output): header, then its send
    stream. A file appears complete or not at all (written beside it, then renamed). btrfs
    itself keeps the base from being removed or changed while it is being sent."""
    names.validate_base_name(name)
    compression = _resolve_compression(compress)
    pool = Store.from_settings(settings).ensure()
    base = describe(pool, name, containers=None)
    header = ExportHeader(name=name, distro=base.distro, release=base.release, created=base.created,
                          size_bytes=base.size_bytes, lxcforge_version=_lxcforge_version(),
                          compression=compression)
    started = time.monotonic()
    if dest == "-":
        if sys.stdout.isatty():
            raise LxcforgeError("refusing to write a base to a terminal",
                                hint="redirect standard output to a file or a pipe, or give a FILE")
        _write_export(sys.stdout.buffer, pool.base_path(name), header)
        file_bytes = None
    else:
        file_bytes = _export_to_file(Path(dest), pool.base_path(name), header)
    return TransferResult(base=base, file=dest, compression=compression, file_bytes=file_bytes,
                          seconds=time.monotonic() - started)


def _write_export(out: IO[bytes], path: Path, header: ExportHeader) -> None:
    out.write(EXPORT_MAGIC)
    out.write(json.dumps(dataclasses.asdict(header), separators=(",", ":")).encode() + b"\n")
    store.send_subvolume(path, out, header.compression,
                         hint="check the space where the file goes, and 'lxcforge doctor'")


def _export_to_file(dest: Path, path: Path, header: ExportHeader) -> int:
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as out:
            _write_export(out, path, header)
        partial.replace(dest)
    except OSError as exc:
        raise LxcforgeError(f"cannot write {dest}: {exc.strerror}",
                            hint="check that its directory exists and is writable") from exc
    finally:
        partial.unlink(missing_ok=True)
    return dest.stat().st_size


@contextlib.contextmanager
def _open_source(source: str) -> Iterator[IO[bytes]]:
    if source == "-":
        if sys.stdin.isatty():
            raise LxcforgeError("refusing to read a base from a terminal",
                                hint="redirect standard input from a file or a pipe, or give a FILE")
        yield sys.stdin.buffer
        return
    try:
        stream = open(source, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise LxcforgeError(f"cannot read {source}: {exc.strerror}",
                            hint="pass a file written by 'lxcforge base export'") from exc
    with stream:
        yield stream


def read_header(stream: IO[bytes], label: str) -> ExportHeader:
    """The header of an export, leaving stream at the first byte of the send stream."""
    if stream.read(len(EXPORT_MAGIC)) != EXPORT_MAGIC:
        raise LxcforgeError(f"{label} is not an lxcforge base export", hint=_NOT_OURS_HINT)
    line = stream.readline(MAX_HEADER_BYTES)
    if not line.endswith(b"\n"):
        raise LxcforgeError(f"{label}: the header is cut short", hint=_DAMAGED_HINT)
    try:
        fields: Any = json.loads(line)
        header = ExportHeader(**{f.name: fields.get(f.name) for f in dataclasses.fields(ExportHeader)})
    except (ValueError, TypeError, AttributeError) as exc:
        raise LxcforgeError(f"{label}: the header is not valid", hint=_DAMAGED_HINT) from exc
    if not isinstance(header.name, str) or not isinstance(header.created, str):
        raise LxcforgeError(f"{label}: the header lacks the base's name or creation time", hint=_DAMAGED_HINT)
    return header


def _stream_chunks(stream: IO[bytes], label: str) -> tuple[str | None, Iterator[bytes]]:
    """The stream's compression (from its magic bytes) and its chunks, the first included."""
    first = stream.read(CHUNK_BYTES)
    if not first:
        raise LxcforgeError(f"{label} ends after its header: there is no base in it", hint=_DAMAGED_HINT)
    compression = store.detect_compression(first)
    if compression is None and not first.startswith(store.SEND_STREAM_MAGIC[:len(first)]):
        raise LxcforgeError(f"{label}: after the header comes no btrfs stream", hint=_DAMAGED_HINT)

    def chunks() -> Iterator[bytes]:
        yield first
        while data := stream.read(CHUNK_BYTES):
            yield data

    return compression, chunks()


def import_base(settings: Settings, source: str, *, name: str | None = None, force: bool = False) -> TransferResult:
    """Receive an export into tmp/, then publish it read-only as bases/NAME (NAME: --name or the
    exported name), as a build does. A failed or killed import leaves no base; its temporary
    subvolume is removed by the next command at the latest."""
    if name is not None:
        names.validate_base_name(name)
    label = "standard input" if source == "-" else source
    started = time.monotonic()
    with _open_source(source) as stream:
        header = read_header(stream, label)
        base_name = names.validate_base_name(name or header.name)
        pool = Store.from_settings(settings).ensure()
        target = pool.base_path(base_name)
        with pool.claim(f"base-{base_name}", f"base {base_name} is being built by another lxcforge"):
            if target.exists() and not force:
                raise AlreadyExists(f"base {base_name} already exists",
                                    hint="pass --force to replace it, or --name for another name")
            compression, chunks = _stream_chunks(stream, label)
            _receive_and_publish(pool, base_name, header, compression, chunks, label)
    info = describe(pool, base_name, containers=None)
    return TransferResult(base=info, file=source, compression=compression,
                          file_bytes=None if source == "-" else Path(source).stat().st_size,
                          seconds=time.monotonic() - started)


def _receive_and_publish(pool: Store, base_name: str, header: ExportHeader, compression: str | None,
                         chunks: Iterator[bytes], label: str) -> None:
    target = pool.base_path(base_name)
    with pool.new_tmp_subvolume("import") as tmp:
        inbox = tmp.workdir / "received"
        inbox.mkdir()
        try:
            store.receive_subvolume(inbox, chunks, compression)
        except CommandFailed as exc:
            # The program and its last word, without the temporary path it ran on.
            detail = exc.stderr_tail.strip().splitlines()[-1] if exc.stderr_tail.strip() else "no error output"
            program = " ".join(exc.argv[:2]) if exc.argv[0] == "btrfs" else exc.argv[0]
            raise LxcforgeError(f"{label}: the base in it is incomplete or damaged ({program}: {detail})",
                                hint=_DAMAGED_HINT) from exc
        received = _received_subvolume(inbox, label)
        faults.point("base.received")
        if target.exists():
            # As in create(): the old base moves to tmp/ and goes with this block.
            store.set_read_only(target, False)
            store.rename_subvolume(target, tmp.workdir / "replaced")
        store.snapshot(received, target, read_only=True)
        _write_meta(pool, base_name, header)


def _received_subvolume(inbox: Path, label: str) -> Path:
    """The one subvolume btrfs receive made; it is read-only only if the stream was complete."""
    entries = list(inbox.iterdir())
    if len(entries) != 1 or not store.is_subvolume(entries[0]) or not store.is_read_only(entries[0]):
        raise LxcforgeError(f"{label}: the stream did not hold one complete base", hint=_DAMAGED_HINT)
    return entries[0]
