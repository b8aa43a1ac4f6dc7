"""`lxcforge base` for real: a Fedora-shaped base from a local RPM repository (no mirror is
reachable here), refusal without --force, removal, a killed build, a hostile repository."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxcforge import store
from lxcforge.errors import LxcforgeError
from lxcforge.rootfs import build
from lxcforge.store import Store
from tests.integration.conftest import TEST_PASSWORD, lxcforge
from tests.support import fedora_repo

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBaseTestKeyOnlyForTests lxcforge-test"


@pytest.fixture
def ssh_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id.pub"
    path.write_text(SSH_KEY + "\n")
    return path


def build_f19(pool: Store, repo: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return lxcforge(pool.root, "base", "--release", "19", "--repo", f"file://{repo}", "--no-gpgcheck", *extra)


@pytest.mark.smoke
def test_fedora_19_base_from_local_repository(
    loop_store: Store, fedora_repo19: Path, password_file: Path, ssh_key_file: Path
) -> None:
    result = build_f19(loop_store, fedora_repo19, "--root-password-file", str(password_file),
                       "--ssh-key", str(ssh_key_file), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["base"]["name"] == "fedora-19" and report["base"]["distro"] == "fedora"
    base = loop_store.base_path("fedora-19")
    assert store.is_subvolume(base) and store.is_read_only(base)
    with pytest.raises(OSError):
        (base / "etc" / "new-file").write_text("x")

    # The fix-ups are in the base.
    assert {"console", "pts/0"} <= set((base / "etc/securetty").read_text().split())
    root_hash = (base / "etc/shadow").read_text().splitlines()[0].split(":")[1]
    assert root_hash.startswith("$6$") and TEST_PASSWORD not in (base / "etc/shadow").read_text()
    salt = root_hash.split("$")[2]
    recomputed = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, TEST_PASSWORD],
                                capture_output=True, text=True, check=True).stdout.strip()
    assert recomputed == root_hash
    keys = base / "root/.ssh/authorized_keys"
    assert keys.read_text() == SSH_KEY + "\n" and oct(keys.stat().st_mode & 0o777) == "0o600"
    assert (base / "etc/machine-id").read_text() == ""
    assert "SELINUX=disabled" in (base / "etc/selinux/config").read_text()
    assert "/dev/sda1" not in (base / "etc/fstab").read_text()
    assert "BOOTPROTO=dhcp" in (base / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()
    assert os.readlink(base / "etc/systemd/system/systemd-udevd.service") == "/dev/null"
    # The package database is where the guest's rpm looks, not Debian's /root/.rpmdb.
    assert (base / "var/lib/rpm").is_dir() and not (base / "root/.rpmdb").exists()
    # Nothing left behind in tmp/.
    assert list(loop_store.tmp.iterdir()) == []

    again = build_f19(loop_store, fedora_repo19)
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    forced = build_f19(loop_store, fedora_repo19, "--force")
    assert forced.returncode == 0, forced.stderr
    assert store.is_read_only(base) and list(loop_store.tmp.iterdir()) == []

    listed = json.loads(lxcforge(loop_store.root, "base", "list", "--json").stdout)
    assert [(b["name"], b["distro"], b["release"], b["containers"]) for b in listed] == [
        ("fedora-19", "fedora", "19", [])]
    info = lxcforge(loop_store.root, "base", "info", "fedora-19")
    assert info.returncode == 0 and "fedora" in info.stdout

    removed = lxcforge(loop_store.root, "base", "rm", "fedora-19")
    assert removed.returncode == 0, removed.stderr
    assert not base.exists()
    missing = lxcforge(loop_store.root, "base", "rm", "fedora-19")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_default_fedora_mirror_unreachable_is_a_clear_error(loop_store: Store) -> None:
    result = lxcforge(loop_store.root, "base", "--release", "43", "--no-gpgcheck")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "could not reach the Fedora mirror" in lines[0]
    assert "mirrors.fedoraproject.org" in lines[0] and "--mirror" in lines[1] and "--repo" in lines[1]
    assert list(loop_store.bases.iterdir()) == [] and list(loop_store.tmp.iterdir()) == []


@pytest.fixture
def stalling_server() -> Iterator[str]:
    """An HTTP server on loopback that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/repo/"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_killed_build_leaves_nothing_after_the_next_command(loop_store: Store, stalling_server: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lxcforge", "--store", str(loop_store.root), "base", "--release", "19",
         "--repo", stalling_server, "--no-gpgcheck"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(loop_store.tmp.glob("base-*")):
            time.sleep(0.05)
        assert list(loop_store.tmp.glob("base-*")), "the build never started"
        time.sleep(1.0)  # dnf is now waiting on the stalled repository
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(loop_store.tmp.iterdir()), "a killed build leaves its temporary subvolume"
    assert not loop_store.base_path("fedora-19").exists()

    listing = lxcforge(loop_store.root, "base", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout) == []
    assert list(loop_store.tmp.iterdir()) == []
    assert [p.name for p in loop_store.locks.iterdir() if p.name.startswith("tmp-")] == []


