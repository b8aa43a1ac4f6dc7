"""Fedora: repository definitions, package sets per release, and the dnf5/dnf/yum argv. Pure.

lxcforge writes its own dnf configuration and repository file and points the package manager
at them, so the host's /etc/yum.repos.d and /etc/dnf/dnf.conf are never read."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxcforge.rootfs.fixups import NetworkStack

METALINK = "https://mirrors.fedoraproject.org/metalink?repo={repo}&arch={arch}"
ARCHIVE = "https://archives.fedoraproject.org/pub/archive/fedora/linux"
# Releases up to this one are end-of-life and live only in the archive. Raise it as Fedora
# retires releases (or pass --mirror).
LAST_ARCHIVED_RELEASE = 41
GPG_KEY_DIRS = (Path("/etc/pki/rpm-gpg"), Path("/usr/share/distribution-gpg-keys/fedora"))

# The 2013 recipe's set; see packages_for() for what each release adds.
CORE_PACKAGES = ("systemd", "passwd", "fedora-release", "vim-minimal", "openssh-server",
                 "procps-ng", "iproute", "rootfiles")


class PackageManager(enum.StrEnum):
    DNF5 = "dnf5"
    DNF = "dnf"
    YUM = "yum"


@dataclass(frozen=True)
class Repo:
    id: str
    name: str
    baseurl: str | None = None
    metalink: str | None = None
    gpgcheck: bool = True
    gpgkey: str | None = None


def updates_path(release: int, arch: str) -> str:
    # The updates tree gained an Everything/ level in Fedora 28.
    return f"updates/{release}/Everything/{arch}/" if release >= 28 else f"updates/{release}/{arch}/"


def standard_repos(release: int, arch: str, mirror: str | None = None) -> list[Repo]:
    """fedora + updates: metalink for current releases, the archive for end-of-life ones,
    or the same layout under --mirror."""
    root = mirror.rstrip("/") if mirror else (ARCHIVE if release <= LAST_ARCHIVED_RELEASE else None)
    if root is None:
        return [
            Repo("fedora", f"Fedora {release} - {arch}",
                 metalink=METALINK.format(repo=f"fedora-{release}", arch=arch)),
            Repo("updates", f"Fedora {release} - {arch} - Updates",
                 metalink=METALINK.format(repo=f"updates-released-f{release}", arch=arch)),
        ]
    return [
        Repo("fedora", f"Fedora {release} - {arch}",
             baseurl=f"{root}/releases/{release}/Everything/{arch}/os/"),
        Repo("updates", f"Fedora {release} - {arch} - Updates", baseurl=f"{root}/{updates_path(release, arch)}"),
    ]


def apply_repo_options(repos: list[Repo], repo_args: Sequence[str]) -> list[Repo]:
    """--repo URL (repeatable) uses those repositories instead of the standard ones;
    --repo ID=URL replaces the standard repository ID (fedora, updates) or adds a new one."""
    plain = [arg for arg in repo_args if not _has_id(arg)]
    named = [arg.split("=", 1) for arg in repo_args if _has_id(arg)]
    result = [] if plain else list(repos)
    for i, url in enumerate(plain):
        result.append(Repo(f"lxcforge-repo{i}", f"lxcforge --repo {url}", baseurl=url))
    for repo_id, url in named:
        result = [r for r in result if r.id != repo_id]
        result.append(Repo(repo_id, f"lxcforge --repo {repo_id}", baseurl=url))
    return result


def _has_id(arg: str) -> bool:
    head = arg.split("=", 1)[0]
    return "=" in arg and "/" not in head and ":" not in head


def with_gpg(repos: list[Repo], key: Path | None, gpgcheck: bool) -> list[Repo]:
    return [Repo(r.id, r.name, r.baseurl, r.metalink, gpgcheck=gpgcheck,
                 gpgkey=f"file://{key}" if (gpgcheck and key) else None) for r in repos]


def find_gpg_key(release: int, arch: str, dirs: Sequence[Path] = GPG_KEY_DIRS) -> Path | None:
    for directory in dirs:
        for name in (f"RPM-GPG-KEY-fedora-{release}-{arch}", f"RPM-GPG-KEY-fedora-{release}-primary",
                     f"RPM-GPG-KEY-fedora-{release}"):
            if (directory / name).is_file():
                return directory / name
    return None


def render_repo_file(repos: list[Repo]) -> str:
    sections = []
    for repo in repos:
        lines = [f"[{repo.id}]", f"name={repo.name}"]
        if repo.baseurl:
            lines.append(f"baseurl={repo.baseurl}")
        if repo.metalink:
            lines.append(f"metalink={repo.metalink}")
        lines += ["enabled=1", f"gpgcheck={int(repo.gpgcheck)}", "skip_if_unavailable=False"]
        if repo.gpgkey:
            lines.append(f"gpgkey={repo.gpgkey}")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def render_config(manager: PackageManager, reposdir: Path, cachedir: Path, logdir: Path) -> str:
    """The package manager's main configuration, so the host's is never read."""
    lines = [
        "[main]",
        f"reposdir={reposdir}",
        f"cachedir={cachedir}",
        f"logdir={logdir}",
        "keepcache=1",  # a rebuild of the same release downloads nothing new
        "gpgcheck=1",
        "installonly_limit=3",
        "clean_requirements_on_remove=True",
        "tsflags=nodocs",
    ]
    if manager is not PackageManager.YUM:
        lines.append("install_weak_deps=False")
    return "\n".join(lines) + "\n"


def network_stack(release: int) -> NetworkStack:
    # systemd-networkd exists from Fedora 21 on; before it, initscripts' network service.
    return NetworkStack.IFCFG if release < 22 else NetworkStack.NETWORKD


def packages_for(release: int, extra: Sequence[str] = ()) -> list[str]:
    """The 2013 set plus what makes each release boot with DHCP networking."""
    packages = list(CORE_PACKAGES)
    packages.append("yum" if release < 22 else "dnf")
    if network_stack(release) is NetworkStack.IFCFG:
        packages += ["initscripts", "dhclient"]
    elif release >= 33:
        packages.append("systemd-networkd")  # split out of systemd in Fedora 33
    if release >= 21:
        packages.append("fedora-repos")
    for name in extra:
        if name not in packages:
            packages.append(name)
    return packages


def install_argv(
    manager: PackageManager,
    manager_path: str,
    *,
    installroot: Path,
    release: int,
    arch: str,
    config: Path,
    reposdir: Path,
    packages: Sequence[str],
    host_arch: str,
) -> list[str]:
    """The argv that installs packages into installroot with lxcforge's configuration."""
    argv = [
        manager_path, "-y",
        f"--installroot={installroot}",
        f"--releasever={release}",
        f"--config={config}",
        f"--setopt=reposdir={reposdir}",
    ]
    if manager is PackageManager.DNF5:
        argv.append("--use-host-config")  # our --config, not one from inside the installroot
    if manager is not PackageManager.YUM:
        argv.append("--setopt=install_weak_deps=False")
        if arch != host_arch:
            argv.append(f"--forcearch={arch}")
    argv += ["install", *packages]
    return argv


