"""Building a rootfs into a directory: run the package manager, then apply the fix-ups."""

from __future__ import annotations

import logging
import platform
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lxcforge.errors import CommandFailed, HostNotReady, LxcforgeError
from lxcforge.rootfs import debian, fedora, fixups, minimal, safepath
from lxcforge.run import run, which

log = logging.getLogger(__name__)

DISTROS = ("fedora", "debian", "ubuntu", "minimal")
# Where the store's package cache appears inside the installroot while dnf runs (dnf
# resolves cachedir inside the installroot; a bind mount in a private mount namespace puts
# the store's cache there and vanishes with the process, even if it is killed).
GUEST_CACHE = "/var/cache/lxcforge-pkgs"
SYSUSERS_DIR = "/usr/lib/sysusers.d"
_UNREACHABLE = re.compile(
    r"(Failed to download metadata|Cannot download repomd|Curl error|Could not resolve host|"
    r"Cannot find a valid baseurl|Failed to retrieve|Failed getting|Couldn't (resolve|download))",
    re.IGNORECASE)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Credentials:
    password_hash: str | None = None
    ssh_key: str | None = None


@dataclass(frozen=True)
class BuildRequest:
    distro: str
    release: str
    arch: str = field(default_factory=platform.machine)
    packages: tuple[str, ...] = ()
    mirror: str | None = None
    repos: tuple[str, ...] = ()
    gpgcheck: bool = True
    gpg_key: Path | None = None
    credentials: Credentials = Credentials()

    @property
    def fedora_release(self) -> int:
        return int(self.release)


def validate(request: BuildRequest) -> None:
    if request.distro not in DISTROS:
        raise LxcforgeError(f"unknown distro {request.distro!r}", hint=f"use one of {', '.join(DISTROS)}")
    if request.distro == "fedora":
        if not request.release.isdigit() or not 10 <= int(request.release) <= 99:
            raise LxcforgeError(f"invalid Fedora release {request.release!r}", hint="use a number, e.g. --release 41")
    elif request.distro == "minimal":
        if request.repos or request.mirror or request.packages:
            raise LxcforgeError("the minimal base takes no packages, mirror or repositories",
                                hint="lxcforge base --distro minimal --release 1")
    elif not re.fullmatch(r"[a-z][a-z0-9.-]*", request.release):
        raise LxcforgeError(f"invalid {request.distro} release {request.release!r}",
                            hint="use a code name, e.g. --release bookworm or --release noble")
    if request.repos and request.distro != "fedora":
        raise LxcforgeError("--repo is for Fedora bases", hint=f"use --mirror for {request.distro}")


def hash_password(password: str) -> str:
    """A SHA-512 crypt(3) hash with a random salt (never stores the plaintext)."""
    if not password or "\n" in password:
        raise LxcforgeError("the root password file must hold one non-empty line",
                            hint="write the password alone on the file's first line")
    return run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n").stdout.strip()


def build_rootfs(request: BuildRequest, root: Path, workdir: Path, cache: Path, progress: Progress) -> None:
    """Install request's distribution into root (an empty directory) and apply the fix-ups.
    workdir: an empty scratch directory outside root; cache: the store's package cache."""
    if request.distro == "minimal":
        progress("installing the host's busybox")
        minimal.build(root)
        apply_base_fixups(root, fixups.NetworkStack.NETWORKD, request.credentials, minimal_base=True)
        return
    if request.distro == "fedora":
        _install_fedora(request, root, workdir, cache, progress)
        release = request.fedora_release
        stack = fedora.network_stack(release)
    else:
        _install_debian(request, root, cache, progress)
        stack = fixups.NetworkStack.NETWORKD
    create_system_users(root, workdir, rpm_based=request.distro == "fedora")
    progress("applying fix-ups")
    apply_base_fixups(root, stack, request.credentials)


def apply_base_fixups(root: Path, stack: fixups.NetworkStack, credentials: Credentials,
                      minimal_base: bool = False) -> None:
    fixups.securetty(root)
    fixups.empty_machine_id(root)
    fixups.disable_selinux(root)
    fixups.empty_fstab(root)
    fixups.no_build_host_resolver(root)
    if not minimal_base:  # busybox's init needs none of these
        fixups.dhcp_on_eth0(root, stack)
        fixups.mask_units(root)
        fixups.mask_generators(root)
        fixups.static_generator_output(root)
        fixups.writable_cgroups_for_daemons(root)
        fixups.no_credential_mounts(root)
        fixups.volatile_journal(root)
    if credentials.password_hash:
        fixups.root_password_hash(root, credentials.password_hash)
    if credentials.ssh_key:
        fixups.ssh_authorized_key(root, credentials.ssh_key)
    if not minimal_base:
        fixups.update_done_stamps(root)  # last: nothing may touch /usr after it