def test_bad_input_changes_nothing(loop_store: Store, fedora_repo19: Path, tmp_path: Path) -> None:
    cases = [
        (["base", "--release", "nineteen"], "invalid Fedora release"),
        (["base", "--release", "19", "--name", "../escape"], "invalid base name"),
        (["base", "--release", "19", "--distro", "arch"], "unknown distro"),
        (["base", "--release", "19", "--root-password-file", str(tmp_path / "missing")], "cannot read"),
        (["base", "info", "nope"], "does not exist"),
    ]
    for args, message in cases:
        result = lxcforge(loop_store.root, *args)
        assert result.returncode == 1, args
        lines = result.stderr.strip().splitlines()
        assert message in lines[0] and lines[1].startswith("hint:"), (args, result.stderr)
    assert list(loop_store.bases.iterdir()) == [] and list(loop_store.tmp.iterdir()) == []


def test_hostile_package_cannot_write_outside_the_rootfs(loop_store: Store, tmp_path: Path) -> None:
    """A repository whose package ships /etc/securetty as a symlink to a host file: the build
    is refused and the host file is untouched."""
    victim = tmp_path / "host-securetty"
    victim.write_text("host\n")
    repo = _hostile_repo(tmp_path, victim)
    result = lxcforge(loop_store.root, "base", "--release", "19", "--repo", f"file://{repo}", "--no-gpgcheck",
                      "--packages", "hostile")
    assert result.returncode == 1
    assert "symlink" in result.stderr
    assert victim.read_text() == "host\n"
    assert list(loop_store.bases.iterdir()) == [] and list(loop_store.tmp.iterdir()) == []


