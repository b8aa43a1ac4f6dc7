"""Fixtures that make real things (loop pools, networks, domains) and always remove them."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lxcforge import dhcp, host, network
from lxcforge.errors import LxcforgeError
from lxcforge.rootfs import build, debian, fixups
from lxcforge.store import Store, create_subvolume
from lxcforge.virt import Lease, Virt
from tests.support import fedora_repo

BUSYBOX = Path("/bin/busybox")


@pytest.fixture
def virt() -> Iterator[Virt]:
    with Virt("lxc:///") as connection:
        yield connection


@contextlib.contextmanager
def loop_pool(directory: Path, name: str = "store") -> Iterator[Store]:
    """A fresh 2G loop-file btrfs pool DIRECTORY/NAME; unmounted and deleted afterwards."""
    pool = Store(directory / name, directory / f"{name}.img", "2G")
    try:
        yield pool.ensure()
    finally:
        subprocess.run(["umount", "-l", str(pool.root)], capture_output=True)
        pool.pool_image.unlink(missing_ok=True)


def open_to_others(path: Path) -> None:
    """o+x on path and the directories above it that lack it (pytest makes its temporary
    directories 0700): an unprivileged container's root, an ordinary user on the host, must
    pass through them to its root filesystem."""
    for directory in (*reversed(path.parents), path):
        mode = directory.stat().st_mode
        if not mode & 0o001:
            directory.chmod(mode | 0o001)


@pytest.fixture
def loop_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh loop-file btrfs pool in a temporary place; unmounted and deleted afterwards."""
    open_to_others(tmp_path)
    with loop_pool(tmp_path) as pool:
        yield pool


def free_subnet(prefix: int = 24) -> str:
    subnet = network.free_subnet(host.routed_ipv4_networks(), prefix, random.Random())
    assert subnet is not None, "no free subnet for a test network"
    return subnet


@contextlib.contextmanager
def isolated_network(virt: Virt, name: str, prefix: int = 24) -> Iterator[str]:
    """An isolated network (no forwarding: nothing leaves this host) on an unused subnet,
    removed with its dnsmasq hosts directory afterwards."""
    dhcp.ensure_hostsdir(network.hostsdir_for(name))
    virt.define_network(network.network_xml(name, free_subnet(prefix), isolated=True))
    try:
        yield name
    finally:
        # A connection of its own: some tests restart libvirtd, which ends older ones.
        with contextlib.suppress(LxcforgeError), Virt("lxc:///") as fresh:
            fresh.remove_network(name)
        dhcp.remove_hostsdir(network.hostsdir_for(name))


@pytest.fixture
def minimal_store(loop_store: Store) -> Store:
    """A loop pool with a minimal base (busybox: DHCP and nothing else); containers boot in
    well under a second."""
    built = lxcforge(loop_store.root, "base", "--distro", "minimal", "--release", "1")
    assert built.returncode == 0, built.stderr
    return loop_store


@pytest.fixture
def minimal_net(virt: Virt, minimal_store: Store, unique: str) -> Iterator[str]:
    """An isolated network for minimal_store's containers; they, and whatever an interrupted
    lxcforge left of them, are removed before the network."""
    with isolated_network(virt, f"lxm-{unique}") as name:
        try:
            yield name
        finally:
            lxcforge(minimal_store.root, "destroy", "--all", "--missing-ok")
            lxcforge(minimal_store.root, "gc")


@pytest.fixture
def test_network(virt: Virt, unique: str) -> Iterator[str]:
    with isolated_network(virt, f"lxft-{unique}") as name:
        yield name


@pytest.fixture
def busybox_base(loop_store: Store, unique: str) -> Path:
    """A minimal rootfs: a static busybox and the directories libvirt mounts over."""
    base = loop_store.base_path(f"busybox-{unique}")
    create_subvolume(base)
    for sub in ("bin", "dev", "proc", "sys", "etc", "tmp"):
        (base / sub).mkdir()
    shutil.copy2(BUSYBOX, base / "bin" / "busybox")
    (base / "bin" / "sh").symlink_to("busybox")
    return base


