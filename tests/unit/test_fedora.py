from pathlib import Path

import pytest

from lxcforge.rootfs import debian, fedora
from lxcforge.rootfs.fedora import PackageManager, Repo
from tests.golden import assert_golden

ROOT = Path("/var/lib/lxcforge/tmp/base-1-abc")
CONF = Path("/var/lib/lxcforge/tmp/base-1-abc.work/config/dnf.conf")
REPOS = Path("/var/lib/lxcforge/tmp/base-1-abc.work/config/repos")


def argv(manager: PackageManager, release: int, arch: str = "x86_64") -> list[str]:
    return fedora.install_argv(manager, f"/usr/bin/{manager.value}", installroot=ROOT, release=release,
                               arch=arch, config=CONF, reposdir=REPOS,
                               packages=fedora.packages_for(release), host_arch="x86_64")


def test_every_release_is_the_metalink_and_the_archive_with_no_list_of_retired_releases() -> None:
    for release in (19, 43, 60):
        repos = fedora.standard_repos(release, "x86_64")
        assert [r.id for r in repos] == ["fedora", "updates"]
        assert repos[0].metalink == f"https://mirrors.fedoraproject.org/metalink?repo=fedora-{release}&arch=x86_64"
        assert repos[1].metalink == (
            f"https://mirrors.fedoraproject.org/metalink?repo=updates-released-f{release}&arch=x86_64")
        assert repos[0].baseurl == fedora.ARCHIVE + f"/releases/{release}/Everything/x86_64/os/"
    assert fedora.standard_repos(19, "x86_64")[1].baseurl == fedora.ARCHIVE + "/updates/19/x86_64/"
    assert fedora.standard_repos(30, "x86_64")[1].baseurl == fedora.ARCHIVE + "/updates/30/Everything/x86_64/"


def test_the_guest_keeps_the_repositories_its_packages_came_from() -> None:
    mirror = fedora.with_gpg(fedora.standard_repos(19, "x86_64", mirror="http://mirror.example/fedora/linux"),
                             Path("/k"), gpgcheck=True)
    files = fedora.guest_repo_files(mirror + [Repo("extra", "extra", baseurl="http://e/")])
    assert files is not None
    assert_golden("guest-fedora-19-mirror.repo", "".join(f"# {path}\n{text}" for path, text in files.items()))
    assert f"gpgkey=file://{fedora.GUEST_KEY}" in files["/etc/yum.repos.d/fedora.repo"]
    local = fedora.apply_repo_options(fedora.standard_repos(19, "x86_64"), ["file:///srv/f19"])
    assert fedora.guest_repo_files(local) is None  # the guest cannot see the host's directory


def test_mirror_points_the_standard_layout_elsewhere() -> None:
    repos = fedora.standard_repos(43, "aarch64", mirror="http://mirror.example/fedora/linux/")
    assert [r.baseurl for r in repos] == [
        "http://mirror.example/fedora/linux/releases/43/Everything/aarch64/os/",
        "http://mirror.example/fedora/linux/updates/43/Everything/aarch64/",
    ]


def test_repo_urls_replace_or_add() -> None:
    standard = fedora.standard_repos(19, "x86_64")
    only_local = fedora.apply_repo_options(standard, ["file:///srv/f19", "http://x/y"])
    assert [(r.id, r.baseurl) for r in only_local] == [("lxcforge-repo0", "file:///srv/f19"),
                                                      ("lxcforge-repo1", "http://x/y")]
    replaced = fedora.apply_repo_options(standard, ["updates=file:///srv/updates", "extra=http://e/"])
    assert [(r.id, r.baseurl) for r in replaced] == [
        ("fedora", standard[0].baseurl), ("updates", "file:///srv/updates"), ("extra", "http://e/")]


def test_repo_file_golden() -> None:
    repos = fedora.with_gpg(fedora.standard_repos(19, "x86_64"), Path("/etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-19"),
                            gpgcheck=True)
    repos += fedora.with_gpg([Repo("local", "local", baseurl="file:///srv/r")], None, gpgcheck=False)
    assert_golden("fedora-19.repo", fedora.render_repo_file(repos))


@pytest.mark.parametrize("manager", list(PackageManager))
def test_config_golden(manager: PackageManager) -> None:
    assert_golden(f"{manager.value}.conf", fedora.render_config(manager, REPOS, Path("/var/cache/lxcforge-pkgs"),
                                                               Path("/var/log")))


def test_dnf5_settings_that_dnf5_needs() -> None:
    conf = fedora.render_config(PackageManager.DNF5, REPOS, Path("/var/cache/lxcforge-pkgs"), Path("/var/log"))
    # As root, dnf5 takes system_cachedir over cachedir: both must name the store's cache.
    assert "cachedir=/var/cache/lxcforge-pkgs" in conf and "system_cachedir=/var/cache/lxcforge-pkgs" in conf
    assert "optional_metadata_types=filelists" in conf
    args = argv(PackageManager.DNF5, 43)
    assert "--use-host-config" not in args and f"--setopt=logdir={CONF.parent}" in args


def test_config_never_points_at_host_repos() -> None:
    conf = fedora.render_config(PackageManager.DNF, REPOS, Path("/var/cache/x"), Path("/var/log"))
    assert f"reposdir={REPOS}" in conf and "keepcache=1" in conf and "install_weak_deps=False" in conf
    assert "install_weak_deps" not in fedora.render_config(PackageManager.YUM, REPOS, Path("/c"), Path("/l"))