def _hostile_repo(tmp_path: Path, victim: Path) -> Path:
    from tests.support.fedora_repo import build_repo

    base_repo = build_repo(19)
    work = tmp_path / "hostile"
    out = work / "repo"
    out.mkdir(parents=True)
    spec = work / "hostile.spec"
    spec.write_text(f"""Name: hostile
Version: 1
Release: 1
Summary: ships /etc/securetty as a link out of the rootfs
License: MIT
BuildArch: noarch
%description
test
%install
mkdir -p %{{buildroot}}/etc
ln -s {victim} %{{buildroot}}/etc/securetty.hostile
%files
/etc/securetty.hostile
%posttrans -p <lua>
os.remove("/etc/securetty")
posix.symlink("{victim}", "/etc/securetty")
""")
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work / 'top'}", "--define",
                    f"_rpmdir {out}", str(spec)], check=True, capture_output=True)
    for rpm in base_repo.rglob("*.rpm"):
        (out / rpm.name).symlink_to(rpm)
    subprocess.run(["createrepo_c", "--quiet", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def signing() -> tuple[Path, Path]:
    return fedora_repo.signing_key()


def build_f42(pool: Store, repo: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return lxcforge(pool.root, "base", "--release", "42", "--repo", f"file://{repo}", *extra)


def test_signatures_are_checked_accepted_with_the_right_key_refused_otherwise(
    loop_store: Store, signing: tuple[Path, Path]
) -> None:
    home, public = signing
    signed = fedora_repo.build_repo(42, signed_by=home)
    unsigned = fedora_repo.build_repo(42)
    _other_home, other_public = fedora_repo.signing_key(name="some other key")
    ok = build_f42(loop_store, signed, "--gpg-key", str(public), "--name", "signed")
    assert ok.returncode == 0, ok.stderr
    assert "NOT be signature-checked" not in ok.stderr
    for repo, key, name in ((signed, other_public, "wrong-key"), (unsigned, public, "unsigned")):
        refused = build_f42(loop_store, repo, "--gpg-key", str(key), "--name", name)
        assert refused.returncode == 1, (name, refused.stderr)
        assert "signatures did not verify" in refused.stderr and "hint:" in refused.stderr, refused.stderr
        assert not loop_store.base_path(name).exists()
    assert list(loop_store.tmp.iterdir()) == []


def test_system_users_declared_only_in_sysusers_d_exist_and_own_their_files(
    loop_store: Store, signing: tuple[Path, Path]
) -> None:
    repo = fedora_repo.build_repo(42, signed_by=signing[0], sysusers=True)
    made = build_f42(loop_store, repo, "--gpg-key", str(signing[1]), "--packages", "lxtest-sysusers")
    assert made.returncode == 0, made.stderr
    base = loop_store.base_path("fedora-42")
    users = {line.split(":")[0]: line.split(":") for line in (base / "etc/passwd").read_text().splitlines()}
    assert fedora_repo.SYSUSER in users, "the sysusers.d user was not created"
    owner = (base / fedora_repo.SYSUSER_FILE).stat()
    assert owner.st_uid == int(users[fedora_repo.SYSUSER][2]) != 0, "its file is still owned by root"


def test_sysusers_step_on_a_tree(tmp_path: Path) -> None:
    """What the base build adds: without it, rpm 4.18 leaves a sysusers.d-only user missing."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "usr/lib/sysusers.d").mkdir(parents=True)
    (root / "usr/lib/sysusers.d/lxtest.conf").write_text(fedora_repo.SYSUSERS_CONF)
    assert "lxtest" not in (root / "etc/passwd").read_text()  # the broken state
    (tmp_path / "work" / "config").mkdir(parents=True)
    build.create_system_users(root, tmp_path / "work", rpm_based=False)
    assert "lxtest:" in (root / "etc/passwd").read_text()  # 'u!' understood by the host's older systemd too
    assert "lxtest:" in (root / "etc/group").read_text()


@pytest.fixture
def mirror_on_loopback(tmp_path: Path, signing: tuple[Path, Path]) -> Iterator[str]:
    """A Fedora-shaped release 19 laid out as a mirror (releases/ and updates/), served over
    HTTP on loopback."""
    import functools
    import http.server
    import shutil as sh

    root = tmp_path / "mirror"
    sh.copytree(fedora_repo.build_repo(19, signed_by=signing[0]), root / "releases/19/Everything/x86_64/os")
    updates = root / "updates/19/x86_64"
    updates.mkdir(parents=True)
    subprocess.run(["createrepo_c", "--quiet", str(updates)], check=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_base_keeps_the_mirror_and_key_it_was_built_from(
    loop_store: Store, mirror_on_loopback: str, signing: tuple[Path, Path]
) -> None:
    made = lxcforge(loop_store.root, "base", "--release", "19", "--mirror", mirror_on_loopback,
                    "--gpg-key", str(signing[1]))
    assert made.returncode == 0, made.stderr
    base = loop_store.base_path("fedora-19")
    fedora_repo_file = (base / "etc/yum.repos.d/fedora.repo").read_text()
    assert f"baseurl={mirror_on_loopback}releases/19/Everything/x86_64/os/" in fedora_repo_file
    assert "metalink" not in fedora_repo_file and "gpgcheck=1" in fedora_repo_file
    updates = (base / "etc/yum.repos.d/fedora-updates.repo").read_text()
    assert f"baseurl={mirror_on_loopback}updates/19/x86_64/" in updates
    assert (base / "etc/pki/rpm-gpg/RPM-GPG-KEY-lxcforge-fedora").read_text() == signing[1].read_text()
    # A base from local directories keeps the distribution's own files: the guest cannot see them.
    local = lxcforge(loop_store.root, "base", "--release", "19", "--name", "local", "--repo",
                     f"file://{fedora_repo.build_repo(19, signed_by=signing[0])}", "--gpg-key", str(signing[1]))
    assert local.returncode == 0, local.stderr
    assert not (loop_store.base_path("local") / "etc/yum.repos.d/fedora.repo").exists()


def test_rpmdb_rebuild_refuses_before_removing_anything_when_a_package_is_not_cached(
    loop_store: Store, fedora_repo19: Path, tmp_path: Path
) -> None:
    """Fedora < 33 reads only a Berkeley DB: the host's database is re-registered with the
    guest's rpm from the package cache. With a package missing from it, nothing is removed."""
    assert build_f19(loop_store, fedora_repo19).returncode == 0
    root = loop_store.tmp / "rpmdb-check"
    store.snapshot(loop_store.base_path("fedora-19"), root)
    try:
        (root / "usr/bin/rpm").write_text("#!/bin/sh\nexit 0\n")  # the guest's own rpm, for the plan
        (root / "usr/bin/rpm").chmod(0o755)
        dbpath = root / "var/lib/rpm"
        before = sorted(p.name for p in dbpath.iterdir())
        assert before
        work = tmp_path / "work"
        (work / "config").mkdir(parents=True)
        (work / "config/.rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        empty_cache = tmp_path / "cache"
        empty_cache.mkdir()
        host_backend = subprocess.run(["rpm", "--eval", "%{?_db_backend}"], capture_output=True, text=True).stdout
        assert host_backend.strip() == "sqlite"  # Debian 12's and current Fedora's rpm
        with pytest.raises(LxcforgeError) as refused:
            build._rebuild_rpmdb(19, root, empty_cache, work, lambda _line: None)
        assert "not in the package cache" in refused.value.message and refused.value.hint
        assert sorted(p.name for p in dbpath.iterdir()) == before
    finally:
        store.delete_tree(root)


def test_reading_changes_nothing_on_a_fresh_host(tmp_path: Path) -> None:
    fresh = tmp_path / "never-attached"
    listed = lxcforge(fresh, "base", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    info = lxcforge(fresh, "base", "info", "anything")
    assert info.returncode == 1 and "not ready" in info.stderr and "hint:" in info.stderr
    assert not fresh.exists() and not (tmp_path / "never-attached.img").exists()
    version = lxcforge(None, "--version")
    assert version.returncode == 0 and version.stdout.startswith("lxcforge ")
