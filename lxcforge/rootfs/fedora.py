"""Fedora: repository definitions, package sets per release, and the dnf5/dnf/yum argv. Pure.

lxcforge writes its own dnf configuration and repository file and points the package manager
at them, so the host's /etc/yum.repos.d and /etc/dnf/dnf.conf are never read."""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxcforge.rootfs.fixups import NetworkStack

METALINK = "https://mirrors.fedoraproject.org/metalink?repo={repo}&arch={arch}"
ARCHIVE = "https://archives.fedoraproject.org/pub/archive/fedora/linux"
# Fedora's release keys, shipped with lxcforge for hosts that have none (Debian has no
# distribution-gpg-keys package): the primary keys of releases 19-44 as Fedora publishes
# them (distribution-gpg-keys, keys/fedora/). Each file is checked against its pinned
# fingerprint before use; a test checks them all.
SHIPPED_KEYS = Path(__file__).parent / "keys"
FEDORA_KEY_FINGERPRINTS = {
    19: "CA81B2C85E4F4D4A1A3F723407477E65FB4B18E6",
    20: "C7C9A9C89153F20183CE7CBA2EB161FA246110C1",
    21: "6596B8FBABDA5227A9C5B59E89AD4E8795A43F54",
    22: "C527EA07A9349B589C35E1BF11ADC0948E1431D5",
    23: "EF45510680FB02326B045AFB32474CF834EC9CBA",
    24: "5048BDBBA5E776E547B09CCC73BDE98381B46521",
    25: "C437DCCD558A66A37D6F43724089D8F2FDB19C98",
    26: "E641850B77DF435378D1D7E2812A6B4B64DAB85D",
    27: "860E19B0AFA800A1751881A6F55E7430F5282EE4",
    28: "128CF232A9371991C8A65695E08E7E629DB62FB1",
    29: "5A03B4DD8254ECA02FDA1637A20AA56B429476B4",
    30: "F1D8EC98F241AAF20DF69420EF3C111FCFC659B9",
    31: "7D22D5867F2A4236474BF7B850CB390B3C3359C4",
    32: "97A1AE57C3A2372CCA3A4ABA6C13026D12C944D0",
    33: "963A2BEB02009608FE67EA4249FD77499570FF31",
    34: "8C5BA6990BDB26E19F2A1A801161AE6945719A39",
    35: "787EA6AE1147EEE56C40B30CDB4639719867C58F",
    36: "53DED2CB922D8B8D9E63FD18999F7CBF38AB71F4",
    37: "ACB5EE4E831C74BB7C168D27F55AD3FB5323552A",
    38: "6A51BBABBA3D5467B6171221809A8D7CEB10B464",
    39: "E8F23996F23218640CB44CBE75CF5AC418B8E74C",
    40: "115DF9AEF857853EE8445D0A0727707EA15B79CC",
    41: "466CF2D8B60BC3057AA9453ED0622462E99D6AD1",
    42: "B0F4950458F69E1150C6C5EDC8AC4916105EF944",
    43: "C6E7F081CF80E13146676E88829B606631645531",
    44: "36F612DCF27F7D1A48A835E4DBFCF71C6D9F90A6",
}
GPG_KEY_DIRS = (Path("/etc/pki/rpm-gpg"), Path("/usr/share/distribution-gpg-keys/fedora"), SHIPPED_KEYS)

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
    """fedora + updates. Without --mirror, each is both Fedora's metalink and the archive's
    tree, mirrors of one repository: a release that is still current is served by the
    metalink's mirrors, an end-of-life one by the archive (where Fedora moves a release
    shortly before its end of life, and where the metalink then points too). So nothing
    here has to know which releases are retired. With --mirror, that mirror's tree."""
    if mirror:
        root = mirror.rstrip("/")
        return [
            Repo("fedora", f"Fedora {release} - {arch}", baseurl=f"{root}/releases/{release}/Everything/{arch}/os/"),
            Repo("updates", f"Fedora {release} - {arch} - Updates", baseurl=f"{root}/{updates_path(release, arch)}"),
        ]
    return [
        Repo("fedora", f"Fedora {release} - {arch}",
             baseurl=f"{ARCHIVE}/releases/{release}/Everything/{arch}/os/",
             metalink=METALINK.format(repo=f"fedora-{release}", arch=arch)),
        Repo("updates", f"Fedora {release} - {arch} - Updates", baseurl=f"{ARCHIVE}/{updates_path(release, arch)}",
             metalink=METALINK.format(repo=f"updates-released-f{release}", arch=arch)),
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
    """The release's signing key: the host's if it has one, else the one lxcforge ships."""
    for directory in dirs:
        for name in (f"RPM-GPG-KEY-fedora-{release}-{arch}", f"RPM-GPG-KEY-fedora-{release}-primary",
                     f"RPM-GPG-KEY-fedora-{release}"):
            path = directory / name
            if path.is_file():
                if directory == SHIPPED_KEYS and key_fingerprint(path.read_text()) != FEDORA_KEY_FINGERPRINTS.get(
                        release):
                    raise ValueError(f"{path} does not match Fedora {release}'s published fingerprint")
                return path
    return None


def key_fingerprint(armored: str) -> str:
    """The OpenPGP v4 fingerprint of an ASCII-armored public key: SHA-1 over 0x99, the
    two-byte length and the body of its first (public key) packet (RFC 4880, 12.2)."""
    lines = armored.strip().splitlines()
    start = lines.index("-----BEGIN PGP PUBLIC KEY BLOCK-----") + 1
    end = lines.index("-----END PGP PUBLIC KEY BLOCK-----")
    body_lines = lines[start:end]
    blank = body_lines.index("") if "" in body_lines else -1  # armor headers end at a blank line
    data = base64.b64decode("".join(line for line in body_lines[blank + 1:] if not line.startswith("=")))
    first = data[0]
    if first & 0x40:  # new packet format
        length, offset = data[1], 2
        if 192 <= length < 224:
            length, offset = ((length - 192) << 8) + data[2] + 192, 3
        elif length == 255:
            length, offset = int.from_bytes(data[2:6], "big"), 6
    else:  # old format: the low two bits give the length's size
        size = 1 << (first & 0x03)
        length, offset = int.from_bytes(data[1:1 + size], "big"), 1 + size
    packet = data[offset:offset + length]
    if packet[0] != 4:
        raise ValueError("not a version 4 key")
    return hashlib.sha1(b"\x99" + len(packet).to_bytes(2, "big") + packet).hexdigest().upper()


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


# Where a base's own package manager looks for the key lxcforge checked its packages with.
GUEST_KEY = "/etc/pki/rpm-gpg/RPM-GPG-KEY-lxcforge-fedora"


def guest_repo_files(repos: list[Repo]) -> dict[str, str] | None:
    """The repository files a base keeps, so its own dnf/yum uses what lxcforge used (the same
    mirror, the archive for an end-of-life release): the stock fedora and updates files are
    replaced by lxcforge's definitions of those ids, any other repository goes to
    lxcforge.repo. None where a repository is a local path (file://) the guest cannot see:
    then the distribution's own files stay."""
    if any((r.baseurl or "").startswith("file:") for r in repos):
        return None
    guest = [Repo(r.id, r.name, r.baseurl, r.metalink, gpgcheck=r.gpgcheck,
                  gpgkey=f"file://{GUEST_KEY}" if r.gpgkey else None) for r in repos]
    files = {"/etc/yum.repos.d/fedora.repo": [r for r in guest if r.id == "fedora"],
             "/etc/yum.repos.d/fedora-updates.repo": [r for r in guest if r.id == "updates"],
             "/etc/yum.repos.d/lxcforge.repo": [r for r in guest if r.id not in ("fedora", "updates")]}
    return {path: render_repo_file(chosen) for path, chosen in files.items() if chosen}


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
    if manager is PackageManager.DNF5:
        # Said in the file itself, for whoever reads a build's configuration. Without the
        # first, packages would stay in the base and every rebuild would download them again.
        lines += [
            "# dnf5 as root replaces cachedir with system_cachedir (libdnf5 conf/config_main.cpp,",
            "# dnf5-caching(7)): both name the store's cache",
            f"system_cachedir={cachedir}",
            "# dnf5 loads filelists only when asked (dnf5.conf(5) optional_metadata_types):",
            "# older releases have file dependencies",
            "optional_metadata_types=filelists",
        ]
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
        # dnf5 reads --config from the host path as given (dnf5-installroot(7)); no
        # --use-host-config, which would also read the host's drop-ins, vars and overrides.
        # Paths set on the command line are not prefixed with the installroot: its log stays
        # beside our configuration instead of in the base.
        argv.append(f"--setopt=logdir={config.parent}")
    if manager is not PackageManager.YUM:
        argv.append("--setopt=install_weak_deps=False")
        if arch != host_arch:
            argv.append(f"--forcearch={arch}")
    argv += ["install", *packages]
    return argv


# Why each dnf5-specific argument is there, by its prefix (shown beside the argv in tests).
DNF5_NOTES = {
    "--config=": "dnf5-installroot(7): --config is read from the host path given, so no --use-host-config",
    "--setopt=logdir=": "dnf5-installroot(7): paths set on the command line are not prefixed with the installroot",
}


def annotated(argv: Sequence[str], notes: dict[str, str]) -> str:
    """argv one per line, with the note of each argument that has one."""
    lines = []
    for arg in argv:
        note = next((text for prefix, text in notes.items() if arg.startswith(prefix)), None)
        lines.append(f"{arg}  # {note}" if note else arg)
    return "\n".join(lines) + "\n"


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