def choose_manager(available: dict[str, str | None]) -> tuple[PackageManager, str] | None:
    """Prefer dnf5, then dnf, then yum; available maps name -> path or None."""
    for manager in PackageManager:
        path = available.get(manager.value)
        if path:
            return manager, path
    return None


def rpmdb_path(release: int) -> str:
    # Fedora 36 moved the rpm database to /usr/lib/sysimage/rpm.
    return "/usr/lib/sysimage/rpm" if release >= 36 else "/var/lib/rpm"


class RpmdbPlan(enum.StrEnum):
    KEEP = "keep"  # the guest's rpm reads what the host's wrote
    REREGISTER = "reregister"  # re-register every package with the guest's own rpm
    NO_GUEST_RPM = "no-guest-rpm"


def rpmdb_plan(release: int, host_backend: str, *, guest_has_rpm: bool) -> RpmdbPlan:
    guest_backend = "sqlite" if release >= 33 else "bdb"  # Fedora 33 switched to sqlite
    if host_backend == guest_backend:
        return RpmdbPlan.KEEP
    if not guest_has_rpm:
        return RpmdbPlan.NO_GUEST_RPM
    return RpmdbPlan.REREGISTER


def justdb_script(dbpath: str, rpm_dir: str) -> str:
    """Shell run in the guest (chroot): a fresh database, each package registered, no scripts."""
    return (f"rm -rf {dbpath} && mkdir -p {dbpath} && rpm --initdb && "
            f"rpm -i --justdb --nodeps --noscripts --notriggers --nosignature --nodigest {rpm_dir}/*.rpm")