@pytest.mark.parametrize("manager", list(PackageManager))
@pytest.mark.parametrize("release", [19, 43])
def test_install_argv_golden(manager: PackageManager, release: int) -> None:
    notes = fedora.DNF5_NOTES if manager is PackageManager.DNF5 else {}
    assert_golden(f"install-{manager.value}-{release}.argv", fedora.annotated(argv(manager, release), notes))


def test_install_argv_essentials() -> None:
    for manager in PackageManager:
        args = argv(manager, 19)
        assert f"--installroot={ROOT}" in args and "--releasever=19" in args
        assert f"--config={CONF}" in args and f"--setopt=reposdir={REPOS}" in args
    assert "--forcearch=aarch64" in argv(PackageManager.DNF, 43, arch="aarch64")


def test_package_sets_per_release() -> None:
    f19 = fedora.packages_for(19)
    assert {"systemd", "passwd", "yum", "fedora-release", "vim-minimal", "openssh-server", "procps-ng",
            "iproute", "dhclient", "initscripts", "rootfiles"} <= set(f19)
    assert "fedora-repos" not in f19 and "dnf" not in f19
    f21 = fedora.packages_for(21)
    assert "fedora-repos" in f21 and "initscripts" in f21
    f43 = fedora.packages_for(43, extra=["htop", "systemd"])
    assert {"dnf", "systemd-networkd", "fedora-repos"} <= set(f43)
    assert "initscripts" not in f43 and f43.count("systemd") == 1 and f43[-1] == "htop"


def test_manager_preference() -> None:
    assert fedora.choose_manager({"dnf5": None, "dnf": "/usr/bin/dnf", "yum": "/usr/bin/yum"}) == (
        PackageManager.DNF, "/usr/bin/dnf")
    assert fedora.choose_manager({"dnf5": "/x/dnf5", "dnf": "/usr/bin/dnf"})[0] is PackageManager.DNF5  # type: ignore[index]
    assert fedora.choose_manager({}) is None


def test_rpmdb_plan() -> None:
    assert fedora.rpmdb_plan(19, "sqlite", guest_has_rpm=True) is fedora.RpmdbPlan.REREGISTER
    assert fedora.rpmdb_plan(19, "sqlite", guest_has_rpm=False) is fedora.RpmdbPlan.NO_GUEST_RPM
    assert fedora.rpmdb_plan(19, "bdb", guest_has_rpm=True) is fedora.RpmdbPlan.KEEP
    assert fedora.rpmdb_plan(43, "sqlite", guest_has_rpm=True) is fedora.RpmdbPlan.KEEP
    assert fedora.rpmdb_path(19) == "/var/lib/rpm" and fedora.rpmdb_path(43) == "/usr/lib/sysimage/rpm"


def test_gpg_key_lookup(tmp_path: Path) -> None:
    (tmp_path / "RPM-GPG-KEY-fedora-19-x86_64").write_text("key")
    assert fedora.find_gpg_key(19, "x86_64", [tmp_path]) == tmp_path / "RPM-GPG-KEY-fedora-19-x86_64"
    assert fedora.find_gpg_key(20, "x86_64", [tmp_path]) is None


def test_debootstrap_argv() -> None:
    args = debian.debootstrap_argv("debian", "bookworm", Path("/r"), arch="x86_64", mirror=None,
                                   cache_dir=Path("/c"), extra_packages=("vim",))
    assert args[:2] == ["debootstrap", "--variant=minbase"]
    assert "--arch=amd64" in args and "--cache-dir=/c" in args
    assert args[-3:] == ["bookworm", "/r", "http://deb.debian.org/debian"]
    assert "systemd-sysv" in args[2] and args[2].endswith(",vim")
    ubuntu = debian.debootstrap_argv("ubuntu", "noble", Path("/r"), arch="x86_64", mirror="http://m/ubuntu",
                                     cache_dir=Path("/c"), gpgcheck=False)
    assert "--components=main,universe" in ubuntu and "--no-check-gpg" in ubuntu and ubuntu[-1] == "http://m/ubuntu"


def test_shipped_keys_are_fedoras_published_ones() -> None:
    for release in range(19, 45):
        key = fedora.SHIPPED_KEYS / f"RPM-GPG-KEY-fedora-{release}-primary"
        assert fedora.key_fingerprint(key.read_text()) == fedora.FEDORA_KEY_FINGERPRINTS[release], release
    # The fingerprint Fedora publishes for 43 (fedoraproject.org/security), computed, not copied.
    assert fedora.FEDORA_KEY_FINGERPRINTS[43] == "C6E7F081CF80E13146676E88829B606631645531"


def test_a_host_without_keys_uses_the_shipped_one_and_a_tampered_one_is_refused(tmp_path: Path) -> None:
    assert fedora.find_gpg_key(19, "x86_64", [tmp_path / "none", fedora.SHIPPED_KEYS]) == (
        fedora.SHIPPED_KEYS / "RPM-GPG-KEY-fedora-19-primary")
    assert fedora.find_gpg_key(12, "x86_64", [fedora.SHIPPED_KEYS]) is None
    other = (fedora.SHIPPED_KEYS / "RPM-GPG-KEY-fedora-20-primary").read_text()
    assert fedora.key_fingerprint(other) != fedora.FEDORA_KEY_FINGERPRINTS[19]