@pytest.fixture
def domains(virt: Virt) -> Iterator[list[str]]:
    """Names appended here are destroyed and undefined at teardown, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            virt.destroy(name)
        except LxcforgeError:
            pass
        try:
            virt.undefine(name)
        except LxcforgeError:
            pass


# -- session-wide: a cached pool with test bases, a test network --------------------------------


CACHE = Path("/var/cache/lxcforge-tests")
TEST_PASSWORD = "lxcforge-test-password"


def _command(store: Path | None, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "lxcforge", *(["--store", str(store)] if store is not None else []), *args]


def _environment(env: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "LXCFORGE_CONFIG": "/nonexistent", **(env or {})}


def lxcforge(store: Path | None, *args: str, timeout: float = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as an operator would (env: more variables)."""
    return subprocess.run(_command(store, args), capture_output=True, text=True, timeout=timeout,
                          env=_environment(env))


def lxcforge_started(store: Path | None, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The same command line left running (for a signal, or to watch it work), stdout and
    stderr piped."""
    return subprocess.Popen(_command(store, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_environment(env))


def made_by_new(store: Path, net: str, prefix: str, count: int, *options: str) -> list[str]:
    """`new --count COUNT --prefix PREFIX` on net, which must succeed: the names made, sorted."""
    made = lxcforge(store, "new", "--count", str(count), "--prefix", prefix, "--network", net, *options, "--json")
    assert made.returncode == 0, made.stderr
    return sorted(c["name"] for c in json.loads(made.stdout)["created"])


def cached_test_pool() -> Store:
    return Store(CACHE / "pool", CACHE / "pool.img", "16G").ensure()


@pytest.fixture(scope="session")
def cached_pool() -> Iterator[Store]:
    """A loop pool kept between runs for slow-to-build test bases; unmounted after the session."""
    pool = cached_test_pool()
    try:
        yield pool
    finally:
        subprocess.run(["umount", str(pool.root)], capture_output=True)


def _digest(*objects: object) -> str:
    text = "\0".join(inspect.getsource(o) if inspect.ismodule(o) else repr(o) for o in objects)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@pytest.fixture(scope="session")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "root-password"
    path.write_text(TEST_PASSWORD + "\n")
    return path


def debian_test_base_name() -> str:
    """The name of the Debian test base: it changes when the code that builds it does."""
    return f"debian-test-{_digest(debian, fixups, build)}"


def ensure_debian_test_base(pool: Store, password_file: Path) -> str:
    """The Debian bookworm systemd base in POOL, built by `lxcforge base` unless present.
    Where $LXCFORGE_TEST_BASES holds NAME.base (written by tests/support/carry_bases.py on
    another host), it is imported instead: a VM with no route to a Debian mirror."""
    name = debian_test_base_name()
    if (pool.bases / name).is_dir():
        return name
    for stale in pool.bases.glob("debian-test-*"):
        lxcforge(pool.root, "base", "rm", stale.name)
    carried = Path(os.environ.get("LXCFORGE_TEST_BASES", "/nonexistent")) / f"{name}.base"
    if carried.is_file():
        result = lxcforge(pool.root, "base", "import", str(carried), "--name", name, timeout=900)
    else:
        result = lxcforge(pool.root, "base", "--distro", "debian", "--release", "bookworm",
                          "--name", name, "--root-password-file", str(password_file), timeout=900)
    assert result.returncode == 0, result.stderr
    return name


@pytest.fixture(scope="session")
def debian_base(cached_pool: Store, password_file: Path) -> str:
    """A Debian bookworm systemd base built by `lxcforge base`, reused while its inputs match."""
    return ensure_debian_test_base(cached_pool, password_file)


@pytest.fixture(scope="session")
def fedora_repo19() -> Path:
    return fedora_repo.build_repo(19)


@pytest.fixture(scope="session")
def session_network() -> Iterator[str]:
    """An isolated network for the session's containers."""
    with Virt("lxc:///") as connection, isolated_network(connection, f"lxfs-{os.urandom(3).hex()}") as name:
        yield name


@pytest.fixture
def containers(cached_pool: Store) -> Iterator[list[str]]:
    """Names appended here are destroyed (domain, address, subvolume) at teardown."""
    names: list[str] = []
    yield names
    for name in names:
        lxcforge(cached_pool.root, "destroy", "--missing-ok", name)


def leases_of(virt: Virt, net: str, wanted: Callable[[Lease], bool], settle: float = 5.0) -> list[Lease]:
    """The network's leases for which wanted is true, once libvirt's lease table has caught
    up: dnsmasq ends a released lease at once, the status file its helper rewrites follows
    one lease event at a time. An empty answer is waited for up to settle seconds."""
    deadline = time.monotonic() + settle
    while True:
        found = [lease for lease in virt.leases(net) if wanted(lease)]
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)
