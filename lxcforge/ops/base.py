"""`lxcforge base`: build, list, inspect and remove bases (read-only btrfs subvolumes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lxcforge import domain, faults, names, store
from lxcforge.config import Settings
from lxcforge.errors import AlreadyExists, InUse, LxcforgeError, NotFound
from lxcforge.rootfs import build, fixups, safepath
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
    created = datetime.fromtimestamp(store.created_time(path), UTC).isoformat(timespec="seconds")
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