def _manager() -> tuple[fedora.PackageManager, str]:
    chosen = fedora.choose_manager({m.value: which(m.value) for m in fedora.PackageManager})
    if chosen is None:
        raise HostNotReady("no dnf5, dnf or yum on this host",
                           hint="install dnf (Debian: apt-get install dnf; vagrant/provision.sh does it)")
    return chosen


def _install_fedora(request: BuildRequest, root: Path, workdir: Path, cache: Path, progress: Progress) -> None:
    release = request.fedora_release
    manager, manager_path = _manager()
    repos = fedora.apply_repo_options(fedora.standard_repos(release, request.arch, request.mirror), request.repos)
    key = request.gpg_key
    gpgcheck = request.gpgcheck
    if gpgcheck and key is None:
        try:
            key = fedora.find_gpg_key(release, request.arch)
        except ValueError as exc:
            raise LxcforgeError(str(exc), hint="reinstall lxcforge, or pass --gpg-key FILE") from exc
        if key is None:
            # lxcforge ships the keys of 19-44; say loudly when a release has none.
            log.warning("no signing key for Fedora %s here or shipped with lxcforge: packages will NOT be "
                        "signature-checked (pass --gpg-key FILE, or install distribution-gpg-keys)", release)
            gpgcheck = False
    repos = fedora.with_gpg(repos, key, gpgcheck)

    config_dir = workdir / "config"
    config_dir.mkdir(mode=0o700, exist_ok=True)
    reposdir = config_dir / "repos"
    reposdir.mkdir(exist_ok=True)
    (reposdir / "lxcforge.repo").write_text(fedora.render_repo_file(repos))
    config = config_dir / f"{manager.value}.conf"
    config.write_text(fedora.render_config(manager, reposdir, Path(GUEST_CACHE), Path("/var/log")))
    # rpm's database path comes from macros: a Debian host's rpm would put it in /root/.rpmdb.
    (config_dir / ".rpmmacros").write_text(f"%_dbpath {fedora.rpmdb_path(release)}\n")
    host_cache = cache / manager.value / f"fedora-{release}-{request.arch}"
    host_cache.mkdir(parents=True, exist_ok=True)
    (root / GUEST_CACHE.lstrip("/")).mkdir(parents=True, exist_ok=True)

    argv = fedora.install_argv(
        manager, manager_path, installroot=root, release=release, arch=request.arch, config=config,
        reposdir=reposdir, packages=fedora.packages_for(release, request.packages),
        host_arch=platform.machine())
    progress(f"installing Fedora {release} with {manager.value}")
    script = (f"mount --bind {shlex.quote(str(host_cache))} {shlex.quote(str(root / GUEST_CACHE.lstrip('/')))}"
              f" && exec {shlex.join(argv)}")
    try:
        run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            env={"HOME": str(config_dir)}, on_line=progress)
    except CommandFailed as exc:
        if "GPG check FAILED" in exc.stderr_tail or "signature" in exc.stderr_tail.lower() and "fail" in \
                exc.stderr_tail.lower():
            raise LxcforgeError(
                f"package signatures did not verify against {key or 'the release key'}: "
                f"{exc.stderr_tail.strip().splitlines()[-1]}",
                hint="check that the repository is the one you meant and --gpg-key is its key "
                "(--no-gpgcheck only for a source you trust)") from exc
        unreachable = _UNREACHABLE.search(exc.stderr_tail)
        if unreachable:
            where = ", ".join(url for r in repos for url in (r.baseurl, r.metalink) if url)
            raise LxcforgeError(
                f"could not reach the Fedora mirror ({where}): {exc.stderr_tail.strip().splitlines()[-1]}",
                hint="point at a reachable mirror with --mirror URL (the .../fedora/linux directory) "
                "or at repositories with --repo URL (file:// works)") from exc
        raise
    finally:
        _rmdir_quiet(root / GUEST_CACHE.lstrip("/"))
    _rebuild_rpmdb(release, root, host_cache, workdir, progress)
    _keep_repositories(root, repos, key)


def _keep_repositories(root: Path, repos: list[fedora.Repo], key: Path | None) -> None:
    """The base's own dnf/yum gets the repositories (and key) its packages came from."""
    files = fedora.guest_repo_files(repos)
    if files is None:
        return
    for path, text in files.items():
        safepath.write_text(root, path, text)
    if key is not None:
        safepath.write_text(root, fedora.GUEST_KEY, key.read_text())


