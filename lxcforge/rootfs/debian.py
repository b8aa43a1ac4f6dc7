"""Debian and Ubuntu: the debootstrap argv. Pure."""

from __future__ import annotations

from pathlib import Path

MIRRORS = {
    "debian": "http://deb.debian.org/debian",
    "ubuntu": "http://archive.ubuntu.com/ubuntu",
}
# systemd as init, networkd for DHCP, login/PAM for the console, dbus for systemctl/logind.
INCLUDE = ("systemd", "systemd-sysv", "iproute2", "dbus", "login", "passwd", "libpam-modules")
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "amd64": "amd64", "arm64": "arm64"}


def debootstrap_argv(
    distro: str,
    release: str,
    root: Path,
    *,
    arch: str,
    mirror: str | None,
    cache_dir: Path,
    extra_packages: tuple[str, ...] = (),
    gpgcheck: bool = True,
) -> list[str]:
    include = list(INCLUDE) + [p for p in extra_packages if p not in INCLUDE]
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(include)}",
        f"--arch={DEB_ARCH.get(arch, arch)}",
        f"--cache-dir={cache_dir}",
    ]
    if distro == "ubuntu":
        argv.append("--components=main,universe")
    if not gpgcheck:
        argv.append("--no-check-gpg")
    argv += [release, str(root), mirror or MIRRORS[distro]]
    return argv