def create_system_users(root: Path, workdir: Path, *, rpm_based: bool) -> None:
    """The system users and groups the base's packages declare in sysusers.d files.

    Fedora 42 packages no longer create them in scriptlets: rpm 4.19+ does, from those files.
    A host with an older rpm (Debian 12: 4.18) installs them without, owning their files as
    root, and systemd's own catch-up at boot (systemd-sysusers.service) is skipped because
    the base carries systemd's update stamps. So, as mkosi does, run systemd-sysusers
    --root on the tree after installing; then have rpm put back the owners it could not set."""
    declared = [name for name in safepath.regular_files(root, SYSUSERS_DIR) if name.endswith(".conf")]
    if not declared:
        return
    tool = which("systemd-sysusers")
    if tool is None:
        log.warning("systemd-sysusers is not installed: the base's system users from sysusers.d are not created")
        return
    # systemd older than 254 skips the 'u!' lines newer packages write (a user whose login is
    # locked); in a container's rootfs that is the same as 'u'.
    text = "".join(re.sub(r"^u!(?=\s)", "u", safepath.read_text(root, f"{SYSUSERS_DIR}/{name}"), flags=re.M) + "\n"
                   for name in sorted(declared))
    run([tool, f"--root={root}", "-"], input=text)
    if rpm_based:
        run(["rpm", "--root", str(root), "--restore", "-a"], env={"HOME": str(workdir / "config")}, check=False)


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _rebuild_rpmdb(release: int, root: Path, host_cache: Path, workdir: Path, progress: Progress) -> None:
    """The host's rpm wrote the database; make it one the guest's own rpm can read.
    Fedora < 33 reads only Berkeley DB, so a sqlite database from a newer host rpm is
    re-registered package by package with the guest's rpm (--justdb) from the cache."""
    host_backend = run(["rpm", "--eval", "%{?_db_backend}"], check=False).stdout.strip() or "bdb"
    plan = fedora.rpmdb_plan(release, host_backend, guest_has_rpm=_guest_has_rpm(root))
    if plan is fedora.RpmdbPlan.KEEP:
        return
    if plan is fedora.RpmdbPlan.NO_GUEST_RPM:
        log.info("the guest has no rpm of its own; its package database stays as the host wrote it")
        return
    progress("re-registering packages with the guest's rpm")
    dbpath = fedora.rpmdb_path(release)
    names = run(["rpm", "--root", str(root), "-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm\n"],
                env={"HOME": str(workdir / "config")}).stdout.split()
    files = {p.name: p for p in host_cache.rglob("*.rpm")}
    missing = [n for n in names if n not in files]
    if missing:
        # Re-registering starts from an empty database: refuse before anything is removed.
        raise LxcforgeError(
            f"cannot rebuild the package database for Fedora {release} with its own rpm: {len(missing)} "
            f"installed packages are not in the package cache {host_cache} ({', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''})",
            hint="the package manager did not keep its downloads there; run 'lxcforge doctor' and report it")
    staging = root / "var/tmp/lxcforge-rpms"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        # The cache and the rootfs are different subvolumes: no hard links, but a reflink is
        # as cheap on btrfs.
        for name in names:
            if name in files:
                run(["cp", "--reflink=auto", str(files[name]), str(staging / name)])
        run(["chroot", str(root), "sh", "-c", fedora.justdb_script(dbpath, "/var/tmp/lxcforge-rpms")])
    finally:
        run(["rm", "-rf", "--one-file-system", str(staging)])


def _guest_has_rpm(root: Path) -> bool:
    return any(safepath.exists(root, p) for p in ("/usr/bin/rpm", "/bin/rpm"))


def _install_debian(request: BuildRequest, root: Path, cache: Path, progress: Progress) -> None:
    if which("debootstrap") is None:
        raise HostNotReady("debootstrap is not installed", hint="install debootstrap (vagrant/provision.sh does it)")
    deb_cache = cache / "debootstrap" / f"{request.distro}-{request.release}-{request.arch}"
    deb_cache.mkdir(parents=True, exist_ok=True)
    argv = debian.debootstrap_argv(request.distro, request.release, root, arch=request.arch,
                                   mirror=request.mirror, cache_dir=deb_cache,
                                   extra_packages=request.packages, gpgcheck=request.gpgcheck)
    progress(f"installing {request.distro} {request.release} with debootstrap")
    started = time.monotonic()
    try:
        run(argv, on_line=progress)
    except CommandFailed as exc:
        if re.search(r"(Failed getting release file|Couldn't download|resolve)", exc.stderr_tail + exc.message):
            raise LxcforgeError(
                f"could not reach the {request.distro} mirror {request.mirror or debian.MIRRORS[request.distro]}",
                hint="pass --mirror URL with a reachable mirror") from exc
        raise
    log.info("debootstrap took %.0f s", time.monotonic() - started)
    # debootstrap leaves its apt lists and package files; the cache keeps the packages.
    run(["rm", "-rf", "--one-file-system", str(root / "var/cache/apt/archives"), str(root / "var/lib/apt/lists")])
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
